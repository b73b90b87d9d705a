"""Placement: replicas per model per PoP that survive any single PoP or metro failure, as a MILP on HiGHS."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeplane.catalog import GPU_SPECS
from edgeplane.fleet import Fleet
from edgeplane.planning._capacity import replica_capacity
from edgeplane.planning._demand import Demand

# Value of latency against GPU cost: dollars per hour for one request per second carried one millisecond
# further. 0.0002 makes one H100 (2 $/h) worth 10,000 rps x ms: latency decides among placements of about
# the same cost and never buys a GPU on its own unless it saves that much.
LATENCY_WEIGHT = 0.0002
NEAREST_CANDIDATES = 6  # PoPs a metro's demand may be served from in the no-failure routing
MIP_REL_GAP = 0.01


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
        }


class _Model:
    """Columns and rows gathered in Python, handed to HiGHS in one go."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []

    def column(self, cost: float, *, integer: bool = False, upper: float = math.inf) -> int:
        self.lower.append(0.0)
        self.upper.append(upper)
        self.cost.append(cost)
        if integer:
            self.integer.append(len(self.cost) - 1)
        return len(self.cost) - 1

    def row(self, indices: list[int], values: list[float], lower: float, upper: float) -> None:
        self.rows.append((indices, values, lower, upper))

    def solve(self, *, relax: bool = False, time_limit_seconds: float = 60.0) -> Any:
        import highspy  # the solver loads only when a plan is made, not with the control plane

        h: Any = highspy.Highs()  # type: ignore[no-untyped-call]
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", MIP_REL_GAP)
        h.setOptionValue("time_limit", time_limit_seconds)
        h.setOptionValue("threads", 1)
        n = len(self.cost)
        h.addVars(n, np.array(self.lower), np.array(self.upper))
        h.changeColsCost(n, np.arange(n, dtype=np.int32), np.array(self.cost))
        if self.integer and not relax:
            kinds = np.array([highspy.HighsVarType.kInteger] * len(self.integer))
            h.changeColsIntegrality(len(self.integer), np.array(self.integer, dtype=np.int32), kinds)
        starts: list[int] = []
        indices: list[int] = []
        values: list[float] = []
        for row_indices, row_values, _, _ in self.rows:
            starts.append(len(indices))
            indices += row_indices
            values += row_values
        h.addRows(
            len(self.rows),
            np.array([r[2] for r in self.rows]),
            np.array([r[3] for r in self.rows]),
            len(indices),
            np.array(starts, dtype=np.int32),
            np.array(indices, dtype=np.int32),
            np.array(values, dtype=float),
        )
        h.run()
        return h


@dataclass(frozen=True, slots=True)
class _Candidate:
    model: str
    pop: str
    gpu_type: str
    gpus: int  # per replica
    capacity_rps: float  # of one replica


def _token_mix(demand: Sequence[Demand]) -> dict[str, tuple[int, int]]:
    """Per model, the demand-weighted prompt and output tokens (a replica's capacity depends on them)."""
    totals: dict[str, list[float]] = {}
    for d in demand:
        t = totals.setdefault(d.model, [0.0, 0.0, 0.0])
        weight = d.requests_per_second or 1e-9
        t[0] += weight
        t[1] += weight * d.prompt_tokens
        t[2] += weight * d.output_tokens
    return {m: (round(t[1] / t[0]), max(1, round(t[2] / t[0]))) for m, t in totals.items()}


def candidates(fleet: Fleet, demand: Sequence[Demand]) -> list[_Candidate]:
    """Where each demanded model can run: each GPU type it fits at a PoP, in a continent that demands it."""
    mix = _token_mix(demand)
    wanted = {(fleet.continent_of(d.metro).code, d.model) for d in demand if d.requests_per_second > 0}
    found = []
    for model, (prompt, output) in mix.items():
        spec = fleet.model_by_name[model]
        for pop in fleet.pops:
            if (fleet.continent_of(pop.metro).code, model) not in wanted:
                continue
            for gpu_type in pop.gpus_by_type():
                if not spec.fits(gpu_type):
                    continue
                capacity = replica_capacity(spec, gpu_type, prompt, output).requests_per_second
                if capacity > 0:
                    found.append(_Candidate(model, pop.code, gpu_type, spec.gpus_per_replica, capacity))
    return found


