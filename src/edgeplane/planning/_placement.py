"""Placement: replicas per model per PoP that survive any single PoP or metro failure, as a MILP on HiGHS."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgeplane._extras import require
from edgeplane.catalog import GPU_SPECS
from edgeplane.fleet import Fleet, UnitTemplate
from edgeplane.planning._capacity import replica_capacity
from edgeplane.planning._demand import Demand
from edgeplane.planning._groups import group_optimum

# Value of latency against GPU cost: dollars per hour for one request per second carried one millisecond
# further. 0.0002 makes one H100 (2 $/h) worth 10,000 rps x ms: latency decides among placements of about
# the same cost and never buys a GPU on its own unless it saves that much.
LATENCY_WEIGHT = 0.0002
MIP_REL_GAP = 0.01
# Branch-and-bound nodes the coupled MIP may explore: the budget is a count, so the same input gives the same
# plan on a busy machine or an idle one (the time limit stays as a safety net, and says so when it ends a search).
MIP_NODE_LIMIT = 20_000


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


class _Model:
    """Columns and rows gathered in Python, handed to HiGHS in one go."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.cost: list[float] = []
        self.integer: list[int] = []
        self.rows: list[tuple[list[int], list[float], float, float]] = []
        self.sums: list[tuple[int, list[int], list[float]]] = []  # columns defined as sums of others

    def column(self, cost: float, *, integer: bool = False, upper: float = math.inf) -> int:
        self.lower.append(0.0)
        self.upper.append(upper)
        self.cost.append(cost)
        if integer:
            self.integer.append(len(self.cost) - 1)
        return len(self.cost) - 1

    def row(self, indices: list[int], values: list[float], lower: float, upper: float) -> None:
        self.rows.append((indices, values, lower, upper))

    def sum_column(self, indices: list[int], values: list[float]) -> int:
        """A continuous column equal to ``sum(values[i] * x[indices[i]])``: rows that share a long sum name it
        once instead of repeating it (a sparse model solves several times faster than a dense one)."""
        column = self.column(0.0)
        self.row([*indices, column], [*values, -1.0], 0.0, 0.0)
        self.sums.append((column, indices, values))
        return column

    def complete(self, values: list[float]) -> None:
        """Set the sum columns of ``values`` from the columns they sum (a start the solver accepts)."""
        for column, indices, weights in self.sums:
            values[column] = sum(values[i] * w for i, w in zip(indices, weights, strict=True))

    def solve(
        self,
        *,
        relax: bool = False,
        time_limit_seconds: float = 60.0,
        node_limit: int | None = None,
        start: list[float] | None = None,
        gap: float = MIP_REL_GAP,
        known_bound: float = 0.0,
    ) -> Any:
        """``known_bound``: a lower bound on the optimum found elsewhere; the search stops as soon as its best
        placement is within ``gap`` of it (the solver's own bound may be far weaker)."""
        # The solver loads when a plan is made, not with the control plane (a gateway-only install has none).
        highspy = require("highspy", "plan", "planning")
        h: Any = highspy.Highs()
        h.setOptionValue("output_flag", False)
        h.setOptionValue("mip_rel_gap", gap)
        h.setOptionValue("time_limit", time_limit_seconds)  # a safety net: the node limit ends a search first
        if node_limit is not None:
            h.setOptionValue("mip_max_nodes", node_limit)
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
        if start is not None and not relax:
            solution = highspy.HighsSolution()
            solution.col_value = start
            h.setSolution(solution)
        if known_bound > 0 and not relax:

            def enough(event: Any) -> None:
                best = float(event.data_out.mip_primal_bound)
                if math.isfinite(best) and best - known_bound <= gap * abs(best):
                    event.data_in.user_interrupt = True

            h.cbMipInterrupt.subscribe(enough)
        h.run()
        return h


