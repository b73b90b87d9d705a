"""The same demand gives the same placement, on an idle machine or a busy one: the planner's budgets are
counts (DP levels, branch-and-bound nodes), never the clock. Each plan is made by a process of its own, as
`plan placement` would be, so string hashing differs between them too."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

DEMAND = ROOT / "tests" / "data" / "demand.csv"
# The benchmark's fleet and demand (bench/placement.py), placed at its highest load.
AT_SCALE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from bench._synthetic import synthetic_demand, synthetic_fleet
from edgeplane.planning import place
fleet = synthetic_fleet(4, 5, 5, 2, models=50, servers_per_unit=4, units_per_pop=2)
plan = place(fleet, synthetic_demand(fleet, models_per_metro=12, rps_per_gpu=5.0), time_limit_seconds=60)
answer = plan.to_json()
answer.pop("solve_seconds")
print(json.dumps(answer, sort_keys=True))
"""


@contextlib.contextmanager
def both_cores_busy() -> Iterator[None]:
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def placement_json() -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "edgeplane", "plan", "placement", "--demand", str(DEMAND), "--json"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    answer: dict[str, object] = json.loads(done.stdout)
    answer.pop("solve_seconds")
    return answer


def at_scale() -> str:
    done = subprocess.run(
        [sys.executable, "-c", AT_SCALE, str(ROOT)], capture_output=True, text=True, check=True, timeout=600
    )
    return done.stdout


def test_the_same_demand_gives_the_same_placement_with_the_cpu_busy_or_not() -> None:
    idle = placement_json()
    with both_cores_busy():
        busy = placement_json()
    assert busy == idle and idle["placement"]


def test_the_same_at_the_benchmarks_scale() -> None:
    idle = at_scale()
    with both_cores_busy():
        busy = at_scale()
    assert busy == idle and json.loads(idle)["placement"]