def failure_scenarios(fleet: Fleet, continent: str) -> list[tuple[str, frozenset[str]]]:
    """Every single PoP and metro failure inside a continent, as (name, PoPs lost)."""
    scenarios: list[tuple[str, frozenset[str]]] = []
    for metro in fleet.metros:
        if fleet.continent_of(metro.code).code != continent:
            continue
        pops = [p.code for p in fleet.pops_in(metro.code)]
        scenarios.append((f"metro {metro.code}", frozenset(pops)))
        if len(pops) > 1:
            scenarios += [(f"pop {p}", frozenset({p})) for p in pops]
    return scenarios


def _build(
    fleet: Fleet,
    demand: Sequence[Demand],
    cands: list[_Candidate],
    *,
    latency_weight: float,
    slack: bool,
    gpus_only: bool,
) -> tuple[_Model, dict[tuple[str, str, str], int], list[tuple[int, int, float]], list[tuple[int, dict[str, Any]]]]:
    model = _Model()
    replicas: dict[tuple[str, str, str], int] = {}
    for c in cands:
        cost = c.gpus if gpus_only else c.gpus * GPU_SPECS[c.gpu_type].cost_per_hour_usd
        replicas[c.model, c.pop, c.gpu_type] = model.column(cost, integer=True)
    # Hardware: GPUs per type and power per PoP.
    for site in fleet.pops:
        power_cols: list[int] = []
        power_vals: list[float] = []
        for gpu_type, count in site.gpus_by_type().items():
            pairs = [
                (replicas[c.model, c.pop, c.gpu_type], c.gpus)
                for c in cands
                if (c.pop, c.gpu_type) == (site.code, gpu_type)
            ]
            if pairs:
                model.row([i for i, _ in pairs], [float(g) for _, g in pairs], -math.inf, float(count))
                power_cols += [i for i, _ in pairs]
                power_vals += [g * GPU_SPECS[gpu_type].power_kw for _, g in pairs]
        if power_cols:
            model.row(power_cols, power_vals, -math.inf, sum(u.power_kw for u in site.units))
    # Survivability: every single failure in a continent leaves enough capacity there for all its demand.
    slacks: list[tuple[int, dict[str, Any]]] = []
    continent_demand: dict[tuple[str, str], float] = {}
    for d in demand:
        key = (fleet.continent_of(d.metro).code, d.model)
        continent_demand[key] = continent_demand.get(key, 0.0) + d.requests_per_second
    for (continent, name), rps in continent_demand.items():
        if rps <= 0:
            continue
        here = [
            c for c in cands if c.model == name and fleet.continent_of(fleet.pop_by_code[c.pop].metro).code == continent
        ]
        for scenario, lost in [("no failure", frozenset[str]()), *failure_scenarios(fleet, continent)]:
            columns = [replicas[c.model, c.pop, c.gpu_type] for c in here if c.pop not in lost]
            vals = [c.capacity_rps for c in here if c.pop not in lost]
            if slack:
                short = model.column(1.0)
                columns, vals = [*columns, short], [*vals, 1.0]
                info = {"continent": continent, "model": name, "scenario": scenario, "demand_rps": rps}
                slacks.append((short, info))
            model.row(columns, vals, rps, math.inf)
        # A valid cut (it holds for every integer placement, so the LP bound stays a bound): at least
        # `need` replicas must survive the worst metro failure, and by pigeonhole that failure takes at
        # least ceil(R / metros) of R replicas spread over the continent's metros.
        metros = {fleet.pop_by_code[c.pop].metro for c in here}
        need = math.ceil(rps / max(c.capacity_rps for c in here) - 1e-9) if here else 0
        total = need
        while len(metros) > 1 and total - math.ceil(total / len(metros)) < need:
            total += 1
        if here and total > 0 and not slack:
            model.row([replicas[c.model, c.pop, c.gpu_type] for c in here], [1.0] * len(here), total, math.inf)
    # Routing without failure, for the latency term: each metro's demand to its nearest candidate PoPs.
    flows: list[tuple[int, int, float]] = []  # (column, demand index, rtt)
    if not gpus_only and not slack:
        served: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for index, d in enumerate(demand):
            if d.requests_per_second <= 0:
                continue
            continent = fleet.continent_of(d.metro).code
            near = sorted(
                {
                    (fleet.metro_rtt_ms(d.metro, fleet.pop_by_code[c.pop].metro), c.pop)
                    for c in cands
                    if c.model == d.model and fleet.continent_of(fleet.pop_by_code[c.pop].metro).code == continent
                }
            )[:NEAREST_CANDIDATES]
            flow_cols: list[int] = []
            for rtt, code in near:
                column = model.column(latency_weight * rtt)
                flows.append((column, index, rtt))
                served.setdefault((d.model, code), []).append((column, 1.0))
                flow_cols.append(column)
            model.row(flow_cols, [1.0] * len(flow_cols), d.requests_per_second, d.requests_per_second)
        for (name, code), parts in served.items():
            at = [c for c in cands if c.model == name and c.pop == code]
            model.row(
                [c for c, _ in parts] + [replicas[name, code, c.gpu_type] for c in at],
                [1.0] * len(parts) + [-c.capacity_rps for c in at],
                -math.inf,
                0.0,
            )
    return model, replicas, flows, slacks


