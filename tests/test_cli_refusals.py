"""Refusals that are no usage errors are said the project's one way, on a real control plane: `error: ...` on
stderr and exit 1 (not click's `Error:`, not a usage block and exit 2)."""

from __future__ import annotations

import asyncio

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.fleet import load_default_fleet
from tests.conftest import free_port, serving
from tests.test_cli import edgeplane


async def test_growth_against_a_fleet_that_served_nothing_is_refused_one_way() -> None:
    state = FleetState(load_default_fleet(), SQLiteStore(":memory:"))
    async with serving(ControlPlane(state, probe_interval_seconds=None)) as url:
        done = await asyncio.to_thread(edgeplane, "--control", url, "plan", "growth", "--factor", "2",
                                       "--horizon-months", "3")  # fmt: skip
    said = f"error: the control plane at {url} has seen no requests in the last 600 s\n"
    assert (done.returncode, done.stdout, done.stderr) == (1, "", said)


def test_an_unknown_pop_is_no_usage_error() -> None:
    done = edgeplane("--control", f"http://127.0.0.1:{free_port()}", "bgp", "intents", "--pop", "xxx")
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    assert done.stderr.startswith("error: unknown PoP 'xxx'; expected one of: ams1, ") and "Usage" not in done.stderr
