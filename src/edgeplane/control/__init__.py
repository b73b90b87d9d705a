"""The control plane: fleet, placement, drains and agent state, published to gateways as snapshots."""

from edgeplane.control._service import ControlPlane, is_loopback
from edgeplane.control._state import AgentReport, FleetState, UnknownTarget, fleet_digest
from edgeplane.control._store import DRAIN_KINDS, AuditRecord, Drain, SQLiteStore, Store

__all__ = [
    "DRAIN_KINDS",
    "AgentReport",
    "AuditRecord",
    "ControlPlane",
    "Drain",
    "FleetState",
    "SQLiteStore",
    "Store",
    "UnknownTarget",
    "fleet_digest",
    "is_loopback",
]
