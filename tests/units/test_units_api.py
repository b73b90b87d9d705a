"""Units through the control plane's API and the CLI, on a real control plane: a PoP or state that does not
exist is refused (never answered with no units), a bad --acceptance file is said naming it, and a unit's
Redfish service's refusal is quoted by its message."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.fleet import load_default_fleet
from edgeplane.telemetry import RedfishEmulator
from tests.conftest import serving


@pytest.fixture
async def control_url() -> AsyncIterator[str]:
    state = FleetState(load_default_fleet(), SQLiteStore(":memory:"))
    async with serving(ControlPlane(state, probe_interval_seconds=None)) as url:
        yield url


async def edgeplane(control_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a real process against the control plane, its stdout and stderr apart."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "edgeplane", "--control", control_url, *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


async def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body) as response:
        return response.status, await response.json()


async def test_units_are_listed_by_pop_and_state_and_unknown_ones_are_refused(control_url: str) -> None:
    status, answer = await call("GET", f"{control_url}/api/units?pop=lon1")
    assert status == 200 and {u["code"] for u in answer["units"]} == {"lon1-u1", "lon1-u2"}
    status, answer = await call("GET", f"{control_url}/api/units?state=maintenance")
    assert (status, answer) == (200, {"units": []})  # a state that exists, with no unit in it
    status, answer = await call("GET", f"{control_url}/api/units?pop=xxx")
    assert (status, answer["error"]["code"]) == (404, "not_found") and "'xxx'" in answer["error"]["message"]
    status, answer = await call("GET", f"{control_url}/api/units?state=bogus")
    assert (status, answer["error"]["param"]) == (400, "state") and "'bogus'" in answer["error"]["message"]

    listed = await edgeplane(control_url, "unit", "list", "--pop", "lon1", "--state", "in-service", "--json")
    assert [u["code"] for u in json.loads(listed.stdout)["units"]] == ["lon1-u1", "lon1-u2"]
    for args, said in ((["--pop", "xxx"], "unknown PoP 'xxx'"), (["--state", "bogus"], "unknown unit state 'bogus'")):
        done = await edgeplane(control_url, "unit", "list", *args, "--json")
        assert (done.returncode, done.stdout) == (1, ""), (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and said.lower() in done.stderr.lower(), (args, done.stderr)


async def test_an_unknown_state_is_a_bad_value_and_a_refused_move_a_conflict(control_url: str) -> None:
    status, answer = await call("POST", f"{control_url}/api/units/lon1-u1/state", {"state": "bogus"})
    assert (status, answer["error"]["param"], answer["error"]["type"]) == (400, "state", "invalid_request_error")
    status, answer = await call("POST", f"{control_url}/api/units/lon1-u1/state", {"state": "shipping"})
    assert (status, answer["error"]["code"]) == (409, "lifecycle_refused")


async def test_an_acceptance_file_that_cannot_be_read_is_said_naming_it(control_url: str, tmp_path: Any) -> None:
    ordered = json.loads((await edgeplane(control_url, "unit", "order", "lon1", "--json")).stdout)
    binary = tmp_path / "acceptance.json"
    binary.write_bytes(b"\xff\xfe")
    for path in (tmp_path / "absent.json", binary):
        done = await edgeplane(
            control_url, "unit", "set-state", ordered["code"], "shipping", "--acceptance", f"@{path}"
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "Invalid value for --acceptance" in done.stderr and str(path) in done.stderr, done.stderr


async def test_a_redfish_services_refusal_is_quoted_by_its_message(control_url: str) -> None:
    emulator = RedfishEmulator("lon1-u1")
    runner = web.AppRunner(emulator.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    redfish = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        report = {"backend": "emulator", "models": {}, "units": {"lon1-u1": {"redfish": redfish}}}
        assert (await call("POST", f"{control_url}/api/agents/lon1/report", report))[0] == 200
        done = await edgeplane(control_url, "unit", "fault", "lon1-u1", "bogus")
        _, answer = await call("POST", f"{redfish}/redfish/v1/Oem/Edgeplane/Fault", {"kind": "bogus"})
        said = f"error: unit lon1-u1's Redfish service answered 400: {answer['error']['message']}\n"
        assert (done.returncode, done.stderr) == (1, said)
    finally:
        await runner.cleanup()
