"""Planning (pure logic): capacity and failure checks with the same routing code the gateways run, demand,
replica capacity from a queueing model, and placement that survives any single failure."""

from edgeplane.planning._capacity import ReplicaCapacity, erlang_c, replica_capacity, wait_p99_seconds
from edgeplane.planning._demand import COLUMNS, Demand, load_demand, scale
from edgeplane.planning._headroom import MAX_UTILISATION, DrainCheck, Overload, check_drain
from edgeplane.planning._placement import (
    LATENCY_WEIGHT,
    Placed,
    PlacementError,
    Plan,
    candidates,
    failure_scenarios,
    place,
)

__all__ = [
    "COLUMNS",
    "LATENCY_WEIGHT",
    "MAX_UTILISATION",
    "Demand",
    "DrainCheck",
    "Overload",
    "Placed",
    "PlacementError",
    "Plan",
    "ReplicaCapacity",
    "candidates",
    "check_drain",
    "erlang_c",
    "failure_scenarios",
    "load_demand",
    "place",
    "replica_capacity",
    "scale",
    "wait_p99_seconds",
]
