"""The control plane: fleet, placement, drains and agent state, published to gateways as snapshots."""

from edgeplane.control._agents import AgentReport
from edgeplane.control._drains import MAX_DRAINED_METROS
from edgeplane.control._errors import DrainRefused, PlacementRefused, UnknownTarget
from edgeplane.control._service import ControlPlane, is_loopback
from edgeplane.control._state import FleetState, fleet_digest
from edgeplane.control._store import DRAIN_KINDS, AuditRecord, Drain, SQLiteStore, Store
from edgeplane.control._view import ControlView

__all__ = [
    "DRAIN_KINDS",
    "MAX_DRAINED_METROS",
    "AgentReport",
    "AuditRecord",
    "ControlPlane",
    "ControlView",
    "Drain",
    "DrainRefused",
    "FleetState",
    "PlacementRefused",
    "SQLiteStore",
    "Store",
    "UnknownTarget",
    "fleet_digest",
    "is_loopback",
]
