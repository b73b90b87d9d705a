"""Units on a running fleet: listed from the fleet file, moved along their lifecycle with the CLI, audited,
and a PoP with no unit in service carries no traffic (the official openai SDK shows where it went)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

import pytest
from openai import OpenAI

from edgeplane.fleet import load_default_fleet
from edgeplane.local import get_json
from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, RunningFleet

pytestmark = pytest.mark.slow
MODEL = "llama-3.1-8b-instruct"


def served_at(fleet: RunningFleet, metro: str) -> str:
    return answered_by(fleet, metro)[0]


def answered_by(fleet: RunningFleet, metro: str) -> tuple[str, str]:
    """The PoP and the unit that answered a request from the metro's clients."""
    layout = load_default_fleet()
    prefix = next(ipaddress.ip_network(p) for p in layout.metro_by_code[metro].client_prefixes)
    api = OpenAI(base_url=fleet.gateway_url + "/v1", api_key="loopback", max_retries=0, timeout=30,
                 default_headers={"X-Forwarded-For": str(prefix.network_address + 9)})  # fmt: skip
    OPEN_CLIENTS.append(api)
    with api:
        raw = api.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
        return raw.headers["x-edgeplane-site"], raw.headers.get("x-edgeplane-unit", "")


def eventually_served_at(fleet: RunningFleet, metro: str, want: bool, pop: str) -> str:
    """Where the metro's request went, once the gateway's snapshot has caught up (served at ``pop`` or not, as
    ``want`` says)."""
    sites: list[str] = []

    def caught_up() -> bool:
        sites.append(served_at(fleet, metro))
        return (sites[-1] == pop) == want

    wait_for(f"{metro} {'' if want else 'not '}served at {pop}", caught_up, every=0.2)
    return sites[-1]


def said(result: subprocess.CompletedProcess[str]) -> str:
    """What a command printed, lines unwrapped (the terminal wraps long errors)."""
    return " ".join((result.stdout + result.stderr).split())


def set_state(fleet: RunningFleet, code: str, state: str, *extra: str) -> dict[str, object]:
    result = fleet.cli("unit", "set-state", code, state, *extra, "--json")
    return dict(json.loads(result.stdout))


def test_a_pop_with_no_unit_in_service_carries_no_traffic_until_one_returns(emulator_fleet: RunningFleet) -> None:
    fleet = emulator_fleet
    units = json.loads(fleet.cli("unit", "list", "--json").stdout)["units"]
    assert {u["code"] for u in units} >= {"lon1-u1", "lon1-u2", "nyc1-u1"}
    assert all(u["state"] == "in-service" and u["origin"] == "fleet" for u in units)
    assert served_at(fleet, "lon") == "lon1"
    try:
        # One of lon1's two units in maintenance: the other still carries its traffic.
        moved = set_state(fleet, "lon1-u1", "maintenance", "--note", "coolant pump swap")
        assert moved["state"] == "maintenance" and moved["carries_traffic"] is False
        assert served_at(fleet, "lon") == "lon1"
        # Both: lon1 carries none; lon's users go to the region.
        set_state(fleet, "lon1-u2", "maintenance")
        assert eventually_served_at(fleet, "lon", False, "lon1") != "lon1"
        status = json.loads(fleet.cli("status", "--json").stdout)
        lon1 = next(p for p in status["pops"] if p["code"] == "lon1")
        assert lon1["state"] == "drained" and "no unit in service" in lon1["reason"]
        # A move the lifecycle does not allow is refused, saying what is.
        refused = fleet.cli("unit", "set-state", "lon1-u2", "shipping", check=False)
        assert refused.returncode == 1 and "can go to decommissioned, in-service" in said(refused)
    finally:
        for code in ("lon1-u1", "lon1-u2"):
            if json.loads(fleet.cli("unit", "show", code, "--json").stdout)["state"] != "in-service":
                set_state(fleet, code, "in-service", "--note", "pump replaced")
    assert eventually_served_at(fleet, "lon", True, "lon1") == "lon1"
    shown = fleet.cli("unit", "show", "lon1-u1").stdout
    assert "maintenance" in shown and "coolant pump swap" in shown and "pump replaced" in shown
    audit = get_json(fleet.control_url + "/api/audit")
    entries = [(a["action"], a["target"], a["outcome"]) for a in audit["audit"]]
    assert ("unit-state", "unit lon1-u1", "ok") in entries and ("unit-state", "unit lon1-u2", "refused") in entries


def test_an_ordered_unit_is_listed_with_its_due_date_and_goes_through_the_factory(emulator_fleet: RunningFleet) -> None:
    fleet = emulator_fleet
    before = time.time()
    ordered = json.loads(fleet.cli("unit", "order", "ams1", "--note", "growth plan", "--json").stdout)
    assert ordered["state"] == "ordered" and ordered["origin"] == "order" and ordered["pop"] == "ams1"
    assert 85 * 86400 < ordered["due"] - before < 95 * 86400  # the fleet's lead time: 3 months
    code = ordered["code"]
    set_state(fleet, code, "assembling")
    set_state(fleet, code, "factory-acceptance-test")
    no_results = fleet.cli("unit", "set-state", code, "shipping", check=False)
    assert no_results.returncode == 1 and "cannot ship before it passes" in said(no_results)
    burn_in = '{"passed": true, "burn_in_hours": 48, "gpus_tested": 32, "gpus_failed": 0}'
    shipped = set_state(fleet, code, "shipping", "--acceptance", burn_in)
    assert shipped["acceptance"] == {"passed": True, "burn_in_hours": 48, "gpus_tested": 32, "gpus_failed": 0}
    listed = json.loads(fleet.cli("unit", "list", "--pop", "ams1", "--json").stdout)["units"]
    assert [u["code"] for u in listed if u["origin"] == "order"] == [code]
    missing = fleet.cli("unit", "show", "zzz9-u1", check=False)
    assert missing.returncode == 1 and "unknown unit" in said(missing)
    gone = set_state(fleet, code, "decommissioned", "--note", "cancelled")
    assert gone["state"] == "decommissioned" and gone["carries_traffic"] is False


def test_the_growth_plans_orders_appear_as_ordered_units_once(emulator_fleet: RunningFleet) -> None:
    fleet = emulator_fleet
    demand = str(Path(__file__).resolve().parent.parent / "data" / "demand.csv")
    args = ["plan", "growth", "--demand", demand, "--factor", "3", "--horizon-months", "9", "--step-months", "3"]
    planned = json.loads(fleet.cli(*args, "--apply", "--json", timeout=300).stdout)
    assert planned["orders"] and len(planned["recorded"]) == len(planned["orders"])
    units = {u["code"]: u for u in json.loads(fleet.cli("unit", "list", "--json").stdout)["units"]}
    for code, order in zip(planned["recorded"], planned["orders"], strict=True):
        unit = units[code]
        assert unit["state"] == "ordered" and unit["pop"] == order["pop"]
        assert "plan growth" in unit["history"][0]["note"]
    again = json.loads(fleet.cli(*args, "--apply", "--json", timeout=300).stdout)
    assert again["recorded"] == []  # the same plan applied twice orders nothing more
