"""`edgeplane load` replays a demand file against a running gateway and says where each metro was served."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunningFleet


def test_load_replays_demand_and_reports_where_it_was_served(emulator_fleet: RunningFleet, tmp_path: Path) -> None:
    demand = tmp_path / "demand.csv"
    demand.write_text(
        "metro,model,requests_per_second,prompt_tokens,output_tokens\n"
        "lon,llama-3.1-8b-instruct,8,20,8\n"
        "sjc,llama-3.1-8b-instruct,4,20,8\n"
    )
    args = ["load", "--demand", str(demand), "--gateway", emulator_fleet.gateway_url, "--duration", "2", "--json"]
    result = json.loads(emulator_fleet.cli(*args).stdout)["results"]
    by_metro = {r["metro"]: r for r in result}
    assert by_metro["lon"]["sent"] > 0 and by_metro["lon"]["failed"] == 0
    assert by_metro["lon"]["ok"] == by_metro["lon"]["sent"]
    assert by_metro["lon"]["shares"] == {"lon": 1.0}  # served in its own metro when nothing is drained
    assert by_metro["sjc"]["shares"] == {"sjc": 1.0}
    bad = emulator_fleet.cli("load", "--demand", str(tmp_path / "missing.csv"), check=False)
    assert bad.returncode != 0 and "missing.csv" in bad.stderr
