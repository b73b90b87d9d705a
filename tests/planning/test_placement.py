"""Placement on the default fleet, checked independently: a max-flow per failure scenario, hardware limits,
the reported LP bound; and bad input refused with what cannot be met."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from edgeplane._errors import ConfigError
from edgeplane.catalog import GPU_SPECS
from edgeplane.cli import cli
from edgeplane.fleet import Fleet, load_default_fleet
from edgeplane.planning import Demand, PlacementError, Plan, erlang_c, load_demand, place, replica_capacity, scale

DEMAND = Path(__file__).resolve().parent.parent / "data" / "demand.csv"


def served_rps(fleet: Fleet, plan: Plan, demand: list[Demand], model: str, lost: set[str]) -> tuple[float, float]:
    """Max-flow from client metros to the surviving PoPs of their continent, capped by placed capacity."""
    graph = nx.DiGraph()
    wanted = 0.0
    for d in demand:
        if d.model != model or d.requests_per_second <= 0:
            continue
        wanted += d.requests_per_second
        graph.add_edge("source", f"metro:{d.metro}", capacity=d.requests_per_second)
        continent = fleet.continent_of(d.metro).code
        for pop in fleet.pops:
            if pop.code not in lost and fleet.continent_of(pop.metro).code == continent:
                graph.add_edge(f"metro:{d.metro}", f"pop:{pop.code}")  # no capacity: unbounded
    for placed in plan.placement:
        if placed.model == model and placed.pop not in lost and graph.has_node(f"pop:{placed.pop}"):
            capacity = placed.replicas * placed.replica_capacity_rps
            old = graph.get_edge_data(f"pop:{placed.pop}", "sink", {"capacity": 0.0})["capacity"]
            graph.add_edge(f"pop:{placed.pop}", "sink", capacity=old + capacity)
    if wanted == 0 or not graph.has_node("sink"):
        return wanted, 0.0
    return wanted, nx.maximum_flow_value(graph, "source", "sink")


def test_the_placement_survives_every_single_pop_and_metro_failure_within_5_percent_of_its_bound() -> None:
    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    plan = place(fleet, demand)
    failures = (
        [set()] + [{p.code} for p in fleet.pops] + [{p.code for p in fleet.pops_in(m.code)} for m in fleet.metros]
    )
    for model in {d.model for d in demand}:
        for lost in failures:
            wanted, served = served_rps(fleet, plan, demand, model, lost)
            assert served >= wanted - 1e-6, f"{model} with {sorted(lost)} down: {served:.1f} of {wanted:.1f} rps"
    assert plan.gpus_used <= plan.lower_bound_gpus * 1.05 and plan.gap <= 0.05
    assert plan.mip_gap <= 0.01
    for pop in fleet.pops:  # the hardware is respected
        for gpu_type, count in pop.gpus_by_type().items():
            assert sum(p.gpus for p in plan.placement if p.pop == pop.code and p.gpu_type == gpu_type) <= count
        power = sum(p.gpus * GPU_SPECS[p.gpu_type].power_kw for p in plan.placement if p.pop == pop.code)
        assert power <= sum(u.power_kw for u in pop.units)
    for placed in plan.placement:
        assert fleet.model_by_name[placed.model].fits(placed.gpu_type)


def test_a_failure_without_the_margin_is_caught_by_the_same_check() -> None:
    """The check above is not vacuous: a plan sized for no failure at all fails it."""
    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    plan = place(fleet, demand)
    thin = Plan(
        [p for p in plan.placement if p.pop != "lon1"],
        plan.gpus_used,
        plan.lower_bound_gpus,
        plan.gap,
        plan.mip_gap,
        plan.cost_per_hour_usd,
        plan.latency_ms_weighted,
        plan.solve_seconds,
        plan.status,
    )
    wanted, served = served_rps(fleet, thin, demand, "llama-3.1-8b-instruct", {p.code for p in fleet.pops_in("fra")})
    assert served < wanted


def test_the_cli_prints_the_promised_json() -> None:
    result = CliRunner().invoke(cli, ["plan", "placement", "--demand", str(DEMAND), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"placement", "gpus_used", "lower_bound_gpus", "gap"} <= set(data)
    first = data["placement"][0]
    assert {"model", "pop", "replicas", "gpus", "replica_capacity_rps"} <= set(first)
    assert data["gpus_used"] == sum(p["gpus"] for p in data["placement"])


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("nyc,gpt-9,10,100,100", r"demand.csv:3: model: 'gpt-9' is not in the catalog"),
        ("xyz,llama-3.1-8b-instruct,10,100,100", r"demand.csv:3: metro: 'xyz' is not a metro of the fleet"),
        ("iad,llama-3.1-8b-instruct,-5,100,100", r"demand.csv:3: requests_per_second: must be a finite number >= 0"),
        ("iad,llama-3.1-8b-instruct,ten,100,100", r"demand.csv:3: requests_per_second: expected a number"),
        ("nyc,llama-3.1-8b-instruct,1,1,1", r"demand.csv:3: metro: nyc/llama-3.1-8b-instruct is given twice"),
    ],
)
def test_bad_demand_is_refused_naming_file_line_and_field(tmp_path: Path, row: str, expected: str) -> None:
    path = tmp_path / "demand.csv"
    path.write_text(
        f"metro,model,requests_per_second,prompt_tokens,output_tokens\nnyc,llama-3.1-8b-instruct,5,1,1\n{row}\n"
    )
    with pytest.raises(ConfigError, match=expected):
        load_demand(path, load_default_fleet())


def test_a_demand_file_that_is_not_utf8_is_refused_naming_it_by_every_plan_command(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xff\xfe\x00x")
    said = f"{path}: the demand file is not UTF-8 (byte 0: invalid start byte)"
    with pytest.raises(ConfigError) as caught:
        load_demand(path, load_default_fleet())
    assert str(caught.value) == said
    for command in (["placement"], ["scenarios"], ["growth", "--factor", "10", "--horizon-months", "24"]):
        done = subprocess.run(
            [sys.executable, "-m", "edgeplane", "plan", *command, "--demand", str(path)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert (done.returncode, done.stdout) == (1, ""), (command, done.stdout, done.stderr)
        assert said in done.stderr and "Traceback" not in done.stderr, (command, done.stderr)


def test_yaml_demand_reads_the_same_and_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "demand.yaml"
    path.write_text(
        "demand:\n"
        "  - {metro: nyc, model: llama-3.1-8b-instruct, requests_per_second: 5, prompt_tokens: 10, output_tokens: 20}\n"
        "  - {metro: lon, model: nope, requests_per_second: 5, prompt_tokens: 10, output_tokens: 20}\n"
    )
    with pytest.raises(ConfigError, match=r"demand.yaml:3: model: 'nope'"):
        load_demand(path, load_default_fleet())


def test_demand_no_placement_can_meet_says_what_and_by_how_much() -> None:
    fleet = load_default_fleet()
    demand = scale(load_demand(DEMAND, fleet), 3)
    with pytest.raises(PlacementError) as caught:
        place(fleet, demand)
    assert "no placement meets the demand" in str(caught.value) and "short by" in str(caught.value)
    assert caught.value.shortfalls and all(s["short_rps"] > 0 for s in caught.value.shortfalls)
    result = CliRunner().invoke(cli, ["plan", "placement", "--demand", str(DEMAND), "--scale", "3"])
    assert result.exit_code == 1 and "short by" in result.output


def test_the_queueing_model() -> None:
    assert erlang_c(1, 0.5) == pytest.approx(0.5)  # one server: an arrival waits with probability rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    spec = load_default_fleet().model_by_name["llama-3.1-8b-instruct"]
    short, long = replica_capacity(spec, "H100", 500, 200), replica_capacity(spec, "H100", 500, 800)
    assert 0 < long.requests_per_second < short.requests_per_second  # longer answers hold slots longer
    assert short.ttft_p99_seconds(short.requests_per_second) <= spec.slo_ttft_ms / 1000 + 1e-9
    assert replica_capacity(spec, "H200", 500, 200).requests_per_second > short.requests_per_second
