"""Placements found without the MILP: the exact per-group optima spread over PoPs, and a greedy start."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgeplane.catalog import GPU_SPECS
from edgeplane.fleet import Fleet
from edgeplane.planning._demand import Demand
from edgeplane.planning._groups import group_optimum
from edgeplane.planning._options import Option, by_continent_and_model, continent_demand, mean_rtt


def greedy(
    fleet: Fleet,
    demand: Sequence[Demand],
    cands: list[Option],
    seed: Mapping[tuple[str, str, str], int] | None = None,
) -> dict[tuple[str, str, str], int] | None:
    """A quick feasible placement to start the solver from: per continent and model, replicas spread round-robin
    over the metros (nearest to the demand first) until any one metro or PoP can fail. None if it runs out.
    ``seed``: replicas already placed (that fit the hardware), completed rather than replaced."""
    free = {(p.code, t): float(n) for p in fleet.pops for t, n in p.gpus_by_type().items()}
    power = {p.code: sum(u.power_kw for u in p.units) for p in fleet.pops}
    rtt = mean_rtt(fleet, demand)
    chosen: dict[tuple[str, str, str], int] = dict(seed or {})
    for c in cands:
        n = chosen.get((c.model, c.pop, c.gpu_type), 0)
        free[c.pop, c.gpu_type] -= n * c.gpus
        power[c.pop] -= n * c.gpus * GPU_SPECS[c.gpu_type].power_kw
    groups = by_continent_and_model(fleet, cands)
    needs = continent_demand(fleet, demand)
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
    here: list[Option],
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

    def price(c: Option) -> float:
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


def by_group(
    fleet: Fleet, demand: Sequence[Demand], cands: list[Option], latency_weight: float
) -> tuple[dict[tuple[str, str, str], int] | None, bool, bool, float]:
    """Each continent and model on its own (they share only the hardware), exactly (planning._groups): the sum
    of their optima is a lower bound on the whole. Their replicas per metro and GPU type are then spread over
    the metros' PoPs within the hardware; when they all fit, that is the whole's optimum. When they do not,
    the groups are solved again one after another, largest first, each exactly within the GPUs per metro and
    type the ones before left. Returns that placement (None when a group has no solution), whether it is
    complete (every group placed and spread), whether it is optimal, and the bound."""
    groups = by_continent_and_model(fleet, cands)
    needs = continent_demand(fleet, demand)
    rtt = mean_rtt(fleet, demand)
    bound = 0.0
    wanted: list[tuple[Option, str, int]] = []  # (a candidate of the group, metro, replicas)
    solved = True
    shapes: dict[tuple[str, str], tuple[dict[str, float], dict[tuple[str, str], float], dict[str, Option]]] = {}
    for key, here in groups.items():
        rps = needs.get(key, 0.0)
        if rps <= 0:
            continue
        capacity: dict[str, float] = {}
        cost: dict[tuple[str, str], float] = {}
        sample: dict[str, Option] = {}
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
    fleet: Fleet, cands: list[Option], wanted: list[tuple[Option, str, int]]
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


def fits(fleet: Fleet, cands: list[Option], chosen: dict[tuple[str, str, str], int]) -> bool:
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
