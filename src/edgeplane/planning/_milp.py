"""The placement MILP: replicas per model, PoP and GPU type; GPU, memory and power limits; every single
PoP and metro failure per continent."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from edgeplane.catalog import GPU_SPECS
from edgeplane.fleet import Fleet
from edgeplane.planning._demand import Demand
from edgeplane.planning._options import (
    Growth,
    Option,
    by_continent_and_model,
    continent_demand,
    failure_scenarios,
    mean_rtt,
)
from edgeplane.planning._solver import MilpModel


def build_model(
    fleet: Fleet,
    demand: Sequence[Demand],
    cands: list[Option],
    *,
    latency_weight: float,
    slack: bool,
    gpus_only: bool,
    hardware: bool = True,
    growth: Growth | None = None,
    units: dict[str, int] | None = None,
) -> tuple[MilpModel, dict[tuple[str, str, str], int], list[tuple[int, dict[str, Any]]]]:
    """The MILP. Latency enters as a price per replica: its capacity times the demand-weighted RTT to it from
    the metros that ask for its model, which pulls replicas toward their users without flow variables (the
    covering structure stays small enough to solve fleets of hundreds of PoPs in seconds)."""
    model = MilpModel()
    replicas: dict[tuple[str, str, str], int] = {}
    rtt = mean_rtt(fleet, demand)
    for c in cands:
        cost = c.gpus if gpus_only else c.gpus * GPU_SPECS[c.gpu_type].cost_per_hour_usd
        if not gpus_only:
            cost += latency_weight * c.capacity_rps * rtt.get((c.model, c.pop), 0.0)
        replicas[c.model, c.pop, c.gpu_type] = model.column(cost, integer=True)
    by_site: dict[str, list[Option]] = {}
    for c in cands:
        by_site.setdefault(c.pop, []).append(c)
    # Growth: how many units to add per PoP (integers, at least those already ordered).
    if growth is not None and units is not None:
        for pop, committed in growth.committed.items():
            units[pop] = model.column(growth.unit_weight, integer=True)
            model.lower[units[pop]] = float(committed)
    # Hardware: GPUs per type and power per PoP, plus what added units bring.
    for site in fleet.pops if hardware else []:
        here = by_site.get(site.code, [])
        added = units.get(site.code) if units is not None else None
        brings = growth.template.gpus_by_type() if growth is not None and added is not None else {}
        for gpu_type in sorted(set(site.gpus_by_type()) | set(brings)):
            count = site.gpus_by_type().get(gpu_type, 0)
            of_type = [c for c in here if c.gpu_type == gpu_type]
            if of_type:
                columns = [replicas[c.model, c.pop, c.gpu_type] for c in of_type]
                values = [float(c.gpus) for c in of_type]
                if added is not None and gpu_type in brings:
                    columns, values = [*columns, added], [*values, -float(brings[gpu_type])]
                model.row(columns, values, -math.inf, float(count))
        if here:
            columns = [replicas[c.model, c.pop, c.gpu_type] for c in here]
            values = [c.gpus * GPU_SPECS[c.gpu_type].power_kw for c in here]
            if added is not None and growth is not None:
                columns, values = [*columns, added], [*values, -growth.template.power_kw]
            model.row(columns, values, -math.inf, sum(u.power_kw for u in site.units))
    # Survivability: every single failure in a continent leaves enough capacity there for all its demand.
    slacks: list[tuple[int, dict[str, Any]]] = []
    by_group = by_continent_and_model(fleet, cands)
    for (continent, name), rps in continent_demand(fleet, demand).items():
        if rps <= 0:
            continue
        here = by_group.get((continent, name), [])
        # Capacity in the continent and at each of its PoPs, named once: a failure takes its PoPs' share.
        at_pop: dict[str, list[Option]] = {}
        for c in here:
            at_pop.setdefault(c.pop, []).append(c)
        capacity = {
            pop: model.sum_column([replicas[c.model, c.pop, c.gpu_type] for c in of], [c.capacity_rps for c in of])
            for pop, of in at_pop.items()
        }
        total = model.sum_column(list(capacity.values()), [1.0] * len(capacity))
        for scenario, lost in [("no failure", frozenset[str]()), *failure_scenarios(fleet, continent)]:
            gone = [capacity[pop] for pop in sorted(lost) if pop in capacity]
            columns, vals = [total, *gone], [1.0] + [-1.0] * len(gone)
            if slack:
                short = model.column(1.0)
                columns, vals = [*columns, short], [*vals, 1.0]
                info = {"continent": continent, "model": name, "scenario": scenario, "demand_rps": rps}
                slacks.append((short, info))
            model.row(columns, vals, rps, math.inf)
        # A valid cut (it holds for every integer placement, so the LP bound stays a bound): at least
        # `need` replicas must survive the worst metro failure, and by pigeonhole that failure takes at
        # least ceil(R / metros) of R replicas spread over the continent's metros.
        if here and not slack:
            total = replicas_needed(
                rps, max(c.capacity_rps for c in here), len({fleet.pop_by_code[c.pop].metro for c in here})
            )
            model.row([replicas[c.model, c.pop, c.gpu_type] for c in here], [1.0] * len(here), total, math.inf)
    return model, replicas, slacks


def replicas_needed(rps: float, best_capacity_rps: float, metros: int) -> int:
    """The fewest replicas that can leave ``rps`` of capacity after losing any one of ``metros`` metros."""
    need = math.ceil(rps / best_capacity_rps - 1e-9)
    total = need
    while metros > 1 and total - math.ceil(total / metros) < need:
        total += 1
    return total


def gpu_bound(model: MilpModel, replicas: dict[tuple[str, str, str], int], cands: list[Option]) -> int:
    """The fewest GPUs any placement can use: the LP relaxation of the same model (constraints and cuts) with
    GPUs as the only cost (added units bring room, not GPUs used)."""
    gpus = copy.copy(model)
    gpus.cost = [0.0] * len(model.cost)
    for c in cands:
        gpus.cost[replicas[c.model, c.pop, c.gpu_type]] = float(c.gpus)
    return math.ceil(float(gpus.solve(relax=True).getInfo().objective_function_value) - 1e-6)
