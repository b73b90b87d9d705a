"""Planning (pure logic): capacity and failure checks with the same routing code the gateways run, demand,
replica capacity from a queueing model, and placement that survives any single failure."""

from edgeplane.planning._broadcast import (
    BroadcastPlan,
    FabricLink,
    fabric_links,
    link_between,
    plan_broadcast,
    widest_rate,
)
from edgeplane.planning._capacity import (
    ReplicaCapacity,
    erlang_b,
    erlang_c,
    replica_capacity,
    site_blocking,
    wait_p99_seconds,
)
from edgeplane.planning._demand import COLUMNS, Demand, load_demand, scale
from edgeplane.planning._growth import GrowthPlan, Month, UnitOrder, demand_at, plan_growth
from edgeplane.planning._headroom import MAX_UTILISATION, DrainCheck, Overload, check_drain
from edgeplane.planning._options import candidates, failure_scenarios
from edgeplane.planning._placement import (
    LATENCY_WEIGHT,
    Placed,
    PlacementError,
    Plan,
    place,
)
from edgeplane.planning._scenarios import (
    FastScenario,
    MetroOutcome,
    Scenario,
    SiteLoad,
    fast_scenarios,
    ingress_of,
    scenarios,
    simulate,
    single_drains,
    single_failures,
    utilisation_matrix,
    with_placement,
)
from edgeplane.planning._solver import MIP_NODE_LIMIT

__all__ = [
    "COLUMNS",
    "LATENCY_WEIGHT",
    "MAX_UTILISATION",
    "MIP_NODE_LIMIT",
    "BroadcastPlan",
    "Demand",
    "DrainCheck",
    "FabricLink",
    "FastScenario",
    "GrowthPlan",
    "MetroOutcome",
    "Month",
    "Overload",
    "Placed",
    "PlacementError",
    "Plan",
    "ReplicaCapacity",
    "Scenario",
    "SiteLoad",
    "UnitOrder",
    "candidates",
    "check_drain",
    "demand_at",
    "erlang_b",
    "erlang_c",
    "fabric_links",
    "failure_scenarios",
    "fast_scenarios",
    "ingress_of",
    "link_between",
    "load_demand",
    "place",
    "plan_broadcast",
    "plan_growth",
    "replica_capacity",
    "scale",
    "scenarios",
    "simulate",
    "single_drains",
    "single_failures",
    "site_blocking",
    "utilisation_matrix",
    "wait_p99_seconds",
    "widest_rate",
    "with_placement",
]
