"""Draining a metro: the scenario's predicted shares of its traffic per receiving metro, against the live
system (`edgeplane up` with the emulator, `edgeplane load` replaying the same demand).

    python bench/drain_shares.py [--duration 60]

A small slow model (4 batch slots, 100 tokens/s) placed once at ten PoPs of the default geography
(tests/planning/_slow_fleet.py), so a few requests per second fill a site and nyc's traffic must spill when nyc
is drained. Goal (issue 6): measured shares within 10 percentage points of the prediction. The acceptance test
tests/planning/test_drain_live.py runs the same thing.
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
from tests.planning._slow_fleet import DEMAND, predicted_shares, slow_fleet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgeplane-drain-shares-"))
    path = tmp / "slow-fleet.yaml"
    fleet, demand = slow_fleet(path)
    expected = predicted_shares(fleet, demand, "nyc")
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(path), "--time-scale", "1"]
    running = start_fleet(argv, tmp, fleet_path=path, backend="emulator")
    try:
        running.cli("drain", "metro", "nyc")
        result = json.loads(
            running.cli("load", "--fleet", str(path), "--demand", str(DEMAND), "--gateway", running.gateway_url,
                        "--duration", str(args.duration), "--json", timeout=args.duration + 60).stdout
        )  # fmt: skip
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
