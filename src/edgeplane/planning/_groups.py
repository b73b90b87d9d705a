"""One continent and one model, exactly: the cheapest replicas per metro and GPU type such that losing any one
metro leaves the demand served. The groups share only hardware, so the sum of their optima bounds the whole
placement from below, far closer than its LP relaxation (which does not see that a small demand still needs
whole replicas in two metros); and when their solutions fit the hardware together, they are the optimum.

Without hardware, a metro's PoPs are interchangeable (same round trips, same replica speed) and a PoP's failure
takes less than its metro's, so only capacity per metro matters. Losing any metro leaves ``demand`` exactly
when, for some ``K``, every metro carries at most ``K`` and all together at least ``demand + K``. For each
candidate ``K`` (a capacity some metro's replicas add up to), a dynamic programme over the metros and the
replica count per GPU type finds the cheapest; the smallest over ``K`` is the optimum. ``K`` stops growing
once the cheapest capacity anywhere could not pay for ``demand + K``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-9
MAX_STATES = 200_000  # replica-count states per K; beyond this the group keeps its LP bound
# Levels of spare capacity K tried per group before the search settles for the best so far (with a bound);
# the groups of the 200-PoP benchmark need at most 7.
MAX_LEVELS = 256
MAX_CONFIGS = 400  # ways to fill one metro up to K


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class GroupOptimum:
    cost: float  # of the best placement found
    bound: float  # proven lower bound on the group's cost (== cost when exact)
    replicas: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (metro, GPU type) -> replicas

    @property
    def exact(self) -> bool:
        return self.bound >= self.cost - 1e-6 * max(1.0, abs(self.cost))


def group_optimum(
    demand_rps: float,
    capacity_rps: Mapping[str, float],
    cost: Mapping[tuple[str, str], float],
    *,
    max_levels: int = MAX_LEVELS,
    limit: Mapping[tuple[str, str], int] | None = None,
) -> GroupOptimum | None:
    """``capacity_rps`` per GPU type (one replica), ``cost`` per (metro, GPU type) replica (absent: not
    possible there), ``limit`` the most replicas a (metro, GPU type) can take (absent: no limit). None when
    no placement survives a metro failure (fewer than two metros), or when the state space is too large to
    enumerate (the caller keeps its LP bound)."""
    types = sorted(capacity_rps)
    metros = sorted({m for m, _ in cost})
    if demand_rps <= 0:
        return GroupOptimum(0.0, 0.0, {})
    if len(metros) < 2 or not types:
        return None
    caps = np.array([capacity_rps[t] for t in types])
    prices = np.array([[cost.get((m, t), math.inf) for t in types] for m in metros])
    unlimited = 1 << 30
    limits = np.array([[(limit or {}).get((m, t), unlimited) for t in types] for m in metros], dtype=np.int64)
    per_rps = float(np.min(prices / caps[None, :]))  # the cheapest capacity anywhere, per request/s
    least = demand_rps / (len(metros) - 1)  # K below this cannot hold demand + K in the metros there are
    best: tuple[float, dict[tuple[str, str], int]] | None = None
    tried: set[float] = set()
    for k in _levels(caps, least):
        if best is not None and per_rps * (demand_rps + k) >= best[0] - EPS:
            return GroupOptimum(best[0], best[0], best[1])  # no larger K can be cheaper: exact
        key = round(k, 9)
        if key not in tried and len(tried) >= max_levels:
            break  # a count, not the clock: the same input is cut at the same place on any machine
        if key in tried:
            continue
        tried.add(key)
        if best is None and k > 2 * demand_rps + 2 * float(caps.max()):
            return None  # two metros each holding the whole demand would have done: none can
        try:
            found = _cheapest(demand_rps, k, types, caps, metros, prices, limits)
        except _TooLarge:
            break
        if found is None:
            continue
        if best is None or found[0] < best[0]:
            best = found
    if best is None:
        return None
    # Cut short: anything better needs a larger K, whose capacity cannot cost less than this.
    bound = min(best[0], per_rps * (demand_rps + max(tried, default=least)))
    return GroupOptimum(best[0], bound, best[1])


def _levels(caps: np.ndarray, least: float) -> itertools.chain[float]:
    """Every capacity one metro's replicas can add up to, from ``least`` upward, in order (lazily: in bands)."""

    def band(low: float, high: float) -> list[float]:
        values: set[float] = set()
        for counts in _counts_up_to(caps, high):
            total = float(np.dot(counts, caps))
            if low - EPS <= total <= high + EPS:
                values.add(total)
        return sorted(values)

    def bands() -> itertools.chain[float]:
        low, step = least, float(caps.max())
        return itertools.chain.from_iterable(band(low + i * step, low + (i + 1) * step) for i in itertools.count())

    return bands()


