"""Failure scenarios routed by the gateway's router: spill-over follows the scope ladder, and a placement
made to survive single failures serves everything in each of them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from click.testing import CliRunner

from edgeplane.catalog import ReplicaSpeed
from edgeplane.cli import cli
from edgeplane.fleet import load_default_fleet
from edgeplane.planning import (
    erlang_b,
    fast_scenarios,
    load_demand,
    place,
    scenarios,
    simulate,
    single_failures,
    site_blocking,
    with_placement,
)

DEMAND = Path(__file__).resolve().parent.parent / "data" / "demand.csv"


def test_a_survivable_placement_serves_all_demand_in_every_single_failure() -> None:
    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    plan = place(fleet, demand)
    planned = with_placement(fleet, [(p.model, p.pop, p.replicas) for p in plan.placement])
    results = scenarios(planned, demand)
    assert len(results) == 1 + len(fleet.pops) + 2 * len(fleet.metros)  # metro failures, then metro drains
    slice_rps = max(d.requests_per_second for d in demand) / 20
    for s in results:
        assert s.unserved_rps < 1e-6, s.name
        # The router fills a site until all its batch slots are taken, then moves on (one slice may land
        # on the last free slot); beyond the SLO's capacity that shows as TTFT breaches, reported.
        assert all(site.rps <= site.saturation_rps + slice_rps for site in s.sites), s.name


def test_a_failed_metro_spills_to_its_region_first_as_the_gateway_does() -> None:
    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    plan = place(fleet, demand)
    planned = with_placement(fleet, [(p.model, p.pop, p.replicas) for p in plan.placement])
    nyc = frozenset(p.code for p in fleet.pops_in("nyc"))
    outcome = simulate(planned, demand, nyc, "metro nyc")
    moved = next(m for m in outcome.metros if (m.metro, m.model) == ("nyc", "llama-3.1-8b-instruct"))
    assert not set(moved.served_by) & nyc
    assert max(moved.served_by, key=lambda p: moved.served_by[p]) == "iad1"  # same region (us-east) first


def test_the_fleet_files_static_placement_is_shown_short() -> None:
    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    results = {s.name: s for s in scenarios(fleet, demand)}
    assert results["no failure"].unserved_rps > 0  # the static placement was never sized for this demand
    assert any(m.breaches for m in results["no failure"].metros)
    assert {name for name, _ in single_failures(fleet, pairs=True)} >= {"metros nyc+iad", "pop lon1"}


def test_the_cli_reads_a_placement_and_prints_json(tmp_path: Path) -> None:
    runner = CliRunner()
    placed = runner.invoke(cli, ["plan", "placement", "--demand", str(DEMAND), "--json"])
    assert placed.exit_code == 0
    path = tmp_path / "placement.json"
    path.write_text(placed.output)
    result = runner.invoke(cli, ["plan", "scenarios", "--demand", str(DEMAND), "--placement", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)["scenarios"]
    assert data[0]["scenario"] == "no failure" and data[0]["unserved_rps"] == 0
    assert {"pop", "model", "rps", "capacity_rps", "utilisation"} <= set(data[0]["sites"][0])
    assert {"metro", "model", "ttft_p99_ms", "slo_ms", "unserved_rps", "served_by"} <= set(data[0]["metros"][0])
    path.write_text("{}")
    bad = runner.invoke(cli, ["plan", "scenarios", "--demand", str(DEMAND), "--placement", str(path)])
    assert bad.exit_code == 1 and "not a placement" in bad.output


def test_the_vectorised_engine_agrees_with_the_slice_by_slice_one() -> None:
    from edgeplane.planning import utilisation_matrix

    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    plan = place(fleet, demand)
    planned = with_placement(fleet, [(p.model, p.pop, p.replicas) for p in plan.placement])
    failures = single_failures(planned)
    pops, load, _, unserved = utilisation_matrix(planned, demand, failures)
    total = sum(d.requests_per_second for d in demand)
    for k, exact in enumerate(scenarios(planned, demand)[: len(failures)]):
        by_pop: dict[str, float] = {}
        for site in exact.sites:
            by_pop[site.pop] = by_pop.get(site.pop, 0.0) + site.rps
        assert abs(unserved[k] - exact.unserved_rps) < 1e-6
        for i, pop in enumerate(pops):
            assert abs(load[k, i] - by_pop.get(pop, 0.0)) <= 0.05 * total, (exact.name, pop)
    result = CliRunner().invoke(cli, ["plan", "scenarios", "--demand", str(DEMAND), "--fast", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["scenarios"][0]["scenario"] == "no failure"


def test_full_and_fast_scenarios_share_the_row_the_dashboard_reads() -> None:
    """One shape: scenario, failed, drained, unserved_rps, the busiest PoP and each metro's ingress PoP,
    whichever engine made the row."""
    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    full = [s.to_json() for s in scenarios(fleet, demand)]
    fast = [s.to_json() for s in fast_scenarios(fleet, demand)]
    assert [r["scenario"] for r in full] == [r["scenario"] for r in fast]
    for exact, quick in zip(full, fast, strict=True):
        assert exact["failed"] == quick["failed"]
        assert set(quick) == {"scenario", "failed", "drained", "unserved_rps", "busiest", "ingress"} < set(exact)
        assert exact["drained"] == quick["drained"] and exact["ingress"] == quick["ingress"]
        assert set(quick["busiest"]) == set(exact["busiest"]) == {"pop", "utilisation"}
        assert exact["busiest"]["pop"] not in exact["failed"] and quick["busiest"]["pop"] not in quick["failed"]
        finite = [s["utilisation"] for s in exact["sites"] if s["utilisation"] is not None]
        assert exact["busiest"]["utilisation"] == max(finite)


def test_a_sites_blocking_is_erlang_b_when_the_batch_does_not_slow_it() -> None:
    # One slot per replica: a request's time does not depend on how many are in flight, so the site is
    # Erlang's loss system with one server per replica.
    speed = ReplicaSpeed(50.0, 1)
    service = speed.prefill_seconds(10, 1) + 19 * speed.inter_token_seconds(1)
    for replicas, rps in ((1, 0.5), (3, 4.0), (8, 30.0)):
        assert math.isclose(site_blocking(speed, replicas, 10, 20, rps), erlang_b(replicas, rps * service))
    # With a batch that slows as it grows, a full site is reached sooner than at the idle speed.
    slowing = ReplicaSpeed(100.0, 4)
    idle = slowing.prefill_seconds(1, 1) + 14 * slowing.inter_token_seconds(1)
    assert site_blocking(slowing, 1, 1, 15, 6.0) > erlang_b(4, 6.0 * idle)
    assert site_blocking(slowing, 1, 1, 15, 0.0) == 0.0
