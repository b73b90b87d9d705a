"""Growth: modular units to add per metro, and when to order each, so that capacity stays ahead of demand
with single-failure survivability. Each month is a placement (the same MILP) that may add units."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeplane.fleet import Fleet
from edgeplane.planning._demand import Demand, scale
from edgeplane.planning._options import Growth
from edgeplane.planning._placement import Plan, place


@dataclass(frozen=True, slots=True)
class UnitOrder:
    metro: str
    pop: str
    number: int  # the n-th unit added at this PoP
    needed_month: int  # the first month the placement needs it
    order_month: float  # needed_month - lead time; negative means it is already late
    serving_month: float  # when it can serve: max(needed, lead time from now)

    @property
    def late_by_months(self) -> float:
        return max(0.0, -self.order_month)

    def to_json(self) -> dict[str, Any]:
        return {
            "metro": self.metro,
            "pop": self.pop,
            "number": self.number,
            "needed_month": self.needed_month,
            "order_month": round(self.order_month, 2),
            "serving_month": round(self.serving_month, 2),
            "late_by_months": round(self.late_by_months, 2),
        }


@dataclass(frozen=True, slots=True)
class Month:
    month: int
    demand_rps: float
    units_added: int  # in total by then
    gpus: int  # the fleet's GPUs with those units
    gpus_used: int
    plan: Plan = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "demand_rps": round(self.demand_rps, 3),
            "units_added": self.units_added,
            "gpus": self.gpus,
            "gpus_used": self.gpus_used,
        }


@dataclass(frozen=True, slots=True)
class GrowthPlan:
    factor: float
    horizon_months: int
    lead_time_months: float
    orders: list[UnitOrder]
    timeline: list[Month]

    def to_json(self) -> dict[str, Any]:
        return {
            "factor": self.factor,
            "horizon_months": self.horizon_months,
            "lead_time_months": self.lead_time_months,
            "units_to_add": len(self.orders),
            "late_orders": sum(1 for o in self.orders if o.late_by_months > 0),
            "orders": [o.to_json() for o in self.orders],
            "timeline": [m.to_json() for m in self.timeline],
        }


def demand_at(demand: Sequence[Demand], factor: float, horizon_months: int, month: int) -> list[Demand]:
    """Compound growth: ``factor`` times today's demand at the horizon, the same rate every month."""
    return scale(demand, factor ** (month / horizon_months))


def plan_growth(
    fleet: Fleet,
    demand: Sequence[Demand],
    *,
    factor: float,
    horizon_months: int,
    step_months: int = 1,
    time_limit_seconds: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> GrowthPlan:
    """Month by month, the fewest units (at each metro's first PoP) that let a placement survive any single
    failure at that month's demand; units once added stay. Orders go out a lead time before they are needed."""
    if horizon_months < 1 or step_months < 1:
        raise ValueError("the horizon and the step are whole months, at least 1")
    template = fleet.new_unit()
    lead = template.lead_time_months
    sites = {m.code: fleet.pops_in(m.code)[0].code for m in fleet.metros if fleet.pops_in(m.code)}
    metro_of = {pop: metro for metro, pop in sites.items()}
    committed = dict.fromkeys(sites.values(), 0)
    existing = sum(sum(p.gpus_by_type().values()) for p in fleet.pops)
    per_unit = sum(template.gpus_by_type().values())
    orders: list[UnitOrder] = []
    timeline: list[Month] = []
    months = list(range(0, horizon_months + 1, step_months))
    if months[-1] != horizon_months:
        months.append(horizon_months)
    previous = -1
    for step, month in enumerate(months):
        grown = demand_at(demand, factor, horizon_months, month)
        # Between checkpoints demand grows all the time: a unit first needed at this checkpoint may be
        # needed as soon as the month after the last one, so that is when it must serve.
        needed = month if previous < 0 else previous + 1
        plan = place(fleet, grown, time_limit_seconds=time_limit_seconds, growth=Growth(template, dict(committed)))
        for pop, count in sorted(plan.units_added.items()):
            for number in range(committed[pop] + 1, count + 1):
                orders.append(UnitOrder(metro_of[pop], pop, number, needed, needed - lead, max(float(needed), lead)))
            committed[pop] = max(committed[pop], count)
        added = sum(committed.values())
        timeline.append(
            Month(month, sum(d.requests_per_second for d in grown), added, existing + added * per_unit,
                  plan.gpus_used, plan)
        )  # fmt: skip
        previous = month
        if progress is not None:
            progress(step + 1, len(months))
    return GrowthPlan(factor, horizon_months, lead, orders, timeline)
