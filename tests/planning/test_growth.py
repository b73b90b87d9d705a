"""Growth: order dates respect the lead time, and every month's capacity survives any single failure."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgeplane.cli import cli
from edgeplane.fleet import load_default_fleet
from edgeplane.planning import demand_at, load_demand, plan_growth, scale
from tests.planning.test_placement import served_rps

DEMAND = Path(__file__).resolve().parent.parent / "data" / "demand.csv"


def test_orders_respect_the_lead_time_and_capacity_stays_ahead_with_single_failure_survivability() -> None:
    fleet = load_default_fleet()
    demand = load_demand(DEMAND, fleet)
    grown = plan_growth(fleet, demand, factor=3, horizon_months=9, step_months=3)
    lead = fleet.new_unit().lead_time_months
    assert lead == 3 and grown.orders, "tripling the demand needs new units"
    for order in grown.orders:
        assert order.order_month == order.needed_month - lead
        assert order.serving_month >= order.needed_month
        assert fleet.pops_in(order.metro)[0].code == order.pop
    failures = (
        [set()] + [{p.code} for p in fleet.pops] + [{p.code for p in fleet.pops_in(m.code)} for m in fleet.metros]
    )
    for month in grown.timeline:
        wanted = demand_at(demand, 3, 9, month.month)
        assert month.gpus_used <= month.gpus
        for model in {d.model for d in wanted}:
            for lost in failures:
                need, served = served_rps(fleet, month.plan, wanted, model, lost)
                assert served >= need - 1e-6, (month.month, model, sorted(lost))
    units = [m.units_added for m in grown.timeline]
    assert units == sorted(units) and units[-1] == len(grown.orders)  # units once added stay


def test_units_needed_before_their_lead_time_are_flagged_late() -> None:
    fleet = load_default_fleet()
    demand = scale(load_demand(DEMAND, fleet), 2.5)  # more than today's fleet survives: units needed at once
    grown = plan_growth(fleet, demand, factor=1.2, horizon_months=3, step_months=3)
    late = [o for o in grown.orders if o.needed_month == 0]
    assert late and all(o.late_by_months == 3 and o.serving_month == 3 for o in late)


def test_the_cli_plans_growth_as_json() -> None:
    args = ["plan", "growth", "--demand", str(DEMAND), "--factor", "2", "--horizon-months", "6", "--step-months", "3"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["lead_time_months"] == 3 and [m["month"] for m in data["timeline"]] == [0, 3, 6]
    assert {"metro", "pop", "order_month", "needed_month"} <= set(data["orders"][0])
    nowhere = "http://127.0.0.1:9"  # no control plane there: nothing observed to plan from
    missing = CliRunner().invoke(
        cli, ["--control", nowhere, "plan", "growth", "--factor", "10", "--horizon-months", "24"]
    )
    assert missing.exit_code == 1 and "give --demand FILE, or run against a fleet" in missing.output
