"""Placement: replicas per model per PoP that survive any single PoP or metro failure, as a MILP on HiGHS."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgeplane.catalog import GPU_SPECS
from edgeplane.fleet import Fleet
from edgeplane.planning._demand import Demand
from edgeplane.planning._heuristics import by_group, fits, greedy
from edgeplane.planning._milp import build_model, gpu_bound
from edgeplane.planning._options import Growth, Option, candidates
from edgeplane.planning._solver import MIP_NODE_LIMIT, MIP_REL_GAP

# Value of latency against GPU cost: dollars per hour for one request per second carried one millisecond
# further. 0.0002 makes one H100 (2 $/h) worth 10,000 rps x ms: latency decides among placements of about
# the same cost and never buys a GPU on its own unless it saves that much.
LATENCY_WEIGHT = 0.0002


class PlacementError(ValueError):
    """No placement meets the demand; ``shortfalls`` say what cannot be met and by how much."""

    def __init__(self, message: str, shortfalls: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.shortfalls = shortfalls


@dataclass(frozen=True, slots=True)
class Placed:
    model: str
    pop: str
    replicas: int
    gpus: int
    gpu_type: str
    replica_capacity_rps: float

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "pop": self.pop,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "gpu_type": self.gpu_type,
            "replica_capacity_rps": round(self.replica_capacity_rps, 4),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    placement: list[Placed]
    gpus_used: int
    lower_bound_gpus: int
    gap: float  # (gpus_used - lower_bound_gpus) / lower_bound_gpus: proven, the bound being an LP relaxation
    mip_gap: float  # HiGHS's proven relative gap on the whole objective (cost + latency)
    cost_per_hour_usd: float
    latency_ms_weighted: float  # demand-weighted mean client-to-site RTT, no failure
    solve_seconds: float
    status: str
    capacity: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (model, pop, GPU type) -> rps
    units_added: dict[str, int] = field(default_factory=dict)  # growth: PoP -> units added there

    def to_json(self) -> dict[str, Any]:
        return {
            "placement": [p.to_json() for p in self.placement],
            "gpus_used": self.gpus_used,
            "lower_bound_gpus": self.lower_bound_gpus,
            "gap": round(self.gap, 6),
            "mip_gap": round(self.mip_gap, 6),
            "cost_per_hour_usd": round(self.cost_per_hour_usd, 2),
            "mean_latency_ms": round(self.latency_ms_weighted, 3),
            "solve_seconds": round(self.solve_seconds, 3),
            "status": self.status,
            **({"units_added": dict(self.units_added)} if self.units_added else {}),
        }


def _route(fleet: Fleet, demand: Sequence[Demand], placed: list[Placed]) -> float:
    """Demand-weighted RTT with no failure, each metro served from the nearest capacity left (as the gateway
    stays as close as it can)."""
    left: dict[tuple[str, str], float] = {}
    sites: dict[tuple[str, str], set[str]] = {}  # (model, continent) -> PoPs with that model
    for p in placed:
        left[p.model, p.pop] = left.get((p.model, p.pop), 0.0) + p.replicas * p.replica_capacity_rps
        sites.setdefault((p.model, fleet.continent_of(fleet.pop_by_code[p.pop].metro).code), set()).add(p.pop)
    weighted, total = 0.0, 0.0
    for d in sorted(demand, key=lambda d: -d.requests_per_second):
        need = d.requests_per_second
        total += need
        near = sorted(
            (fleet.metro_rtt_ms(d.metro, fleet.pop_by_code[pop].metro), pop)
            for pop in sites.get((d.model, fleet.continent_of(d.metro).code), ())
        )
        for rtt, pop in near:
            take = min(need, left[d.model, pop])
            left[d.model, pop] -= take
            weighted += take * rtt
            need -= take
            if need <= 1e-9:
                break
    return weighted / total if total else 0.0


def _diagnose(fleet: Fleet, demand: Sequence[Demand], cands: list[Option]) -> PlacementError:
    model, _, slacks = build_model(fleet, demand, cands, latency_weight=0.0, slack=True, gpus_only=True)
    for column, _ in slacks:
        model.cost[column] = 1e6  # shortfall first, GPUs second
    h = model.solve(relax=True)
    if h.modelStatusToString(h.getModelStatus()) != "Optimal":
        return PlacementError(
            f"no placement meets the demand (the solver says: {h.modelStatusToString(h.getModelStatus())})", []
        )
    values = h.getSolution().col_value
    short = [{**info, "short_rps": round(values[column], 3)} for column, info in slacks if values[column] > 1e-6]
    short.sort(key=lambda s: -s["short_rps"])
    if not short:
        return PlacementError("no placement found within the time limit", [])
    first = short[0]
    message = (
        f"no placement meets the demand: {first['model']} in continent {first['continent']} with {first['scenario']}"
        f" failed is short by {first['short_rps']} of {first['demand_rps']:g} requests/s"
    )
    if len(short) > 1:
        message += f" (and {len(short) - 1} more shortfalls)"
    return PlacementError(message, short)


def place(
    fleet: Fleet,
    demand: Sequence[Demand],
    *,
    latency_weight: float = LATENCY_WEIGHT,
    time_limit_seconds: float = 60.0,
    node_limit: int = MIP_NODE_LIMIT,
    growth: Growth | None = None,
) -> Plan:
    """The cheapest placement (GPU cost plus demand-weighted latency) that survives every single PoP and
    metro failure; PlacementError says what cannot be met, and by how much, when none does. With ``growth``,
    units may be added where it allows, as few as will do (`Plan.units_added`)."""
    started = time.perf_counter()
    cands = candidates(fleet, demand, growth)
    placeable = {c.model for c in cands}
    for d in demand:
        if d.requests_per_second > 0 and d.model not in placeable:
            raise PlacementError(
                f"{d.model} fits no GPU type of the fleet within its SLO ({d.requests_per_second:g} requests/s"
                f" from {d.metro} cannot be served anywhere)",
                [{"model": d.model, "metro": d.metro, "short_rps": d.requests_per_second}],
            )
    units: dict[str, int] = {}
    model, replicas, _ = build_model(
        fleet, demand, cands, latency_weight=latency_weight, slack=False, gpus_only=False, growth=growth, units=units
    )
    decomposed, complete, optimal, group_bound = (
        by_group(fleet, demand, cands, latency_weight) if growth is None else (None, False, False, 0.0)
    )
    if decomposed is not None and complete and fits(fleet, cands, decomposed):
        # Each continent and model solved on its own, one after another within the hardware the ones before
        # left; when that is within the gap of the groups' bound (or is their joint optimum: they fitted as
        # they were), no need for the coupled model.
        values = [0.0] * len(model.cost)
        for key, count in decomposed.items():
            values[replicas[key]] = float(count)
        objective = sum(v * c for v, c in zip(values, model.cost, strict=True))
        if optimal or objective - group_bound <= MIP_REL_GAP * objective:
            status = "Optimal (decomposed)" if optimal else "Optimal (within the gap of the per-group bound)"
            lower = gpu_bound(model, replicas, cands)
            return _plan(fleet, demand, cands, replicas, values, status, objective, group_bound, started, lower)
    # Start the search from the groups' optima where they fit, completed by the greedy where they do not.
    start = greedy(fleet, demand, cands, seed=decomposed) if decomposed is not None else None
    if start is None and growth is None:
        start = greedy(fleet, demand, cands)
    initial = None
    if start is not None:
        initial = [0.0] * len(model.cost)
        for key, count in start.items():
            initial[replicas[key]] = float(count)
        model.complete(initial)
    relaxing = time.perf_counter()
    # A bound even if the search is cut short: the groups' (far stronger), or else the LP relaxation's.
    relaxed = group_bound or float(model.solve(relax=True).getInfo().objective_function_value)
    lower = gpu_bound(model, replicas, cands)
    reserve = 0.5 + (time.perf_counter() - relaxing) / 2  # for the routing and the report after the search
    left = time_limit_seconds - (time.perf_counter() - started) - reserve
    h = model.solve(time_limit_seconds=max(1.0, left), node_limit=node_limit, start=initial, known_bound=group_bound)
    status = h.modelStatusToString(h.getModelStatus())
    if status == "Interrupted by user":
        status = "Optimal (within the gap of the per-group bound)"
    values = list(h.getSolution().col_value)
    if status == "Solution limit reached":
        status = "Node limit reached"
    if (
        not status.startswith(("Optimal", "Time limit", "Node limit"))
        or not values
        or not h.getInfo().primal_solution_status
    ):
        raise _diagnose(fleet, demand, cands)
    info = h.getInfo()
    bound = max(float(info.mip_dual_bound), group_bound, float(relaxed))
    objective = float(info.objective_function_value)
    plan = _plan(fleet, demand, cands, replicas, values, status, objective, bound, started, lower)
    added = {pop: round(values[column]) for pop, column in units.items() if round(values[column]) > 0}
    return replace(plan, units_added=added)


def _plan(
    fleet: Fleet,
    demand: Sequence[Demand],
    cands: list[Option],
    replicas: dict[tuple[str, str, str], int],
    values: list[float],
    status: str,
    objective: float,
    bound: float,
    started: float,
    lower: int,
) -> Plan:
    placed = []
    for c in cands:
        count = round(values[replicas[c.model, c.pop, c.gpu_type]])
        if count > 0:
            placed.append(Placed(c.model, c.pop, count, count * c.gpus, c.gpu_type, c.capacity_rps))
    gpus = sum(p.gpus for p in placed)
    return Plan(
        placement=placed,
        gpus_used=gpus,
        lower_bound_gpus=lower,
        gap=(gpus - lower) / lower if lower else 0.0,
        mip_gap=max(0.0, (objective - bound) / objective) if objective > 0 else 0.0,
        cost_per_hour_usd=sum(p.gpus * GPU_SPECS[p.gpu_type].cost_per_hour_usd for p in placed),
        latency_ms_weighted=_route(fleet, demand, placed),
        solve_seconds=time.perf_counter() - started,
        status=status,
        capacity={(c.model, c.pop, c.gpu_type): c.capacity_rps for c in cands},
    )
