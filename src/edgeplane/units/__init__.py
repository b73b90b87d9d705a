"""Modular units: their lifecycle from order to decommissioning."""

from edgeplane.units._lifecycle import (
    MOVES,
    SECONDS_PER_MONTH,
    Change,
    LifecycleError,
    UnitRecord,
    UnitState,
    check_acceptance,
    move,
    unit_from_json,
)

__all__ = [
    "MOVES",
    "SECONDS_PER_MONTH",
    "Change",
    "LifecycleError",
    "UnitRecord",
    "UnitState",
    "check_acceptance",
    "move",
    "unit_from_json",
]