def _counts_up_to(caps: np.ndarray, limit: float) -> list[np.ndarray]:
    """Every replica-count vector whose capacity is at most ``limit``."""
    out: list[np.ndarray] = []

    def walk(index: int, prefix: list[int], used: float) -> None:
        if index == len(caps):
            out.append(np.array(prefix, dtype=np.int64))
            return
        n = 0
        while used + n * caps[index] <= limit + EPS:
            walk(index + 1, [*prefix, n], used + n * caps[index])
            n += 1

    walk(0, [], 0.0)
    return out


def _cheapest(
    demand_rps: float,
    k: float,
    types: list[str],
    caps: np.ndarray,
    metros: list[str],
    prices: np.ndarray,
    limits: np.ndarray,
) -> tuple[float, dict[tuple[str, str], int]] | None:
    """The cheapest replicas with every metro at most ``k`` and all together at least ``demand_rps + k``."""
    need = demand_rps + k
    # No minimal solution has more of a type than covers the need on its own (one fewer would still do).
    top = [math.ceil(need / c - EPS) for c in caps]
    shape = tuple(n + 1 for n in top)
    if math.prod(shape) > MAX_STATES:
        raise _TooLarge
    configs = [c for c in _counts_up_to(caps, k) if c.any()]
    if len(configs) > MAX_CONFIGS:
        raise _TooLarge
    value = np.full(shape, math.inf)
    value[(0,) * len(types)] = 0.0
    choices: list[np.ndarray] = []
    for row, limit in zip(prices, limits, strict=True):
        most = np.minimum(limit, top)  # the metro's own limit, and never more of a type than is needed
        new = value.copy()
        choice = np.full(shape, -1, dtype=np.int32)
        for index, counts in enumerate(configs):
            price = float(np.dot(counts, np.where(counts > 0, row, 0.0)))  # a type not there costs inf
            if not math.isfinite(price) or (counts > most).any():
                continue
            target = tuple(slice(int(n), None) for n in counts)
            source = tuple(slice(0, s - int(n)) for s, n in zip(shape, counts, strict=True))
            candidate = value[source] + price
            better = candidate < new[target]
            np.copyto(new[target], candidate, where=better)  # views: written in place
            np.copyto(choice[target], index, where=better)
        value = new
        choices.append(choice)
    grid = np.indices(shape).reshape(len(types), -1).T
    covered = grid @ caps >= need - EPS
    flat = value.reshape(-1)
    if not np.isfinite(flat[covered]).any():
        return None
    position = int(np.flatnonzero(covered)[np.argmin(flat[covered])])
    state = [int(n) for n in grid[position]]
    total = float(flat[position])
    replicas: dict[tuple[str, str], int] = {}
    for metro, choice in zip(reversed(metros), reversed(choices), strict=True):
        index = int(choice[tuple(state)])
        if index < 0:
            continue
        for t, n in enumerate(configs[index]):
            if n:
                replicas[metro, types[t]] = int(n)
                state[t] -= int(n)
    return total, replicas
