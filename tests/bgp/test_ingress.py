"""Where users enter: the transits' model (routers per metro, IGP by distance, BGP at each router) on the default
fleet, the drained prepend on the wire, and the planner's and `bgp explain`'s predictions (issue 15)."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from edgeplane.bgp import (
    DRAIN_PREPENDS,
    GRACEFUL_SHUTDOWN,
    IngressModel,
    Neighbor,
    client_router,
    igp_cost,
    next_hops,
    no_export_to,
    pop_intents,
    predict_ingress,
    routes_for,
    transit_routers,
)
from edgeplane.cli import cli
from edgeplane.fleet import great_circle_km, load_default_fleet

FLEET = load_default_fleet()
MODEL = IngressModel(FLEET)
METROS = [m.code for m in FLEET.metros]


def test_one_router_per_transit_and_metro_with_stable_names_and_ids() -> None:
    routers = transit_routers(FLEET)
    assert len(routers) == 18  # transits a and b in six US metros, c and d in three European ones
    assert [r.index for r in routers] == list(range(18))
    assert len({r.router_id for r in routers}) == len({r.name for r in routers}) == 18
    lon = next(r for r in routers if r.name == "transit-c-lon")
    assert (lon.asn, lon.metro, lon.router_id) == (64499, "lon", f"198.51.100.{lon.index + 1}")
    assert client_router(FLEET, "lon") == lon  # lon1 lists transit-c first
    assert client_router(FLEET, "nyc").name == "transit-a-nyc"


def test_igp_costs_follow_the_distance_between_metros() -> None:
    lon, ams = FLEET.metro_by_code["lon"], FLEET.metro_by_code["ams"]
    km = great_circle_km(lon.latitude, lon.longitude, ams.latitude, ams.longitude)
    assert igp_cost(FLEET, "lon", "ams") == igp_cost(FLEET, "ams", "lon") == 1 + round(km / 10)
    assert igp_cost(FLEET, "lon", "lon") == 0
    routers = {r.name: r for r in MODEL.routers}
    direct = igp_cost(FLEET, "nyc", "sjc")
    assert MODEL.path_cost(routers["transit-a-nyc"], routers["transit-a-sjc"]) <= direct


def test_with_nothing_drained_every_metro_enters_at_a_pop_of_its_own() -> None:
    predicted = predict_ingress(FLEET)
    assert set(predicted) == set(METROS)
    for metro, ingress in predicted.items():
        assert ingress.pop is not None and FLEET.pop_by_code[ingress.pop].metro == metro, metro
        assert ingress.prefix in FLEET.metro_by_code[metro].service_prefixes  # its own /24, learned over eBGP
    nyc = predicted["nyc"]  # nyc1 and nyc2 tie down to the router id: the lower next hop
    assert nyc.pop == "nyc1" and nyc.address == "198.19.0.1"
    assert [c.pop for c in nyc.candidates] == ["nyc1", "nyc2"] and "router id" in nyc.why_not(nyc.candidates[1])


def test_a_drained_london_enters_at_the_nearest_undrained_pop_by_the_rule() -> None:
    lon = predict_ingress(FLEET, withdrawn_metros={"lon"})["lon"]
    # lon's /24 is gone; the eu-west aggregate is announced by lon1 (prepended, eBGP here) and ams1 (iBGP from
    # transit-c-ams): the shorter AS path wins before the IGP cost is looked at.
    assert lon.prefix == "198.19.128.0/20" and lon.pop == "ams1" and lon.winner is not None
    assert lon.winner.exit.name == "transit-c-ams" and lon.winner.route.ibgp
    lon1 = next(c for c in lon.candidates if c.pop == "lon1")
    assert lon1.route.as_path == (FLEET.asn,) * (DRAIN_PREPENDS + 1) and not lon1.route.ibgp
    assert lon.why_not(lon1) == f"as path length: 1 beats {DRAIN_PREPENDS + 1}"
    others = predict_ingress(FLEET, withdrawn_metros={"lon"})
    assert all(others[m].pop == predict_ingress(FLEET)[m].pop for m in METROS if m != "lon")


def test_a_failed_pop_is_passed_over_for_the_next_by_the_rule() -> None:
    assert predict_ingress(FLEET, failed_pops={"nyc1"})["nyc"].pop == "nyc2"  # the metro's other PoP
    lon = predict_ingress(FLEET, failed_pops={"lon1"})["lon"]
    assert lon.pop == "ams1" and lon.prefix == "198.19.128.0/20"  # a silent PoP takes its aggregates too
    both = predict_ingress(FLEET, failed_pops={"nyc1", "nyc2"})["nyc"]
    assert both.pop == "iad1" and both.prefix == "198.19.0.0/20"  # us-east's aggregate, nearest exit
    nothing = predict_ingress(FLEET, failed_pops={p.code for p in FLEET.pops})
    assert all(i.pop is None and i.prefix is None for i in nothing.values())


def test_graceful_shutdown_lowers_local_pref_so_another_pop_of_the_prefix_wins() -> None:
    # A PoP drain of nyc1 in its graceful-shutdown period: nyc1 still announces nyc's /24, tagged 65535:0.
    intents = {"nyc1": pop_intents(FLEET, "nyc1", shutting_down_metros={"nyc"})}
    nyc = MODEL.predict(intents=intents)["nyc"]
    assert nyc.pop == "nyc2"
    shut = next(c for c in nyc.candidates if c.pop == "nyc1")
    assert shut.route.local_pref == 0 and nyc.why_not(shut) == "local pref: 100 beats 0"
    # A whole metro shutting down: nobody else announces its /24, so its users stay until the withdrawal.
    assert MODEL.predict(shutting_down_metros={"lon"})["lon"].pop == "lon1"


def test_actions_in_the_intents_are_carried_out_as_the_speaker_would() -> None:
    # nyc1 stops announcing to transit-a: nyc's clients (behind transit-a) enter at nyc2.
    blocked = [replace(i, large_communities=(*i.large_communities, no_export_to(FLEET.asn, 64497))) for i in
               pop_intents(FLEET, "nyc1")]  # fmt: skip
    assert MODEL.predict(intents={"nyc1": blocked})["nyc"].pop == "nyc2"
    # A MED on nyc1's /24 (routes from one neighbour AS: MED is compared) also sends them to nyc2.
    worse = [replace(i, med=50) for i in pop_intents(FLEET, "nyc1")]
    assert MODEL.predict(intents={"nyc1": worse})["nyc"].pop == "nyc2"


def _drained_sets() -> st.SearchStrategy[frozenset[str]]:
    return st.frozensets(st.sampled_from(METROS), max_size=len(METROS) - 1)


@settings(max_examples=60, deadline=None)
@given(drained=_drained_sets(), shutting=st.booleans())
def test_nobody_enters_at_a_drained_pop_while_an_undrained_pop_announces_the_same_prefix(
    drained: frozenset[str], shutting: bool
) -> None:
    withdrawn, shutting_down = (set(), drained) if shutting else (drained, set())
    predicted = MODEL.predict(withdrawn_metros=withdrawn, shutting_down_metros=shutting_down)
    announced = MODEL.announcements(withdrawn_metros=withdrawn, shutting_down_metros=shutting_down)
    for metro, ingress in predicted.items():
        assert ingress.pop is not None and ingress.prefix is not None
        if FLEET.pop_by_code[ingress.pop].metro not in drained:
            continue
        by_router = announced[ingress.router.asn][ingress.prefix]
        undrained = [c.pop for cs in by_router.values() for c in cs if c.exit.metro not in drained]
        assert not undrained, f"{metro} enters at drained {ingress.pop} though {undrained} announce {ingress.prefix}"


def test_the_drained_prepend_reaches_the_exabgp_line() -> None:
    intents = pop_intents(FLEET, "lon1", withdrawn_metros={"lon"})
    aggregate = next(i for i in intents if i.prefix == "198.19.128.0/20")
    assert aggregate.as_path_prepend == DRAIN_PREPENDS and aggregate.to_json()["as_path_prepend"] == DRAIN_PREPENDS
    assert all(i.as_path_prepend == 0 for i in pop_intents(FLEET, "lon1"))
    transits = {t.asn: t for t in FLEET.pop_by_code["lon1"].transits}
    to_c = {r.prefix: r for r in routes_for(FLEET.asn, intents, Neighbor("127.0.0.2", 64499), transits[64499])}
    line = to_c["198.19.128.0/20"].announce("127.0.0.2")
    assert f"next-hop {next_hops(8)[0]} as-path [ 64496 64496 64496 64496 ]" in line
    # With an action prepend toward the transit on top, the two add up; the transit's own community does not.
    acted = [replace(aggregate, large_communities=(*aggregate.large_communities, (FLEET.asn, 22, 64499)))]
    assert routes_for(FLEET.asn, acted, Neighbor("127.0.0.2", 64499), transits[64499])[0].as_path == (64496,) * 6
    mapped = [replace(aggregate, large_communities=(*aggregate.large_communities, (FLEET.asn, 22, 64500)))]
    to_d = routes_for(FLEET.asn, mapped, Neighbor("127.0.0.3", 64500), transits[64500])[0]
    assert to_d.as_path == (64496,) * 4 and (64500, 3002) in to_d.communities


def test_the_speaker_reads_the_prepend_back_from_the_control_planes_json() -> None:
    from edgeplane.speaker import intent_from_json

    intents = pop_intents(FLEET, "ams1", shutting_down_metros={"ams"})
    assert [intent_from_json(i.to_json()) for i in intents] == intents
    assert intents[0].communities == (GRACEFUL_SHUTDOWN,) and intents[-1].as_path_prepend == DRAIN_PREPENDS


def test_plan_scenarios_rows_carry_the_ingress_of_every_drain_and_failure() -> None:
    demand = "tests/data/demand.csv"
    for fast in ([], ["--fast"]):
        result = CliRunner().invoke(cli, ["plan", "scenarios", "--demand", demand, "--json", *fast])
        assert result.exit_code == 0, result.output
        rows = {r["scenario"]: r for r in json.loads(result.output)["scenarios"]}
        assert rows["no failure"]["ingress"] == {m: i.pop for m, i in predict_ingress(FLEET).items()}
        assert rows["drain metro lon"]["ingress"]["lon"] == "ams1" and rows["drain metro lon"]["drained"] == ["lon"]
        assert rows["drain metro lon"]["failed"] == [] and rows["pop nyc1"]["ingress"]["nyc"] == "nyc2"
        assert {f"drain metro {m}" for m in METROS} | {f"pop {p.code}" for p in FLEET.pops} <= set(rows)
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    result = CliRunner().invoke(
        cli, ["plan", "scenarios", "--demand", demand, "--fast", "--ingress"], obj={"console": console}
    )
    assert result.exit_code == 0, result.output
    line = [x for x in buffer.getvalue().splitlines() if "drain metro lon" in x][-1]  # the ingress table's row
    assert "ams1*" in line and "lon1" not in line


def test_bgp_explain_ingress_shows_the_candidates_and_why_the_winner_won() -> None:
    result = CliRunner().invoke(cli, ["bgp", "explain", "--ingress", "lon", "--drain", "lon", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["pop"], data["exit_router"], data["prefix"], data["drained"]) == (
        "ams1",
        "transit-c-ams",
        "198.19.128.0/20",
        ["lon"],
    )
    lon1 = next(c for c in data["candidates"] if c["pop"] == "lon1")
    assert not lon1["best"] and lon1["why_not"].startswith("as path length")
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    result = CliRunner().invoke(cli, ["bgp", "explain", "--ingress", "nyc", "--fail", "nyc1"], obj={"console": console})
    assert result.exit_code == 0, result.output
    assert "ingress for nyc: nyc2 via transit-a-nyc (failed nyc1)" in buffer.getvalue()
    bad = CliRunner().invoke(cli, ["bgp", "explain", "--ingress", "nyc", "--fail", "nope"])
    assert bad.exit_code == 2 and "unknown 'nope'" in bad.output


@given(drained=_drained_sets())
def test_once_withdrawn_a_drained_metro_attracts_nobody_whatever_else_is_drained(drained: frozenset[str]) -> None:
    """Also where the drained metro's PoPs were the only ones announcing an aggregate (fra alone in eu-central, or
    ord and dfw together in us-central): they withdraw it, and a wider aggregate of an undrained PoP covers."""
    predicted = MODEL.predict(withdrawn_metros=drained)
    for metro, ingress in predicted.items():
        transit = client_router(FLEET, metro).asn
        reachable = [p.code for p in FLEET.pops if p.metro not in drained and transit in {t.asn for t in p.transits}]
        if reachable:  # transits do not carry each other's routes: else only drained PoPs are on its way
            assert ingress.pop in reachable, f"{metro} enters at {ingress.pop}, drained, though {reachable} are not"


def test_a_metro_alone_in_its_region_moves_its_users_when_drained() -> None:
    assert predict_ingress(FLEET, withdrawn_metros={"fra"})["fra"].pop == "ams1"
    assert {predict_ingress(FLEET, withdrawn_metros={"ord", "dfw"})[m].pop for m in ("ord", "dfw")} == {"iad1"}
    intents = {i.prefix: i for i in pop_intents(FLEET, "fra1", withdrawn_metros={"fra"})}
    assert "198.19.144.0/20" not in intents  # eu-central's aggregate: nobody else announces it
    assert intents["198.19.128.0/17"].as_path_prepend == DRAIN_PREPENDS  # Europe's: lon1 and ams1 do too


@pytest.mark.parametrize(
    "extra",
    [["--pop", "lon1"], ["--routes", "x.json"], ["--deterministic-med"], ["--no-always-compare-med"],
     ["--drain", "lon", "--shutting-down", "lon"]],
)  # fmt: skip
def test_bgp_explain_ingress_refuses_what_only_egress_takes_or_what_contradicts(extra: list[str]) -> None:
    result = CliRunner().invoke(cli, ["bgp", "explain", "--ingress", "lon", *extra])
    assert result.exit_code == 2 and "Error:" in result.output, result.output
