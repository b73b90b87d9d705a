"""The network edge as pure policy: the prefix plan's intents, the community scheme, edge state, the decision
process and inbound balance. No sockets: the speaker that carries it to BGP peers is `edgeplane.speaker`."""

from edgeplane.bgp._balance import SHIFT_PER_PREPEND, Suggestion, read_traffic, suggest
from edgeplane.bgp._communities import (
    ACTIONS,
    GRACEFUL_SHUTDOWN,
    Community,
    Kind,
    LargeCommunity,
    RouteType,
    action_community,
    format_large,
    large,
    no_export_to,
    parse_community,
    prepend,
)
from edgeplane.bgp._decision import Comparison, Decision, Route, best_path, by_prefix, compare
from edgeplane.bgp._edge import GRACEFUL_SHUTDOWN_SECONDS, Announcement, EdgePlan, PopEdge, plan_edge
from edgeplane.bgp._export import Neighbor, RouteOut, routes_for
from edgeplane.bgp._intents import Intent, PlanError, check_in_plan, next_hops, pop_intents
from edgeplane.bgp._rib import load_routes, longest_match

__all__ = [
    "ACTIONS",
    "GRACEFUL_SHUTDOWN",
    "GRACEFUL_SHUTDOWN_SECONDS",
    "SHIFT_PER_PREPEND",
    "Announcement",
    "Community",
    "Comparison",
    "Decision",
    "EdgePlan",
    "Intent",
    "Kind",
    "LargeCommunity",
    "Neighbor",
    "PlanError",
    "PopEdge",
    "Route",
    "RouteOut",
    "RouteType",
    "Suggestion",
    "action_community",
    "best_path",
    "by_prefix",
    "check_in_plan",
    "compare",
    "format_large",
    "large",
    "load_routes",
    "longest_match",
    "next_hops",
    "no_export_to",
    "parse_community",
    "plan_edge",
    "pop_intents",
    "prepend",
    "read_traffic",
    "routes_for",
    "suggest",
]