@dataclass(frozen=True, slots=True)
class Growth:
    """Units that may be added: at each PoP listed, up to any number of ``template`` units, at least
    ``committed`` of them (already ordered), each priced ``unit_weight`` in the objective."""

    template: UnitTemplate
    committed: Mapping[str, int]  # PoP -> units already ordered there
    unit_weight: float = 1000.0  # a unit costs more than any GPU-hour saving: add as few as will do


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


def candidates(fleet: Fleet, demand: Sequence[Demand], growth: Growth | None = None) -> list[_Candidate]:
    """Where each demanded model can run: each GPU type it fits at a PoP (or in units that may be added
    there), in a continent that demands it."""
    mix = _token_mix(demand)
    wanted = {(fleet.continent_of(d.metro).code, d.model) for d in demand if d.requests_per_second > 0}
    found = []
    for model, (prompt, output) in mix.items():
        spec = fleet.model_by_name[model]
        for pop in fleet.pops:
            if (fleet.continent_of(pop.metro).code, model) not in wanted:
                continue
            types = set(pop.gpus_by_type())
            if growth is not None and pop.code in growth.committed:
                types |= set(growth.template.gpus_by_type())
            for gpu_type in sorted(types):
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


def _by_continent_and_model(fleet: Fleet, cands: list[_Candidate]) -> dict[tuple[str, str], list[_Candidate]]:
    """Candidates per (continent, model): the groups the survivability rows, bounds and greedy start work on."""
    groups: dict[tuple[str, str], list[_Candidate]] = {}
    for c in cands:
        groups.setdefault((fleet.continent_of(fleet.pop_by_code[c.pop].metro).code, c.model), []).append(c)
    return groups


def _continent_demand(fleet: Fleet, demand: Sequence[Demand]) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for d in demand:
        key = (fleet.continent_of(d.metro).code, d.model)
        totals[key] = totals.get(key, 0.0) + d.requests_per_second
    return totals


def _mean_rtt(fleet: Fleet, demand: Sequence[Demand]) -> dict[tuple[str, str], float]:
    """Per (model, PoP): the demand-weighted RTT from the metros of its continent that ask for the model."""
    weights: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for d in demand:
        if d.requests_per_second > 0:
            weights.setdefault((fleet.continent_of(d.metro).code, d.model), []).append((d.metro, d.requests_per_second))
    sited: dict[str, set[str]] = {}  # continent -> metros with PoPs
    for pop in fleet.pops:
        sited.setdefault(fleet.continent_of(pop.metro).code, set()).add(pop.metro)
    between: dict[tuple[str, str], float] = {}
    rtt: dict[tuple[str, str], float] = {}
    for (continent, name), metros in weights.items():
        total = sum(w for _, w in metros)
        at_metro: dict[str, float] = {}
        for target in sited.get(continent, ()):
            weighted = 0.0
            for m, w in metros:
                if (m, target) not in between:
                    between[m, target] = fleet.metro_rtt_ms(m, target)
                weighted += w * between[m, target]
            at_metro[target] = weighted / total
        for pop in fleet.pops:
            if pop.metro in at_metro:
                rtt[name, pop.code] = at_metro[pop.metro]
    return rtt