def _diagnose(fleet: Fleet, demand: Sequence[Demand], cands: list[_Candidate]) -> PlacementError:
    model, _, _, slacks = _build(fleet, demand, cands, latency_weight=0.0, slack=True, gpus_only=True)
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
) -> Plan:
    """The cheapest placement (GPU cost plus demand-weighted latency) that survives every single PoP and
    metro failure; PlacementError says what cannot be met, and by how much, when none does."""
    started = time.perf_counter()
    cands = candidates(fleet, demand)
    for d in demand:
        if d.requests_per_second > 0 and not any(c.model == d.model for c in cands):
            raise PlacementError(
                f"{d.model} fits no GPU type of the fleet within its SLO ({d.requests_per_second:g} requests/s"
                f" from {d.metro} cannot be served anywhere)",
                [{"model": d.model, "metro": d.metro, "short_rps": d.requests_per_second}],
            )
    model, replicas, flows, _ = _build(
        fleet, demand, cands, latency_weight=latency_weight, slack=False, gpus_only=False
    )
    h = model.solve(time_limit_seconds=time_limit_seconds)
    status = h.modelStatusToString(h.getModelStatus())
    values = h.getSolution().col_value
    if status not in ("Optimal", "Time limit reached") or not len(values):
        raise _diagnose(fleet, demand, cands)
    bound_model, _, _, _ = _build(fleet, demand, cands, latency_weight=0.0, slack=False, gpus_only=True)
    bound = bound_model.solve(relax=True)
    lower = math.ceil(bound.getInfo().objective_function_value - 1e-6)
    placed = []
    for c in cands:
        count = round(values[replicas[c.model, c.pop, c.gpu_type]])
        if count > 0:
            placed.append(Placed(c.model, c.pop, count, count * c.gpus, c.gpu_type, c.capacity_rps))
    gpus = sum(p.gpus for p in placed)
    total_rps = sum(d.requests_per_second for d in demand) or 1.0
    latency = sum(values[column] * rtt for column, _, rtt in flows) / total_rps
    cost = sum(p.gpus * GPU_SPECS[p.gpu_type].cost_per_hour_usd for p in placed)
    return Plan(
        placement=placed,
        gpus_used=gpus,
        lower_bound_gpus=lower,
        gap=(gpus - lower) / lower if lower else 0.0,
        mip_gap=float(h.getInfo().mip_gap),
        cost_per_hour_usd=cost,
        latency_ms_weighted=latency,
        solve_seconds=time.perf_counter() - started,
        status=status,
        capacity={(c.model, c.pop, c.gpu_type): c.capacity_rps for c in cands},
    )
