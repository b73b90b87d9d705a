"""Edge state in virtual time, out-of-plan refusals, action communities, balance and the decision steps (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeplane._errors import ConfigError
from edgeplane.bgp import (
    GRACEFUL_SHUTDOWN,
    Announcement,
    Intent,
    Neighbor,
    Route,
    RouteType,
    best_path,
    compare,
    plan_edge,
    pop_intents,
    read_traffic,
    routes_for,
    suggest,
)
from edgeplane.fleet import load_default_fleet
from edgeplane.routing import Scope
from edgeplane.speaker import FleetIntents, Speaker


@dataclass(frozen=True)
class Drain:
    kind: str
    code: str
    since: float
    by: str = "test"


def test_a_planned_drain_shuts_down_gracefully_then_withdraws_in_virtual_time() -> None:
    fleet = load_default_fleet()
    drains = [Drain("metro", "nyc", since=1000.0)]
    during = plan_edge(fleet, drains=drains, failed_pops=(), now=1029.9, graceful_shutdown_seconds=30)
    assert {during.pops[p].state for p in ("nyc1", "nyc2")} == {Announcement.GRACEFUL_SHUTDOWN}
    assert during.pops["nyc1"].until == 1030.0 and during.pops["iad1"].state is Announcement.ANNOUNCED
    assert GRACEFUL_SHUTDOWN in during.intents(fleet, "nyc1")[0].communities
    after = plan_edge(fleet, drains=drains, failed_pops=(), now=1030.0, graceful_shutdown_seconds=30)
    assert after.withdrawn_metros() == {"nyc"}
    prefixes = [i.prefix for i in after.intents(fleet, "nyc1")]
    assert "198.19.0.0/24" not in prefixes and "198.19.0.0/20" in prefixes  # the region's aggregate stays


def test_a_failed_pop_withdraws_at_once_but_never_beyond_the_blast_radius() -> None:
    fleet = load_default_fleet()
    one = plan_edge(fleet, drains=(), failed_pops={"nyc1"}, now=0)
    assert one.pops["nyc1"].state is Announcement.WITHDRAWN and one.withdrawn_metros() == set()  # nyc2 serves nyc
    many = plan_edge(fleet, drains=(), failed_pops={"iad1", "ord1", "dfw1", "sjc1"}, now=0, max_withdrawn_metros=2)
    assert many.withdrawn_metros() == {"iad", "ord"}
    assert set(many.held) == {"dfw1", "sjc1"}
    assert "withdrawal held" in many.pops["dfw1"].reason and many.pops["dfw1"].state is Announcement.ANNOUNCED


async def test_the_speaker_refuses_an_intent_outside_the_plan_with_the_reason(tmp_path: Path) -> None:
    fleet = load_default_fleet()
    foreign = Intent("203.0.113.0/24", "192.0.2.8", Scope.METRO, RouteType.ANYCAST, ((64496, 5, 1),))
    speaker = Speaker("lon1", [Neighbor("127.0.0.2", 64499)], FleetIntents(fleet, "lon1"), workdir=tmp_path)
    speaker.fleet = fleet
    speaker.accept(1, [*pop_intents(fleet, "lon1"), foreign])
    assert "not in the fleet's prefix plan" in speaker.status.refused["203.0.113.0/24"]
    assert "203.0.113.0/24" not in {prefix for _, prefix in speaker.desired_routes()}
    assert len(speaker.desired_routes()) == 8
    assert repr(speaker) == "<Speaker lon1 v1 [Sessions: 0/1 up, Routes: 0 announced, 1 refused]>"


def test_action_communities_are_carried_out_per_transit() -> None:
    fleet = load_default_fleet()
    transits = {t.asn: t for t in fleet.pop_by_code["lon1"].transits}
    intents = [i for i in pop_intents(fleet, "lon1") if i.prefix == "198.19.128.0/24"]
    tagged = [
        Intent(
            i.prefix, i.next_hop, i.scope, i.route_type, (*i.large_communities, (64496, 22, 64499), (64496, 23, 64500))
        )
        for i in intents
    ]
    to_c = routes_for(64496, tagged, Neighbor("127.0.0.2", 64499), transits[64499])
    to_d = routes_for(64496, tagged, Neighbor("127.0.0.3", 64500), transits[64500])
    assert to_c[0].as_path == (64496, 64496, 64496) and to_c[0].communities == ()
    assert to_d[0].as_path == () and (64500, 3003) in to_d[0].communities  # transit-d's own community
    silenced = [
        Intent(i.prefix, i.next_hop, i.scope, i.route_type, (*i.large_communities, (64496, 20, 64499))) for i in intents
    ]
    assert routes_for(64496, silenced, Neighbor("127.0.0.2", 64499), transits[64499]) == []
    assert "as-path [ 64496 64496 64496 ]" in to_c[0].announce("127.0.0.2")


def test_balance_suggests_the_action_that_evens_out_the_transits(tmp_path: Path) -> None:
    fleet = load_default_fleet()
    hot = suggest(fleet, "lon1", {64499: 10.0, 64500: 80.0})
    assert hot.transit_asn == 64500 and hot.action.startswith("prepend-")
    assert max(hot.after.values()) < max(hot.before.values())
    assert sum(hot.gbps_after.values()) == pytest.approx(90.0)  # traffic moves, none is lost
    assert suggest(fleet, "lon1", {64499: 40.0, 64500: 45.0}).action == "none"
    bad = tmp_path / "traffic.csv"
    bad.write_text("pop,transit_asn,gbps\nlon1,64499,10\nlon1,64497,5\n")
    with pytest.raises(ConfigError, match=r"traffic.csv:3: transit_asn: AS64497 is not a transit of lon1"):
        read_traffic(bad, fleet)
    bad.write_text("pop,transit_asn,gbps\nlon1,64499,-1\n")
    with pytest.raises(ConfigError, match=r":2: gbps: must not be negative"):
        read_traffic(bad, fleet)


def test_each_step_of_the_decision_process_is_explained() -> None:
    def route(peer: str, asn: int, **kw: object) -> Route:
        return Route("203.0.113.0/24", peer, asn, as_path=kw.pop("as_path", (asn,)), **kw)  # type: ignore[arg-type]

    a, b = route("127.0.0.11", 64501), route("127.0.0.12", 64502)
    assert compare(a, route("127.0.0.12", 64502, weight=10)).step == "weight"
    assert compare(a, route("127.0.0.12", 64502, local_pref=200)).step == "local_pref"
    assert compare(a, route("127.0.0.12", 64502, locally_originated=True)).step == "locally_originated"
    assert compare(a, route("127.0.0.12", 64502, as_path=(64502, 64509))).step == "as_path_length"
    assert compare(a, route("127.0.0.12", 64502, origin="incomplete")).step == "origin"
    same_as = route("127.0.0.12", 64501, med=5)
    assert compare(a, same_as).step == "med"  # a has no MED: it counts as 0
    assert compare(route("127.0.0.11", 64501, med=9), b).step == "router_id"  # MED skipped across ASes
    assert compare(route("127.0.0.11", 64501, med=9), b, always_compare_med=True).step == "med"
    assert compare(a, route("127.0.0.12", 64502, ibgp=True)).step == "ebgp_over_ibgp"
    assert compare(a, route("127.0.0.12", 64502, igp_cost=5)).step == "igp_cost"
    assert (
        compare(route("127.0.0.11", 64501, router_id="10.0.0.1"), route("127.0.0.12", 64502, router_id="10.0.0.1")).step
        == "peer_address"
    )
    decision = best_path([a, b])
    assert decision.best is a and decision.reasons[0].detail == "router id: 127.0.0.11 beats 127.0.0.12"