def _build(
    fleet: Fleet,
    demand: Sequence[Demand],
    cands: list[_Candidate],
    *,
    latency_weight: float,
    slack: bool,
    gpus_only: bool,
    hardware: bool = True,
    growth: Growth | None = None,
    units: dict[str, int] | None = None,
) -> tuple[_Model, dict[tuple[str, str, str], int], list[tuple[int, dict[str, Any]]]]:
    """The MILP. Latency enters as a price per replica: its capacity times the demand-weighted RTT to it from
    the metros that ask for its model, which pulls replicas toward their users without flow variables (the
    covering structure stays small enough to solve fleets of hundreds of PoPs in seconds)."""
    model = _Model()
    replicas: dict[tuple[str, str, str], int] = {}
    rtt = _mean_rtt(fleet, demand)
    for c in cands:
        cost = c.gpus if gpus_only else c.gpus * GPU_SPECS[c.gpu_type].cost_per_hour_usd
        if not gpus_only:
            cost += latency_weight * c.capacity_rps * rtt.get((c.model, c.pop), 0.0)
        replicas[c.model, c.pop, c.gpu_type] = model.column(cost, integer=True)
    by_site: dict[str, list[_Candidate]] = {}
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
    by_group = _by_continent_and_model(fleet, cands)
    for (continent, name), rps in _continent_demand(fleet, demand).items():
        if rps <= 0:
            continue
        here = by_group.get((continent, name), [])
        # Capacity in the continent and at each of its PoPs, named once: a failure takes its PoPs' share.
        at_pop: dict[str, list[_Candidate]] = {}
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
            total = _replicas_needed(
                rps, max(c.capacity_rps for c in here), len({fleet.pop_by_code[c.pop].metro for c in here})
            )
            model.row([replicas[c.model, c.pop, c.gpu_type] for c in here], [1.0] * len(here), total, math.inf)
    return model, replicas, slacks


def _replicas_needed(rps: float, best_capacity_rps: float, metros: int) -> int:
    """The fewest replicas that can leave ``rps`` of capacity after losing any one of ``metros`` metros."""
    need = math.ceil(rps / best_capacity_rps - 1e-9)
    total = need
    while metros > 1 and total - math.ceil(total / metros) < need:
        total += 1
    return total


def _greedy(
    fleet: Fleet,
    demand: Sequence[Demand],
    cands: list[_Candidate],
    seed: Mapping[tuple[str, str, str], int] | None = None,
) -> dict[tuple[str, str, str], int] | None:
    """A quick feasible placement to start the solver from: per continent and model, replicas spread round-robin
    over the metros (nearest to the demand first) until any one metro or PoP can fail. None if it runs out.
    ``seed``: replicas already placed (that fit the hardware), completed rather than replaced."""
    free = {(p.code, t): float(n) for p in fleet.pops for t, n in p.gpus_by_type().items()}
    power = {p.code: sum(u.power_kw for u in p.units) for p in fleet.pops}
    rtt = _mean_rtt(fleet, demand)
    chosen: dict[tuple[str, str, str], int] = dict(seed or {})
    for c in cands:
        n = chosen.get((c.model, c.pop, c.gpu_type), 0)
        free[c.pop, c.gpu_type] -= n * c.gpus
        power[c.pop] -= n * c.gpus * GPU_SPECS[c.gpu_type].power_kw
    groups = _by_continent_and_model(fleet, cands)
    needs = _continent_demand(fleet, demand)
    order = sorted(needs, key=lambda k: -needs[k] * fleet.model_by_name[k[1]].gpus_per_replica)
    for key in order:
        rps, here = needs[key], groups.get(key, [])
        if rps <= 0:
            continue
        metro_of = {c.pop: fleet.pop_by_code[c.pop].metro for c in here}
        metro_cap: dict[str, float] = {}
        pop_count: dict[str, int] = {}
        metro_count: dict[str, int] = {}
        total = 0.0
        for c in here:
            n = chosen.get((c.model, c.pop, c.gpu_type), 0)
            if n:
                metro = metro_of[c.pop]
                metro_cap[metro] = metro_cap.get(metro, 0.0) + n * c.capacity_rps
                metro_count[metro] = metro_count.get(metro, 0) + n
                pop_count[c.pop] = pop_count.get(c.pop, 0) + n
                total += n * c.capacity_rps
        while not metro_cap or total - max(metro_cap.values()) < rps - 1e-9:
            usable = [
                c for c in here
                if free[c.pop, c.gpu_type] >= c.gpus and power[c.pop] >= c.gpus * GPU_SPECS[c.gpu_type].power_kw
            ]  # fmt: skip
            if not usable:
                return None
            best = min(
                usable,
                key=lambda c: (
                    metro_count.get(metro_of[c.pop], 0),  # spread over metros first
                    rtt.get((c.model, c.pop), 0.0),  # then nearest to the demand
                    pop_count.get(c.pop, 0),  # then over a metro's PoPs
                    -c.capacity_rps / (c.gpus * GPU_SPECS[c.gpu_type].cost_per_hour_usd),
                ),
            )
            chosen[best.model, best.pop, best.gpu_type] = chosen.get((best.model, best.pop, best.gpu_type), 0) + 1
            free[best.pop, best.gpu_type] -= best.gpus
            power[best.pop] -= best.gpus * GPU_SPECS[best.gpu_type].power_kw
            metro = metro_of[best.pop]
            metro_cap[metro] = metro_cap.get(metro, 0.0) + best.capacity_rps
            metro_count[metro] = metro_count.get(metro, 0) + 1
            pop_count[best.pop] = pop_count.get(best.pop, 0) + 1
            total += best.capacity_rps
            if len(metro_cap) == 1 and len({metro_of[c.pop] for c in here}) == 1:
                return None  # one metro only: its failure leaves nothing, no placement survives it
        _tighten(chosen, here, rps, metro_of, free, power)
    return chosen


