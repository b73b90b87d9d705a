"""What a placement chooses from: each model at each PoP on each GPU type that can serve it, and the
failures it must survive."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edgeplane.fleet import Fleet, UnitTemplate
from edgeplane.planning._capacity import replica_capacity
from edgeplane.planning._demand import Demand


@dataclass(frozen=True, slots=True)
class Growth:
    """Units that may be added: at each PoP listed, up to any number of ``template`` units, at least
    ``committed`` of them (already ordered), each priced ``unit_weight`` in the objective."""

    template: UnitTemplate
    committed: Mapping[str, int]  # PoP -> units already ordered there
    unit_weight: float = 1000.0  # a unit costs more than any GPU-hour saving: add as few as will do


@dataclass(frozen=True, slots=True)
class Option:
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


def candidates(fleet: Fleet, demand: Sequence[Demand], growth: Growth | None = None) -> list[Option]:
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
                    found.append(Option(model, pop.code, gpu_type, spec.gpus_per_replica, capacity))
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


def by_continent_and_model(fleet: Fleet, cands: list[Option]) -> dict[tuple[str, str], list[Option]]:
    """Candidates per (continent, model): the groups the survivability rows, bounds and greedy start work on."""
    groups: dict[tuple[str, str], list[Option]] = {}
    for c in cands:
        groups.setdefault((fleet.continent_of(fleet.pop_by_code[c.pop].metro).code, c.model), []).append(c)
    return groups


def continent_demand(fleet: Fleet, demand: Sequence[Demand]) -> dict[tuple[str, str], float]:
    totals: dict[tuple[str, str], float] = {}
    for d in demand:
        key = (fleet.continent_of(d.metro).code, d.model)
        totals[key] = totals.get(key, 0.0) + d.requests_per_second
    return totals


def mean_rtt(fleet: Fleet, demand: Sequence[Demand]) -> dict[tuple[str, str], float]:
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
