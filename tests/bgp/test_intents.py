"""The prefix plan, the community scheme and what each PoP announces (pure parts of issue 5)."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner
from rich.console import Console

from edgeplane.bgp import (
    DRAIN_PREPENDS,
    GRACEFUL_SHUTDOWN,
    PlanError,
    check_in_plan,
    no_export_to,
    pop_intents,
    prepend,
)
from edgeplane.cli import cli
from edgeplane.fleet import FleetError, default_fleet_text, load_default_fleet, parse_fleet
from tests.conftest import free_port


def test_a_pop_announces_its_metro_prefixes_and_every_wider_aggregate_with_the_scheme() -> None:
    fleet = load_default_fleet()
    intents = {i.prefix: i for i in pop_intents(fleet, "lon1")}
    assert list(intents) == [
        "198.19.128.0/24",
        "2001:db8:c000::/48",  # metro lon
        "198.19.128.0/20",
        "2001:db8:c000::/38",  # region eu-west
        "198.19.128.0/17",
        "2001:db8:c000::/34",  # continent eu
        "198.19.0.0/16",
        "2001:db8:8000::/33",  # the network
    ]
    metro = intents["198.19.128.0/24"]
    # lon is metro 7 in region 4 of continent 2; lon1 is PoP 8.
    assert [":".join(map(str, c)) for c in metro.large_communities] == [
        "64496:1:7",
        "64496:2:4",
        "64496:3:2",
        "64496:4:8",
        "64496:5:1",
        "64496:10:1",
    ]
    assert metro.next_hop == "192.0.2.8" and intents["2001:db8:c000::/48"].next_hop == "2001:db8:ffff::8"
    assert [c[1:] for c in intents["198.19.0.0/16"].large_communities][-1] == (10, 4)
    assert prepend(64496, 64499, 2) == (64496, 22, 64499) and no_export_to(64496, 64500) == (64496, 20, 64500)


def test_a_drained_metro_withdraws_only_its_own_prefixes_after_graceful_shutdown() -> None:
    fleet = load_default_fleet()
    shutting = {i.prefix: i for i in pop_intents(fleet, "lon1", shutting_down_metros={"lon"})}
    assert shutting["198.19.128.0/24"].communities == (GRACEFUL_SHUTDOWN,)
    assert shutting["198.19.128.0/20"].communities == ()
    assert shutting["198.19.128.0/20"].as_path_prepend == DRAIN_PREPENDS  # the aggregates stop attracting users
    withdrawn = {i.prefix: i for i in pop_intents(fleet, "lon1", withdrawn_metros={"lon"})}
    assert "198.19.128.0/24" not in withdrawn and "198.19.128.0/20" in withdrawn and "198.19.0.0/16" in withdrawn
    assert all(i.as_path_prepend == DRAIN_PREPENDS for i in withdrawn.values())
    assert all(i.as_path_prepend == 0 for i in pop_intents(fleet, "ams1", withdrawn_metros={"lon"}))


def test_prefixes_outside_the_plan_are_refused_with_the_reason() -> None:
    fleet = load_default_fleet()
    check_in_plan(fleet, "198.19.129.0/24")
    with pytest.raises(PlanError, match="not in the fleet's prefix plan"):
        check_in_plan(fleet, "203.0.113.0/24")
    with pytest.raises(PlanError, match="not a prefix"):
        check_in_plan(fleet, "198.19.129.1/24")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("service_prefixes: [198.19.129.0/24,", "service_prefixes: [203.0.113.0/24,", "has no covering aggregate"),
        (
            "service_prefixes: [198.19.129.0/24,",
            "service_prefixes: [198.19.128.128/25,",
            "overlaps 198.19.128.0/24 of lon",
        ),
        ("aggregates: [198.19.144.0/20,", "aggregates: [203.0.113.0/24,", "not covered by an aggregate of eu"),
    ],
)
def test_a_broken_prefix_plan_is_refused_naming_file_line_and_field(old: str, new: str, expected: str) -> None:
    text = default_fleet_text()
    assert old in text
    broken = text.replace(old, new, 1)
    with pytest.raises(FleetError) as caught:
        parse_fleet(broken, "fleet.yaml")
    problem = next(p for p in caught.value.problems if expected in p.message)
    line = broken[: broken.index(new)].count("\n") + 1
    assert (problem.file, problem.line) == ("fleet.yaml", line)
    assert "service_prefixes" in problem.field or "aggregates" in problem.field


def test_bgp_intents_command() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    control = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        cli, ["--control", control, "bgp", "intents", "--pop", "fra1", "--json"], obj={"console": console}
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["pop"] == "fra1" and data["intents"][0]["prefix"] == "198.19.144.0/24"
    assert "64496:10:1" in data["intents"][0]["large_communities"]
    result = CliRunner().invoke(
        cli, ["--control", control, "bgp", "intents", "--pop", "fra1"], obj={"console": console}
    )
    assert result.exit_code == 0 and "198.19.144.0/24" in buffer.getvalue()


def test_a_malformed_transit_community_is_refused_naming_file_line_and_field() -> None:
    text = default_fleet_text()
    old = 'prepend_communities: ["64500:3001", "64500:3002", "64500:3003"]'
    assert old in text
    broken = text.replace(old, 'prepend_communities: ["64500:3001", "64500-3002"]', 1)
    with pytest.raises(FleetError) as caught:
        parse_fleet(broken, "fleet.yaml")
    problem = caught.value.problems[0]
    line = broken[: broken.index("64500-3002")].count("\n") + 1
    assert (problem.file, problem.line) == ("fleet.yaml", line)
    assert "prepend_communities" in problem.field and "is not a community: expected A:B" in problem.message


def test_the_pure_policy_loads_no_service_kit() -> None:
    """`edgeplane.bgp` is policy (a planner or a CLI may import it); the speaker's HTTP and ExaBGP live in
    `edgeplane.speaker`."""
    import subprocess
    import sys

    check = "import edgeplane.bgp, sys; assert 'aiohttp' not in sys.modules, 'aiohttp loaded'"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
