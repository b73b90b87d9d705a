"""The control plane's state in virtual time: reports, timeouts, drains and snapshot versions."""

from __future__ import annotations

import pytest

from edgeplane.control import FleetState, SQLiteStore, UnknownTarget
from edgeplane.fleet import load_default_fleet
from edgeplane.routing import SiteState


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def report(state: FleetState, pop: str, load: float = 0.0) -> None:
    models = {m: {"utilisation": load} for m in state.fleet.models_at(pop)}
    state.report(
        pop, {"url": f"http://127.0.0.1:9/{pop}", "pid": 42, "backend": "emulator", "models": models, "load": load}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> FleetState:
    return FleetState(
        load_default_fleet(), SQLiteStore(":memory:"), clock=clock, wall_clock=clock, agent_timeout_seconds=2.0
    )


def test_sites_serve_once_reported_and_go_down_when_silent(state: FleetState, clock: Clock) -> None:
    assert all(v.state is SiteState.DOWN for v in state.snapshot.sites.values())
    for pop in state.fleet.pops:
        report(state, pop.code)
    assert state.refresh()
    version = state.snapshot.version
    assert all(v.state is SiteState.SERVING for v in state.snapshot.sites.values())
    assert not state.refresh(), "nothing changed, so no new version"
    clock.now += 2.5
    for pop in state.fleet.pops:
        if pop.code != "lon1":
            report(state, pop.code)
    assert state.refresh() and state.snapshot.version == version + 1
    lon1 = state.snapshot.sites["lon1"]
    assert lon1.state is SiteState.DOWN and "no report for 2.5 s" in lon1.reason
    assert {m["code"]: m["state"] for m in state.status()["metros"]}["lon"] == "down"


def test_drains_win_over_health_and_are_audited(state: FleetState) -> None:
    for pop in state.fleet.pops:
        report(state, pop.code)
    state.refresh()
    assert state.drain("metro", "nyc", by="alice")
    assert not state.drain("metro", "nyc", by="alice")
    state.refresh()
    assert {state.snapshot.sites[p].state for p in ("nyc1", "nyc2")} == {SiteState.DRAINED}
    assert "alice" in state.snapshot.sites["nyc1"].reason
    assert state.undrain("metro", "nyc", by="bob")
    state.refresh()
    assert state.snapshot.sites["nyc1"].state is SiteState.SERVING
    assert [(r.who, r.action, r.outcome) for r in state.store.audit_log()][:3] == [
        ("bob", "undrain", "ok"),
        ("alice", "drain", "already drained"),
        ("alice", "drain", "ok"),
    ]
    with pytest.raises(UnknownTarget, match="unknown metro 'xyz'"):
        state.drain("metro", "xyz", by="alice")


def test_load_changes_are_published_at_most_once_a_second(state: FleetState, clock: Clock) -> None:
    for pop in state.fleet.pops:
        report(state, pop.code)
    state.refresh()
    version = state.snapshot.version
    report(state, "ams1", load=0.5)
    clock.now += 0.2
    assert not state.refresh()
    clock.now += 1.0
    report(state, "ams1", load=0.5)
    assert state.refresh() and state.snapshot.version == version + 1
    assert state.snapshot.sites["ams1"].load == 0.5
