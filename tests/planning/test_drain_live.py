"""The scenario for draining a metro against the live system: `edgeplane up` with the emulator, `edgeplane load`
replaying the same demand, and the share of the drained metro's traffic each receiving metro takes, measured
(from where the gateway served each request) and predicted (by `plan scenarios`' simulate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import start_fleet, stop_fleet
from tests.planning._slow_fleet import DEMAND, predicted_shares, slow_fleet

DURATION_SECONDS = 60  # about 360 of nyc's requests: a share's sampling error is then about 2.5 points


def test_the_drained_metros_traffic_goes_where_the_scenario_says(tmp_path: Path) -> None:
    path = tmp_path / "slow-fleet.yaml"
    fleet, demand = slow_fleet(path)
    expected = predicted_shares(fleet, demand, "nyc")
    assert len([m for m, share in expected.items() if share > 0.05]) >= 3, f"nyc should spill past iad: {expected}"

    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(path), "--time-scale", "1"]
    running = start_fleet(argv, tmp_path, fleet_path=path, backend="emulator")
    try:
        running.cli("drain", "metro", "nyc")
        args = ["load", "--fleet", str(path), "--demand", str(DEMAND), "--gateway", running.gateway_url,
                "--duration", str(DURATION_SECONDS), "--json"]  # fmt: skip
        result = json.loads(running.cli(*args, timeout=DURATION_SECONDS + 60).stdout)
    finally:
        stop_fleet(running)
    nyc = next(r for r in result["results"] if r["metro"] == "nyc")
    assert nyc["failed"] == 0 and nyc["ok"] > 250, nyc
    assert "nyc" not in nyc["shares"], "a drained metro serves nothing"
    measured = nyc["shares"]
    off = {m: round(measured.get(m, 0.0) - expected.get(m, 0.0), 3) for m in set(measured) | set(expected)}
    assert all(abs(d) <= 0.10 for d in off.values()), f"measured {measured}, predicted {expected}: off by {off}"
