"""`edgeplane load` replays a demand file against a running gateway and says where each metro was served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeplane.local import get_json
from tests._time import wait_for
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


def test_the_planner_reads_the_demand_the_fleet_served(emulator_fleet: RunningFleet, tmp_path: Path) -> None:
    demand = tmp_path / "demand.csv"
    demand.write_text("metro,model,requests_per_second,prompt_tokens,output_tokens\nfra,qwen2.5-32b-instruct,6,40,8\n")
    emulator_fleet.cli("load", "--demand", str(demand), "--gateway", emulator_fleet.gateway_url, "--duration", "2")

    def observed_fra() -> list[dict[str, Any]]:
        observed = get_json(emulator_fleet.control_url + "/api/demand?window=60", 5)
        return [r for r in observed["demand"] if (r["metro"], r["model"]) == ("fra", "qwen2.5-32b-instruct")]

    wait_for("the gateway reports fra's demand", observed_fra)  # it reports every half second
    [fra] = observed_fra()
    assert fra["requests_per_second"] > 0 and fra["output_tokens"] >= 1
    placed = emulator_fleet.cli("plan", "placement", "--observed", "--window", "60", "--json")
    models = {p["model"] for p in json.loads(placed.stdout)["placement"]}
    assert "qwen2.5-32b-instruct" in models
    grown = emulator_fleet.cli(
        "plan", "growth", "--factor", "2", "--horizon-months", "3", "--step-months", "3", "--json"
    )
    assert [m["month"] for m in json.loads(grown.stdout)["timeline"]] == [0, 3]  # no --demand: what was served
    both = emulator_fleet.cli("plan", "placement", "--observed", "--demand", str(demand), check=False)
    assert both.returncode == 2 and "not both" in both.stderr
