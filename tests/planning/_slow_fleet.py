"""The default geography with one small, slow model (4 batch slots, 100 tokens/s) at ten PoPs: a few requests
per second fill a site, so draining a metro makes its traffic spill past its region, where a prediction of
where it goes has something to get right. Shared by the drain-shares test and bench/drain_shares.py."""

from __future__ import annotations

from pathlib import Path

from edgeplane.fleet import Fleet, default_fleet_text, parse_fleet
from edgeplane.planning import Demand, load_demand, simulate

DEMAND = Path(__file__).resolve().parent.parent / "data" / "slow-demand.csv"
POPS = ("nyc1", "nyc2", "iad1", "ord1", "dfw1", "sjc1", "sea1", "lon1", "ams1", "fra1")
MODEL = """
models:
  - {name: tiny-slow, parameters_billions: 1, gpu_memory_gb: 8, gpus_per_replica: 1, file_size_gb: 1,
     throughput_tokens_per_second: {H100: 100, H200: 100}, slo_ttft_ms: 5000, max_concurrency: 4}
placement:
"""


def slow_fleet_text() -> str:
    text = default_fleet_text()
    placed = "".join(f"  - {{model: tiny-slow, pop: {p}, replicas: 1}}\n" for p in POPS)
    return text[: text.index("\nmodels:")] + MODEL + placed


def predicted_shares(fleet: Fleet, demand: list[Demand], metro: str) -> dict[str, float]:
    """The share of ``metro``'s traffic each receiving metro takes when ``metro`` is drained, by the planner."""
    drained = frozenset(p.code for p in fleet.pops_in(metro))
    scenario = simulate(fleet, demand, drained, f"metro {metro}")
    moved = next(m for m in scenario.metros if m.metro == metro)
    total = sum(moved.served_by.values())
    shares: dict[str, float] = {}
    for pop, rps in moved.served_by.items():
        receiving = fleet.pop_by_code[pop].metro
        shares[receiving] = shares.get(receiving, 0.0) + rps / total
    return shares


def slow_fleet(path: Path) -> tuple[Fleet, list[Demand]]:
    """Write the slow fleet to ``path``; the fleet and the demand that goes with it."""
    path.write_text(slow_fleet_text())
    fleet = parse_fleet(path.read_text(), str(path))
    return fleet, load_demand(DEMAND, fleet)
