"""Draining a metro: the scenario's predicted shares of its traffic per receiving metro, against the live
system (`edgeplane up` with the emulator, `edgeplane load` replaying the same demand).

    python bench/drain_shares.py [--duration 30]

A small slow model (4 batch slots, 100 tokens/s) placed once at every PoP of the default geography, so a
few requests per second fill a site and nyc's traffic must spill when nyc is drained. Goal (issue 6):
measured shares within 10 percentage points of the prediction.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_fleet, stop_fleet  # noqa: E402

from edgeplane.fleet import default_fleet_text, parse_fleet  # noqa: E402
from edgeplane.planning import load_demand, simulate  # noqa: E402

DEMAND = ROOT / "tests" / "data" / "slow-demand.csv"
POPS = ("nyc1", "nyc2", "iad1", "ord1", "dfw1", "sjc1", "sea1", "lon1", "ams1", "fra1")
MODEL = """
models:
  - {name: tiny-slow, parameters_billions: 1, gpu_memory_gb: 8, gpus_per_replica: 1, file_size_gb: 1,
     throughput_tokens_per_second: {H100: 100, H200: 100}, slo_ttft_ms: 5000, max_concurrency: 4}
placement:
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    text = default_fleet_text()
    text = (
        text[: text.index("\nmodels:")]
        + MODEL
        + "".join(f"  - {{model: tiny-slow, pop: {p}, replicas: 1}}\n" for p in POPS)
    )
    tmp = Path(tempfile.mkdtemp(prefix="edgeplane-drain-shares-"))
    path = tmp / "slow-fleet.yaml"
    path.write_text(text)
    fleet = parse_fleet(text, str(path))
    demand = load_demand(DEMAND, fleet)
    predicted = simulate(fleet, demand, frozenset({"nyc1", "nyc2"}), "metro nyc")
    moved = next(m for m in predicted.metros if m.metro == "nyc")
    total = sum(moved.served_by.values())
    expected: dict[str, float] = {}
    for pop, rps in moved.served_by.items():
        expected[fleet.pop_by_code[pop].metro] = expected.get(fleet.pop_by_code[pop].metro, 0.0) + rps / total
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(path), "--time-scale", "1"]
    running = start_fleet(argv, tmp, fleet_path=path, backend="emulator")
    try:
        running.cli("drain", "metro", "nyc")
        result = json.loads(
            running.cli("load", "--fleet", str(path), "--demand", str(DEMAND), "--gateway", running.gateway_url,
                        "--duration", str(args.duration), "--json").stdout
        )  # fmt: skip
        running.cli("undrain", "metro", "nyc")
    finally:
        stop_fleet(running)
    attempts: dict[str, int] = {}
    for line in (tmp / "data" / "access.log").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("client_metro") == "nyc":
            key = f"{entry.get('metro')} after {entry.get('attempts')} attempt(s)"
            attempts[key] = attempts.get(key, 0) + 1
    nyc = next(r for r in result["results"] if r["metro"] == "nyc")
    measured = nyc["shares"]
    worst = max(abs(measured.get(m, 0.0) - expected.get(m, 0.0)) for m in set(measured) | set(expected))
    print(f"nyc drained, {nyc['ok']} of {nyc['sent']} requests answered over {args.duration:g} s")
    for metro in sorted(set(measured) | set(expected), key=lambda m: -expected.get(m, 0.0)):
        print(f"  {metro}: predicted {expected.get(metro, 0.0):6.1%}  measured {measured.get(metro, 0.0):6.1%}")
    print("  where nyc's requests went, from the gateway's access log:", dict(sorted(attempts.items())))
    print(f"largest difference {worst:.1%} (goal: at most 10 points); ratio to the goal {worst / 0.10:.2f}")


if __name__ == "__main__":
    main()
