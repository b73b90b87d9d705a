"""`plan placement --apply` on a running fleet: sites load newly placed models (taking the emulator's load
time) and unload removed ones, and the gateway routes to a model only where it is loaded."""

from __future__ import annotations

import ipaddress
import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeplane.fleet import load_default_fleet
from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, RunningFleet, start_fleet, stop_fleet

DEMAND = Path(__file__).resolve().parent.parent / "data" / "demand.csv"
BIG = "llama-3.1-405b-instruct"  # 410 GB at 2 GB/s: about 10 s to load at --time-scale 0.05


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    tmp = tmp_path_factory.mktemp("apply-fleet")
    running = start_fleet(
        [sys.executable, "-m", "edgeplane", "up", "--time-scale", "0.05"], tmp, fleet_path=None, backend="emulator"
    )
    yield running
    stop_fleet(running)


def route_sites(fleet: RunningFleet, model: str, client: str) -> list[str]:
    answer = fleet.cli("route", "--client", client, "--model", model, "--json")
    return [c["pop"] for c in json.loads(answer.stdout)["candidates"]]


def test_applying_a_placement_loads_and_unloads_and_routing_follows(fleet: RunningFleet) -> None:
    from openai import OpenAI

    before = get(fleet.control_url + "/api/placement")
    applied = fleet.cli("plan", "placement", "--demand", str(DEMAND), "--apply", "--json")
    change = json.loads(applied.stdout)["applied"]
    added = [e.split("@")[1] for e in change["added"] if e.startswith(BIG + "@")]
    removed = [e.split("@")[1] for e in change["removed"] if e.startswith(BIG + "@")]
    assert added and removed, change  # the demand file moves the big model
    new, old = added[0], removed[0]
    assert BIG in before["loaded"][old] and BIG not in before["loaded"][new]
    default = load_default_fleet()
    prefix = ipaddress.ip_network(default.metro_by_code[default.pop_by_code[new].metro].client_prefixes[0])
    client = str(prefix.network_address + 10)  # a client in the metro that gains the model

    # While lon1 loads the big model, it is not offered for it; iad1 is no longer offered at all.
    seen_loading = False

    def moved() -> bool:
        nonlocal seen_loading
        sites = route_sites(fleet, BIG, client)
        state = get(fleet.control_url + "/api/placement")  # after the route: still not loaded means not then
        if BIG not in state["loaded"][new]:
            assert new not in sites
            seen_loading = seen_loading or state["loading"].get(new) == BIG
        elif BIG not in state["loaded"][old]:
            assert old not in route_sites(fleet, BIG, client)
            return True
        return False

    wait_for(f"{BIG} loaded at {new} and unloaded at {old}", moved, timeout_seconds=90, every=0.2)
    assert seen_loading, "the load took the emulator's load time, reported as loading"
    assert route_sites(fleet, BIG, client)[0] == new

    sdk = OpenAI(base_url=fleet.gateway_url + "/v1", api_key="unused", max_retries=0)
    OPEN_CLIENTS.append(sdk)
    answer = sdk.chat.completions.with_raw_response.create(
        model=BIG, messages=[{"role": "user", "content": "hello"}], max_tokens=4,
        extra_headers={"X-Forwarded-For": client},
    )  # fmt: skip
    assert answer.headers["x-edgeplane-site"] == new
    after = get(fleet.control_url + "/api/placement")
    for entry in change["removed"]:
        model, pop = entry.split("@")
        assert model not in after["loaded"][pop]  # unloaded where it was removed