def _tighten(
    chosen: dict[tuple[str, str, str], int],
    here: list[_Candidate],
    rps: float,
    metro_of: dict[str, str],
    free: dict[tuple[str, str], float],
    power: dict[str, float],
) -> None:
    """Local search on one continent and model: drop replicas, or move them to a cheaper GPU type at the same
    PoP, while every single failure still leaves ``rps``. The greedy spreads first; this takes back the excess."""

    def survives() -> bool:
        per_metro: dict[str, float] = {}
        for c in here:
            n = chosen.get((c.model, c.pop, c.gpu_type), 0)
            if n:
                per_metro[metro_of[c.pop]] = per_metro.get(metro_of[c.pop], 0.0) + n * c.capacity_rps
        total = sum(per_metro.values())
        return bool(per_metro) and total - max(per_metro.values()) >= rps - 1e-9

    def price(c: _Candidate) -> float:
        return c.gpus * GPU_SPECS[c.gpu_type].cost_per_hour_usd

    improved = True
    while improved:
        improved = False
        for c in sorted(here, key=price, reverse=True):
            key = (c.model, c.pop, c.gpu_type)
            if not chosen.get(key):
                continue
            chosen[key] -= 1
            if survives():  # not needed at all
                free[c.pop, c.gpu_type] += c.gpus
                power[c.pop] += c.gpus * GPU_SPECS[c.gpu_type].power_kw
                improved = True
                continue
            for other in sorted(here, key=price):  # a cheaper type at the same PoP
                if other.pop != c.pop or price(other) >= price(c) or free[other.pop, other.gpu_type] < other.gpus:
                    continue
                swap = (other.model, other.pop, other.gpu_type)
                chosen[swap] = chosen.get(swap, 0) + 1
                if survives():
                    free[other.pop, other.gpu_type] -= other.gpus
                    free[c.pop, c.gpu_type] += c.gpus
                    power[c.pop] += (
                        c.gpus * GPU_SPECS[c.gpu_type].power_kw - other.gpus * GPU_SPECS[other.gpu_type].power_kw
                    )
                    improved = True
                    break
                chosen[swap] -= 1
            else:
                chosen[key] += 1


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


