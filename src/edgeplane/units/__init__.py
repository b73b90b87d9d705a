"""Modular units: their lifecycle from order to decommissioning."""

from edgeplane.units._lifecycle import (
    MOVES,
    Change,
    LifecycleError,
    UnitRecord,
    UnitState,
    check_acceptance,
    move,
    unit_from_json,
)

__all__ = ["MOVES", "Change", "LifecycleError", "UnitRecord", "UnitState", "check_acceptance", "move", "unit_from_json"]
