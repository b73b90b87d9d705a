"""The exact per continent-and-model optimum against brute force over every replica count."""

from __future__ import annotations

import itertools
import math
import random

from edgeplane.planning._groups import group_optimum


def brute_force(
    demand: float,
    capacity: dict[str, float],
    cost: dict[tuple[str, str], float],
    most: int | dict[tuple[str, str], int],
) -> float:
    """The cheapest over every replica count up to ``most`` (one for all, or per metro and GPU type)."""
    keys = sorted(cost)
    metros = sorted({m for m, _ in keys})
    best = math.inf
    limits = [most if isinstance(most, int) else most[k] for k in keys]
    for counts in itertools.product(*(range(n + 1) for n in limits)):
        per_metro = dict.fromkeys(metros, 0.0)
        for (metro, gpu_type), n in zip(keys, counts, strict=True):
            per_metro[metro] += n * capacity[gpu_type]
        total = sum(per_metro.values())
        if all(total - held >= demand - 1e-9 for held in per_metro.values()):
            best = min(best, sum(n * cost[k] for k, n in zip(keys, counts, strict=True)))
    return best


def test_the_per_group_optimum_is_the_brute_force_one() -> None:
    draw = random.Random(7)
    compared = 0
    for _ in range(60):
        capacity = {"H100": draw.uniform(5, 15), "H200": draw.uniform(8, 25)}
        metros = [f"m{i}" for i in range(draw.randint(2, 3))]
        cost = {}
        for metro in metros:
            for gpu_type in capacity:
                if draw.random() < 0.8:  # some metros lack a type
                    cost[metro, gpu_type] = draw.uniform(1, 10) + capacity[gpu_type] * draw.uniform(0, 0.3)
        if len({m for m, _ in cost}) < 2:
            continue
        demand = draw.uniform(1, 30)
        found = group_optimum(demand, capacity, cost)
        expected = brute_force(demand, capacity, cost, most=4 if len(cost) <= 4 else 3)
        assert found is not None and found.exact
        assert found.cost <= expected + 1e-6  # brute force stops at a few replicas; the optimum can only be lower
        if expected < math.inf:
            # The optimum's own counts survive every metro failure, and cost what it says.
            per_metro: dict[str, float] = {}
            for (metro, gpu_type), n in found.replicas.items():
                per_metro[metro] = per_metro.get(metro, 0.0) + n * capacity[gpu_type]
            total = sum(per_metro.values())
            assert all(total - held >= demand - 1e-9 for held in per_metro.values())
            assert math.isclose(found.cost, sum(n * cost[k] for k, n in found.replicas.items()))
            if max(found.replicas.values()) <= 3:
                assert math.isclose(found.cost, expected), (found, expected)
                compared += 1
    assert compared >= 20


def test_one_metro_cannot_survive_its_own_failure() -> None:
    assert group_optimum(5.0, {"H100": 10.0}, {("m0", "H100"): 1.0}) is None
    assert group_optimum(0.0, {"H100": 10.0}, {("m0", "H100"): 1.0}) is not None


def test_with_limits_per_metro_and_type_it_is_the_brute_force_optimum_within_them() -> None:
    draw = random.Random(11)
    compared = infeasible = 0
    for _ in range(80):
        capacity = {"H100": draw.uniform(5, 15), "H200": draw.uniform(8, 25)}
        metros = [f"m{i}" for i in range(draw.randint(2, 3))]
        cost = {(m, t): draw.uniform(1, 10) for m in metros for t in capacity}
        limit = {key: draw.randint(0, 3) for key in cost}
        demand = draw.uniform(1, 30)
        best = brute_force(demand, capacity, cost, limit)
        found = group_optimum(demand, capacity, cost, limit=limit)
        if best == math.inf:
            assert found is None
            infeasible += 1
            continue
        assert found is not None and math.isclose(found.cost, best), (found, best)
        assert all(n <= limit[key] for key, n in found.replicas.items())
        compared += 1
    assert compared >= 20 and infeasible >= 5