def _diagnose(fleet: Fleet, demand: Sequence[Demand], cands: list[_Candidate]) -> PlacementError:
    model, _, slacks = _build(fleet, demand, cands, latency_weight=0.0, slack=True, gpus_only=True)
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
    model, replicas, _ = _build(
        fleet, demand, cands, latency_weight=latency_weight, slack=False, gpus_only=False, growth=growth, units=units
    )
    decomposed, complete, optimal, group_bound = (
        _by_group(fleet, demand, cands, latency_weight) if growth is None else (None, False, False, 0.0)
    )
    if decomposed is not None and complete and _fits(fleet, cands, decomposed):
        # Each continent and model solved on its own, one after another within the hardware the ones before
        # left; when that is within the gap of the groups' bound (or is their joint optimum: they fitted as
        # they were), no need for the coupled model.
        values = [0.0] * len(model.cost)
        for key, count in decomposed.items():
            values[replicas[key]] = float(count)
        objective = sum(v * c for v, c in zip(values, model.cost, strict=True))
        if optimal or objective - group_bound <= MIP_REL_GAP * objective:
            status = "Optimal (decomposed)" if optimal else "Optimal (within the gap of the per-group bound)"
            lower = _gpu_bound(model, replicas, cands)
            return _plan(fleet, demand, cands, replicas, values, status, objective, group_bound, started, lower)
    # Start the search from the groups' optima where they fit, completed by the greedy where they do not.
    start = _greedy(fleet, demand, cands, seed=decomposed) if decomposed is not None else None
    if start is None and growth is None:
        start = _greedy(fleet, demand, cands)
    initial = None
    if start is not None:
        initial = [0.0] * len(model.cost)
        for key, count in start.items():
            initial[replicas[key]] = float(count)
        model.complete(initial)
    relaxing = time.perf_counter()
    # A bound even if the search is cut short: the groups' (far stronger), or else the LP relaxation's.
    relaxed = group_bound or float(model.solve(relax=True).getInfo().objective_function_value)
    lower = _gpu_bound(model, replicas, cands)
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


