"""The control plane's state in virtual time: reports, timeouts, drains and snapshot versions."""

from __future__ import annotations

import pytest

from edgeplane.control import FleetState, SQLiteStore, UnknownTarget
from edgeplane.fleet import load_default_fleet
from edgeplane.routing import SiteState
from tests._time import VirtualClock


def report(state: FleetState, pop: str, load: float = 0.0) -> None:
    models = {m: {"utilisation": load} for m in state.fleet.models_at(pop)}
    state.report(
        pop, {"url": f"http://127.0.0.1:9/{pop}", "pid": 42, "backend": "emulator", "models": models, "load": load}
    )


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def state(clock: VirtualClock) -> FleetState:
    return FleetState(
        load_default_fleet(), SQLiteStore(":memory:"), clock=clock, wall_clock=clock, agent_timeout_seconds=2.0
    )


def test_sites_serve_once_reported_and_go_down_when_silent(state: FleetState, clock: VirtualClock) -> None:
    assert all(v.state is SiteState.DOWN for v in state.snapshot.sites.values())
    for pop in state.fleet.pops:
        report(state, pop.code)
    assert state.refresh()
    version = state.snapshot.version
    assert all(v.state is SiteState.SERVING for v in state.snapshot.sites.values())
    assert not state.refresh(), "nothing changed, so no new version"
    clock.advance(2.5)
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
    assert state.drains.drain("metro", "nyc", by="alice")
    assert not state.drains.drain("metro", "nyc", by="alice")
    state.refresh()
    assert {state.snapshot.sites[p].state for p in ("nyc1", "nyc2")} == {SiteState.DRAINED}
    assert "alice" in state.snapshot.sites["nyc1"].reason
    assert state.drains.undrain("metro", "nyc", by="bob")
    state.refresh()
    assert state.snapshot.sites["nyc1"].state is SiteState.SERVING
    assert [(r.who, r.action, r.outcome) for r in state.store.audit_log()][:3] == [
        ("bob", "undrain", "ok"),
        ("alice", "drain", "already drained"),
        ("alice", "drain", "ok"),
    ]
    with pytest.raises(UnknownTarget, match="unknown metro 'xyz'"):
        state.drains.drain("metro", "xyz", by="alice")


def test_load_changes_are_published_at_most_once_a_second(state: FleetState, clock: VirtualClock) -> None:
    for pop in state.fleet.pops:
        report(state, pop.code)
    state.refresh()
    version = state.snapshot.version
    report(state, "ams1", load=0.5)
    clock.advance(0.2)
    assert not state.refresh()
    clock.advance(1.0)
    report(state, "ams1", load=0.5)
    assert state.refresh() and state.snapshot.version == version + 1
    assert state.snapshot.sites["ams1"].load == 0.5


def small_state(clock: VirtualClock) -> FleetState:
    from edgeplane.fleet import load_fleet
    from tests.conftest import SMALL_FLEET

    return FleetState(load_fleet(SMALL_FLEET), SQLiteStore(":memory:"), clock=clock, wall_clock=clock)


def busy_report(state: FleetState, pop: str, busy: int) -> None:
    models = {"tiny-llama": {"running": min(busy, 4), "waiting": max(0, busy - 4), "capacity": 4}}
    state.report(
        pop, {"url": f"http://127.0.0.1:9/{pop}", "pid": 1, "backend": "emulator", "models": models, "load": 0.5}
    )


