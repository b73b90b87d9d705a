"""Units carry traffic on their own: a unit drained, alarmed or in maintenance takes its share of its PoP's
replicas out of routing, the PoP serving on with the rest; heat and power alarms are weighed against the
fleet's headroom like any drain, a leak or a fire is not."""

from __future__ import annotations

from typing import Any

import pytest

from edgeplane.control import DrainRefused, FleetState, SQLiteStore
from edgeplane.fleet import load_default_fleet
from edgeplane.routing import SiteState
from tests._time import VirtualClock

MODEL = "llama-3.1-8b-instruct"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def state(clock: VirtualClock) -> FleetState:
    return FleetState(load_default_fleet(), SQLiteStore(":memory:"), clock=clock, wall_clock=clock)


def report(state: FleetState, pop: str, *, busy: int = 0, alarms: dict[str, list[str]] | None = None) -> None:
    models = {m: {"running": busy, "waiting": 0} for m in state.fleet.models_at(pop)}
    units = {
        u.code: {"alarms": (alarms or {}).get(u.code, []), "stale": None} for u in state.fleet.pop_by_code[pop].units
    }
    data: dict[str, Any] = {"url": f"http://127.0.0.1:9/{pop}", "backend": "emulator", "models": models, "units": units}
    state.report(pop, data)


def everyone_reports(state: FleetState, busy: int = 0) -> None:
    for pop in state.fleet.pops:
        report(state, pop.code, busy=busy)
    state.refresh()


def audit(state: FleetState, action: str) -> list[tuple[str, str]]:
    return [(r.target, r.outcome) for r in reversed(state.store.audit_log()) if r.action == action]


def test_replicas_sit_in_units_by_their_gpus() -> None:
    fleet = load_default_fleet()
    assert fleet.unit_replicas("nyc1", MODEL, 4) == {"nyc1-u1": 2, "nyc1-u2": 2}
    assert fleet.unit_replicas("nyc1", MODEL, 3) == {"nyc1-u1": 2, "nyc1-u2": 1}
    assert fleet.unit_replicas("nyc1", MODEL, 1) == {"nyc1-u1": 1, "nyc1-u2": 0}
    for pop in fleet.pops:
        for replicas in range(1, 9):
            split = fleet.unit_replicas(pop.code, MODEL, replicas)
            assert set(split) == {u.code for u in pop.units} and sum(split.values()) == replicas


def test_an_alarmed_unit_takes_its_replicas_out_and_returns_once_clear(state: FleetState) -> None:
    everyone_reports(state)
    placed = state.fleet.models_at("lon1")
    full = state.router.slots("lon1", MODEL, state.snapshot.sites["lon1"])
    report(state, "lon1", alarms={"lon1-u1": ["coolant-supply"]})
    assert state.refresh()
    lon1 = state.snapshot.sites["lon1"]
    assert lon1.state is SiteState.SERVING and lon1.replicas == {m: n // 2 for m, n in placed.items()}
    assert state.router.slots("lon1", MODEL, lon1) == full // 2
    assert state.drains.units_out("lon1") == {"lon1-u1": "alarm: coolant-supply"}
    assert audit(state, "alarm-drain") == [("unit lon1-u1", "ok")]

    report(state, "lon1", alarms={"lon1-u1": ["coolant-supply"], "lon1-u2": ["inlet-temperature"]})
    state.refresh()
    lon1 = state.snapshot.sites["lon1"]
    assert lon1.state is SiteState.DRAINED and lon1.reason.startswith("no unit carries traffic (lon1-u1 alarm")

    report(state, "lon1")
    state.refresh()
    assert state.snapshot.sites["lon1"].state is SiteState.SERVING and state.snapshot.sites["lon1"].replicas == {}
    assert audit(state, "alarm-drain")[-2:] == [("unit lon1-u1", "released"), ("unit lon1-u2", "released")]


def test_units_in_maintenance_or_drained_carry_nothing(state: FleetState) -> None:
    everyone_reports(state)
    state.unit_book.set_state("ams1-u2", "maintenance", by="alice")
    assert state.drains.drain("unit", "ams1-u1", by="bob")
    state.refresh()
    ams1 = state.snapshot.sites["ams1"]
    assert ams1.state is SiteState.DRAINED
    assert ams1.reason == "no unit carries traffic (ams1-u1 drained by bob; ams1-u2 maintenance)"
    assert state.drains.undrain("unit", "ams1-u1", by="bob")
    state.refresh()
    assert state.snapshot.sites["ams1"].state is SiteState.SERVING
    assert state.drains.units_out("ams1") == {"ams1-u2": "maintenance"}


def test_a_heat_alarm_is_held_when_the_fleet_has_no_room_and_a_leak_is_not(
    state: FleetState, clock: VirtualClock
) -> None:
    everyone_reports(state, busy=0)
    # Every site of the model runs full: half of lon1 has nowhere to go.
    for pop in state.fleet.pops:
        view = state.snapshot.sites[pop.code]
        report(state, pop.code, busy=state.router.slots(pop.code, MODEL, view))
    clock.advance(2)
    state.refresh()
    with pytest.raises(DrainRefused):
        state.drains.check("unit", "lon1-u1")
    report(state, "lon1", busy=state.router.slots("lon1", MODEL), alarms={"lon1-u1": ["inlet-temperature"]})
    state.refresh()
    assert state.drains.units_out("lon1") == {} and state.snapshot.sites["lon1"].replicas == {}
    assert "inlet-temperature: held, " in state.alarms.held["lon1-u1"]
    lon1 = next(p for p in state.status()["pops"] if p["code"] == "lon1")
    assert lon1["alarms_held"]["lon1-u1"] == state.alarms.held["lon1-u1"]
    assert audit(state, "alarm-drain") == [("unit lon1-u1", "held")]

    report(state, "lon1", alarms={"lon1-u1": ["inlet-temperature", "leak"]})
    assert state.drains.units_out("lon1") == {"lon1-u1": "alarm: inlet-temperature, leak"}
    assert audit(state, "alarm-drain")[-1] == ("unit lon1-u1", "ok")
    assert "lon1-u1" not in state.alarms.held