def _by_group(
    fleet: Fleet, demand: Sequence[Demand], cands: list[_Candidate], latency_weight: float
) -> tuple[dict[tuple[str, str, str], int] | None, bool, bool, float]:
    """Each continent and model on its own (they share only the hardware), exactly (planning._groups): the sum
    of their optima is a lower bound on the whole. Their replicas per metro and GPU type are then spread over
    the metros' PoPs within the hardware; when they all fit, that is the whole's optimum. When they do not,
    the groups are solved again one after another, largest first, each exactly within the GPUs per metro and
    type the ones before left. Returns that placement (None when a group has no solution), whether it is
    complete (every group placed and spread), whether it is optimal, and the bound."""
    groups = _by_continent_and_model(fleet, cands)
    needs = _continent_demand(fleet, demand)
    rtt = _mean_rtt(fleet, demand)
    bound = 0.0
    wanted: list[tuple[_Candidate, str, int]] = []  # (a candidate of the group, metro, replicas)
    solved = True
    shapes: dict[tuple[str, str], tuple[dict[str, float], dict[tuple[str, str], float], dict[str, _Candidate]]] = {}
    for key, here in groups.items():
        rps = needs.get(key, 0.0)
        if rps <= 0:
            continue
        capacity: dict[str, float] = {}
        cost: dict[tuple[str, str], float] = {}
        sample: dict[str, _Candidate] = {}
        for c in here:
            metro = fleet.pop_by_code[c.pop].metro
            capacity[c.gpu_type] = c.capacity_rps
            price = c.gpus * GPU_SPECS[c.gpu_type].cost_per_hour_usd
            cost[metro, c.gpu_type] = price + latency_weight * c.capacity_rps * rtt.get((c.model, c.pop), 0.0)
            sample[c.gpu_type] = c
        shapes[key] = (capacity, cost, sample)
        found = group_optimum(rps, capacity, cost)
        if found is None:
            return None, False, False, 0.0
        bound += found.bound
        solved = solved and found.exact
        wanted += [(sample[gpu_type], metro, n) for (metro, gpu_type), n in found.replicas.items()]
    chosen, complete = _spread(fleet, cands, wanted)
    if complete:
        return chosen, True, solved, bound
    # One after another within what is left, the groups that need the most GPUs first.
    room: dict[tuple[str, str], float] = {}
    for pop in fleet.pops:
        for gpu_type, count in pop.gpus_by_type().items():
            room[pop.metro, gpu_type] = room.get((pop.metro, gpu_type), 0.0) + count
    wanted, placed_all = [], True
    for key in sorted(shapes, key=lambda k: -needs[k] * fleet.model_by_name[k[1]].gpus_per_replica):
        capacity, cost, sample = shapes[key]
        limit = {(m, t): int(room[m, t] // sample[t].gpus) for m, t in cost}
        found = group_optimum(needs[key], capacity, cost, limit=limit)
        if found is None:
            placed_all = False  # no room left for it as a whole: the greedy completes it
            continue
        for (metro, gpu_type), n in found.replicas.items():
            room[metro, gpu_type] -= n * sample[gpu_type].gpus
            wanted.append((sample[gpu_type], metro, n))
    chosen, complete = _spread(fleet, cands, wanted)
    return chosen, complete and placed_all, False, bound


def _spread(
    fleet: Fleet, cands: list[_Candidate], wanted: list[tuple[_Candidate, str, int]]
) -> tuple[dict[tuple[str, str, str], int], bool]:
    """Replicas per metro and GPU type onto the metro's PoPs, largest models first, each to the PoP with the
    most GPUs of its type free (and the power for them). What fits, and whether that is all of it."""
    free = {(p.code, t): float(n) for p in fleet.pops for t, n in p.gpus_by_type().items()}
    power = {p.code: sum(u.power_kw for u in p.units) for p in fleet.pops}
    sites = {(c.model, c.gpu_type, fleet.pop_by_code[c.pop].metro, c.pop) for c in cands}
    where: dict[tuple[str, str, str], list[str]] = {}
    for model, gpu_type, metro, pop in sorted(sites):
        where.setdefault((model, gpu_type, metro), []).append(pop)
    chosen: dict[tuple[str, str, str], int] = {}
    complete = True
    for c, metro, n in sorted(wanted, key=lambda w: -w[0].gpus):
        kw = c.gpus * GPU_SPECS[c.gpu_type].power_kw
        for _ in range(n):
            room = [
                p for p in where.get((c.model, c.gpu_type, metro), [])
                if free[p, c.gpu_type] >= c.gpus and power[p] >= kw - 1e-9
            ]  # fmt: skip
            if not room:
                complete = False
                break
            pop = max(room, key=lambda p: (free[p, c.gpu_type], power[p]))
            free[pop, c.gpu_type] -= c.gpus
            power[pop] -= kw
            chosen[c.model, pop, c.gpu_type] = chosen.get((c.model, pop, c.gpu_type), 0) + 1
    return chosen, complete


def _gpu_bound(model: _Model, replicas: dict[tuple[str, str, str], int], cands: list[_Candidate]) -> int:
    """The fewest GPUs any placement can use: the LP relaxation of the same model (constraints and cuts) with
    GPUs as the only cost (added units bring room, not GPUs used)."""
    gpus = copy.copy(model)
    gpus.cost = [0.0] * len(model.cost)
    for c in cands:
        gpus.cost[replicas[c.model, c.pop, c.gpu_type]] = float(c.gpus)
    return math.ceil(float(gpus.solve(relax=True).getInfo().objective_function_value) - 1e-6)


def _fits(fleet: Fleet, cands: list[_Candidate], chosen: dict[tuple[str, str, str], int]) -> bool:
    gpus: dict[tuple[str, str], float] = {}
    power: dict[str, float] = {}
    for c in cands:
        n = chosen.get((c.model, c.pop, c.gpu_type), 0)
        if n:
            gpus[c.pop, c.gpu_type] = gpus.get((c.pop, c.gpu_type), 0.0) + n * c.gpus
            power[c.pop] = power.get(c.pop, 0.0) + n * c.gpus * GPU_SPECS[c.gpu_type].power_kw
    for pop in fleet.pops:
        if power.get(pop.code, 0.0) > sum(u.power_kw for u in pop.units) + 1e-9:
            return False
        for gpu_type, count in pop.gpus_by_type().items():
            if gpus.get((pop.code, gpu_type), 0.0) > count:
                return False
    return True


def _plan(
    fleet: Fleet,
    demand: Sequence[Demand],
    cands: list[_Candidate],
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