def test_a_drain_that_would_overload_its_neighbours_is_refused_unless_forced(clock: VirtualClock) -> None:
    from edgeplane.control import DrainRefused

    state = small_state(clock)  # tiny-llama: 4 slots a PoP, a limit of 3 (90%)
    for pop, busy in (("nyc1", 3), ("iad1", 2), ("ord1", 2), ("ams1", 2)):
        busy_report(state, pop, busy)
    state.refresh()
    check = state.drains.check("metro", "nyc")  # 3 requests move: one to each of iad1, ord1, ams1
    assert check.ok and check.moved == {"iad1": {"tiny-llama": 1}, "ord1": {"tiny-llama": 1}, "ams1": {"tiny-llama": 1}}

    busy_report(state, "ams1", 3)
    busy_report(state, "nyc1", 4)
    clock.advance(1.5)
    state.refresh()
    with pytest.raises(DrainRefused) as refused:
        state.drains.drain("metro", "nyc", by="alice")
    assert refused.value.reasons == [
        "iad1 would carry 5 requests of tiny-llama (2 now + 3 moved in) against a limit of 3"
    ]
    assert refused.value.advice[0] == "add 1 replica(s) of tiny-llama at iad1, or drain when load is lower"
    assert state.store.drains() == []
    assert state.drains.drain("metro", "nyc", by="alice", force=True)
    outcomes = [(r.action, r.outcome) for r in state.store.audit_log()[:2]]
    assert outcomes == [("drain", "ok (forced)"), ("drain", "refused")]


def test_blast_radius_limits_metros_drained_at_once(clock: VirtualClock) -> None:
    from edgeplane.control import DrainRefused

    state = small_state(clock)
    assert state.drains.drain("metro", "nyc", by="alice")
    assert state.drains.drain("pop", "iad1", by="alice")
    with pytest.raises(DrainRefused, match="2 metros are drained already"):
        state.drains.drain("metro", "ams", by="alice")
    assert state.drains.drain("pop", "nyc1", by="alice")  # inside a metro already drained: no wider
    assert state.drains.drain("metro", "ams", by="alice", force=True)


def test_the_edge_follows_drains_after_graceful_shutdown_and_failures_within_the_blast_radius(
    state: FleetState, clock: VirtualClock
) -> None:
    state.edge_book.graceful_shutdown_seconds = 5.0
    for pop in state.fleet.pops:
        report(state, pop.code)
    state.refresh()
    state.refresh_edge()
    version = state.edge_book.version
    assert not state.refresh_edge(), "nothing changed, so no new edge version"
    state.drains.drain("metro", "lon", by="test")
    assert state.refresh_edge() and state.edge_book.version == version + 1
    assert state.edge_book.plan.pops["lon1"].state.value == "graceful-shutdown"
    assert [c for i in state.edge_book.intents("lon1") for c in i.communities][:1] == [(65535, 0)]
    clock.advance(5.0)
    state.refresh()
    assert state.refresh_edge() and state.edge_book.plan.pops["lon1"].state.value == "withdrawn"
    assert "198.19.128.0/24" not in {i.prefix for i in state.edge_book.intents("lon1")}
    assert "198.19.128.0/20" in {i.prefix for i in state.edge_book.intents("lon1")}  # the region's aggregate stays

    # Failures: sites that stop reporting withdraw at once, but lon is withdrawn already and the blast
    # radius allows two metros: sea goes (first in the fleet's order), ams and fra are held (and said so).
    clock.advance(3.0)
    for pop in state.fleet.pops:
        if pop.code not in ("ams1", "fra1", "sea1"):
            report(state, pop.code)
    state.refresh()
    state.refresh_edge()
    assert state.edge_book.plan.withdrawn_metros() == {"lon", "sea"}
    assert set(state.edge_book.plan.held) == {"ams1", "fra1"}
    assert "blast radius allows 2" in state.edge_book.plan.pops["fra1"].reason


def test_bgp_actions_are_checked_and_audited(state: FleetState) -> None:
    with pytest.raises(UnknownTarget, match="AS64497 is not a transit of lon1"):
        state.edge_book.set_action("lon1", 64497, "prepend-1", by="test")
    with pytest.raises(ValueError, match="unknown action"):
        state.edge_book.set_action("lon1", 64499, "prepend-9", by="test")
    state.edge_book.set_action("lon1", 64499, "prepend-2", by="test")
    assert all((64496, 22, 64499) in i.large_communities for i in state.edge_book.intents("lon1"))
    assert state.store.audit_log()[0].action == "bgp action"
