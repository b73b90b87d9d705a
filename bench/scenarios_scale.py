"""All single-PoP and single-metro failure scenarios of a 1,000-PoP fleet, vectorised.

    python bench/scenarios_scale.py

A synthetic fleet (10 continents, 200 metros, 1,000 PoPs, 3 models placed everywhere), demand for every
model from every metro; 1 + 1,000 + 200 scenarios routed along the gateway's ladders at once (numpy).
Goal: at most 1 s. Also checks the vectorised engine against the slice-by-slice one on the default fleet.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._synthetic import synthetic_demand, synthetic_fleet

from edgeplane.fleet import load_default_fleet
from edgeplane.planning import load_demand, place, scenarios, single_failures, with_placement
from edgeplane.planning._scenarios import utilisation_matrix
from edgeplane.routing import Router


def main() -> None:
    fleet = synthetic_fleet(10, 10, 2, 5, models=3, servers_per_unit=4, units_per_pop=1)
    fleet = with_placement(
        fleet, [(m.name, p.code, 1 + (p.id + i) % 3) for p in fleet.pops for i, m in enumerate(fleet.models)]
    )
    demand = synthetic_demand(fleet, models_per_metro=3, rps_per_gpu=0.5)
    failures = single_failures(fleet)
    started = time.perf_counter()
    router = Router(fleet)  # built once per fleet, as each gateway does when the fleet changes
    built = time.perf_counter() - started
    started = time.perf_counter()
    _, _, _, unserved = utilisation_matrix(fleet, demand, failures, router=router)
    took = time.perf_counter() - started
    print(
        f"scenarios: {len(failures)} (no failure, {len(fleet.pops)} PoPs, {len(fleet.metros)} metros) over"
        f" {len(fleet.pops)} PoPs and {len(demand)} demand rows in {took:.2f} s, after building the router in"
        f" {built:.2f} s; worst unserved {unserved.max():.1f} rps; ratio to the 1 s goal {took:.2f}"
    )
    small = load_default_fleet()
    wanted = load_demand(Path(__file__).resolve().parent.parent / "tests" / "data" / "demand.csv", small)
    planned = with_placement(small, [(p.model, p.pop, p.replicas) for p in place(small, wanted).placement])
    fails = single_failures(planned)
    _, fast, _, _ = utilisation_matrix(planned, wanted, fails)
    exact = scenarios(planned, wanted)[: len(fails)]  # the failures; the metro drains follow them
    worst = 0.0
    for s, result in enumerate(exact):
        by_pop: dict[str, float] = {}
        for site in result.sites:
            by_pop[site.pop] = by_pop.get(site.pop, 0.0) + site.rps
        for i, pop in enumerate(p.code for p in planned.pops):
            worst = max(worst, abs(fast[s, i] - by_pop.get(pop, 0.0)))
    total = sum(d.requests_per_second for d in wanted)
    print(
        f"vectorised vs slice-by-slice on the default fleet: largest per-site difference {worst:.1f} rps of {total:.0f}"
    )


if __name__ == "__main__":
    main()
