"""Flow data and peering: the NetFlow/IPFIX collector, its DuckDB store, the routing table that enriches
flows, and the analysis that finds, per metro, the networks behind our transits worth peering with."""

from edgeplane.peering._analysis import DEFAULT_TOP, Routes, inbound_gbps, report, rib_routes, speaker_routes
from edgeplane.peering._candidates import (
    BIN_SECONDS,
    Directory,
    MetroTraffic,
    NoDirectory,
    RoutingView,
    Traffic,
    candidates,
    p95,
    routing_view,
)
from edgeplane.peering._collector import STATE_FILE, CollectorOptions, FlowCollector, our_prefixes
from edgeplane.peering._decode import Decoder, FlowColumns
from edgeplane.peering._peeringdb import Meet, PeeringDb, PeeringDbError
from edgeplane.peering._rib import RibError, read_birdc, read_mrt, read_rib
from edgeplane.peering._store import (
    BIN_MS,
    DATABASE,
    FlowStore,
    OurPrefixes,
    StoreBusy,
    StoreError,
    Tag,
)

__all__ = [
    "BIN_MS",
    "BIN_SECONDS",
    "DATABASE",
    "DEFAULT_TOP",
    "STATE_FILE",
    "CollectorOptions",
    "Decoder",
    "Directory",
    "FlowCollector",
    "FlowColumns",
    "FlowStore",
    "Meet",
    "MetroTraffic",
    "NoDirectory",
    "OurPrefixes",
    "PeeringDb",
    "PeeringDbError",
    "RibError",
    "Routes",
    "RoutingView",
    "StoreBusy",
    "StoreError",
    "Tag",
    "Traffic",
    "candidates",
    "inbound_gbps",
    "our_prefixes",
    "p95",
    "read_birdc",
    "read_mrt",
    "read_rib",
    "report",
    "rib_routes",
    "routing_view",
    "speaker_routes",
]
