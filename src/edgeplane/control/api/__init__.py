"""The control plane's HTTP API, one module per resource (as a CLI has one per command group): each declares
its routes and handlers; admin routes are marked @admin, bodies parsed into the typed models of _bodies."""

from edgeplane.control.api._resource import MAX_WAIT_SECONDS, Resource
from edgeplane.control.api.agents import AgentsApi
from edgeplane.control.api.audit import AuditApi
from edgeplane.control.api.drains import DrainsApi
from edgeplane.control.api.drills import DrillsApi
from edgeplane.control.api.edge import EdgeApi
from edgeplane.control.api.fabric import FabricApi
from edgeplane.control.api.faults import FaultsApi
from edgeplane.control.api.fleet import FleetApi
from edgeplane.control.api.keys import KeysApi
from edgeplane.control.api.peering import PeeringApi
from edgeplane.control.api.placement import PlacementApi
from edgeplane.control.api.scenarios import ScenariosApi
from edgeplane.control.api.traffic import TrafficApi
from edgeplane.control.api.units import UnitsApi

RESOURCES: tuple[type[Resource], ...] = (
    FleetApi,
    AuditApi,
    AgentsApi,
    TrafficApi,
    DrainsApi,
    KeysApi,
    DrillsApi,
    FaultsApi,
    PlacementApi,
    EdgeApi,
    UnitsApi,
    ScenariosApi,
    FabricApi,
    PeeringApi,
)

__all__ = ["MAX_WAIT_SECONDS", "RESOURCES", "Resource"]
