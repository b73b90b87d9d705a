"""The network edge (pure parts): the community scheme and what each PoP announces."""

from edgeplane.bgp._communities import (
    GRACEFUL_SHUTDOWN,
    Kind,
    RouteType,
    format_large,
    large,
    no_export_to,
    prepend,
)
from edgeplane.bgp._intents import Intent, PlanError, check_in_plan, next_hops, pop_intents

__all__ = [
    "GRACEFUL_SHUTDOWN",
    "Intent",
    "Kind",
    "PlanError",
    "RouteType",
    "check_in_plan",
    "format_large",
    "large",
    "next_hops",
    "no_export_to",
    "pop_intents",
    "prepend",
]
