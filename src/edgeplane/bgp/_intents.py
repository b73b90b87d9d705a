"""Intents: what each PoP should announce, from the fleet's prefix plan and the metros' state. Pure."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from edgeplane.bgp._communities import (
    GRACEFUL_SHUTDOWN,
    Community,
    Kind,
    LargeCommunity,
    RouteType,
    format_large,
    large,
)
from edgeplane.fleet import Fleet
from edgeplane.routing import Scope


@functools.lru_cache(maxsize=65536)
def _normal(prefix: str) -> tuple[str, int]:
    """A plan prefix in canonical text, and its IP version (the plan is fixed: parse each once)."""
    network = ipaddress.ip_network(prefix)
    return str(network), network.version


@functools.lru_cache(maxsize=65536)
def next_hops(pop_id: int) -> tuple[str, str]:
    """A PoP's next hops, derived from its id in documentation space (192.0.2.0/24, 2001:db8:ffff::/48)."""
    return str(ipaddress.ip_address("192.0.2.0") + pop_id), str(ipaddress.ip_address("2001:db8:ffff::") + pop_id)


# How many times a drained PoP prepends our ASN to the aggregates it keeps announcing: enough that any
# undrained PoP's equal aggregate wins at every router (AS path length comes before the IGP cost), so the
# drained metro's users enter at the nearest undrained exit while the aggregate still covers them.
DRAIN_PREPENDS = 3


@dataclass(frozen=True, slots=True)
class Intent:
    prefix: str
    next_hop: str
    scope: Scope
    route_type: RouteType
    large_communities: tuple[LargeCommunity, ...]
    communities: tuple[Community, ...] = ()
    med: int | None = None
    as_path_prepend: int = 0  # extra copies of our ASN toward every transit (a drained PoP's aggregates)

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "next_hop": self.next_hop,
            "scope": str(self.scope),
            "route_type": self.route_type.name.lower(),
            "large_communities": [format_large(c) for c in self.large_communities],
            "communities": [f"{a}:{b}" for a, b in self.communities],
            "med": self.med,
            "as_path_prepend": self.as_path_prepend,
        }


class PlanError(ValueError):
    """An intent for a prefix outside the fleet's plan."""


def pop_intents(
    fleet: Fleet,
    pop: str,
    *,
    withdrawn_metros: Collection[str] = (),
    shutting_down_metros: Collection[str] = (),
    quiet_pops: Collection[str] = (),
) -> list[Intent]:
    """What ``pop`` announces to its transits: its metro's service prefixes (unless the metro is withdrawn;
    tagged GRACEFUL_SHUTDOWN while a planned withdrawal drains), and the covering aggregates of its region,
    continent and network, so that a metro's users always have a route.

    While its metro drains or is withdrawn the PoP must stop attracting users through its aggregates too. An
    aggregate some other PoP still announces goes out with :data:`DRAIN_PREPENDS` prepends: it still covers,
    but the other PoP's wins at every router. An aggregate no other PoP announces would win anyway (it is the
    longest match), so it is withdrawn where a wider aggregate of an undrained PoP covers it, and kept,
    prepended, only where nothing else would cover the users. Undrained PoPs are those not in the drained
    metros and not in ``quiet_pops`` (PoPs that announce nothing attractive: withdrawn one by one, or down)."""
    site = fleet.pop_by_code[pop]
    metro = fleet.metro_by_code[site.metro]
    region = fleet.region_by_code[metro.region]
    continent = fleet.continent_by_code[region.continent]
    v4, v6 = next_hops(site.id)
    asn = fleet.asn
    origin = (
        large(asn, Kind.ORIGIN_METRO, metro.id),
        large(asn, Kind.ORIGIN_REGION, region.id),
        large(asn, Kind.ORIGIN_CONTINENT, continent.id),
        large(asn, Kind.ORIGIN_POP, site.id),
        large(asn, Kind.ROUTE_TYPE, RouteType.ANYCAST),
    )
    intents: list[Intent] = []

    def add(prefix: str, scope: Scope, communities: tuple[Community, ...] = (), prepends: int = 0) -> None:
        text, version = _normal(prefix)
        tags = (*origin, large(asn, Kind.SCOPE, int(scope)))
        next_hop = v4 if version == 4 else v6
        intents.append(Intent(text, next_hop, scope, RouteType.ANYCAST, tags, communities, None, prepends))

    drained = metro.code in withdrawn_metros or metro.code in shutting_down_metros
    if metro.code not in withdrawn_metros:
        graceful = (GRACEFUL_SHUTDOWN,) if metro.code in shutting_down_metros else ()
        for prefix in metro.service_prefixes:
            add(prefix, Scope.METRO, graceful)
    aggregates = [
        *((p, Scope.REGION) for p in region.aggregates),
        *((p, Scope.CONTINENT) for p in continent.aggregates),
        *((p, Scope.GLOBAL) for p in fleet.aggregates),
    ]
    if not drained:
        for prefix, scope in aggregates:
            add(prefix, scope)
        return intents
    quiet = {
        *quiet_pops,
        *(p.code for p in fleet.pops if p.metro in withdrawn_metros or p.metro in shutting_down_metros),
    }
    covered = _covered_by_others(fleet, quiet)
    for prefix, scope in aggregates:
        network = ipaddress.ip_network(prefix)
        if network in covered:
            add(prefix, scope, prepends=DRAIN_PREPENDS)  # another PoP's equal aggregate wins
        elif not any(_wider(other, network) for other in covered):
            add(prefix, scope, prepends=DRAIN_PREPENDS)  # nothing wider either: keep the users covered
    return intents


def _wider(a: ipaddress.IPv4Network | ipaddress.IPv6Network, b: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """``a`` strictly covers ``b``."""
    return a.version == b.version and a.prefixlen < b.prefixlen and b.subnet_of(a)  # type: ignore[arg-type]


def _covered_by_others(fleet: Fleet, quiet: Collection[str]) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The aggregates some PoP not in ``quiet`` announces (unprepended)."""
    out: set[ipaddress.IPv4Network | ipaddress.IPv6Network] = set()
    for site in fleet.pops:
        if site.code in quiet:
            continue
        region = fleet.region_by_code[fleet.metro_by_code[site.metro].region]
        continent = fleet.continent_by_code[region.continent]
        for prefix in (*region.aggregates, *continent.aggregates, *fleet.aggregates):
            out.add(ipaddress.ip_network(prefix))
    return out


def check_in_plan(fleet: Fleet, prefix: str) -> None:
    """Refuse a prefix the fleet's plan does not hold, saying why."""
    try:
        network = ipaddress.ip_network(prefix, strict=True)
    except ValueError as error:
        raise PlanError(f"{prefix!r} is not a prefix: {error}") from None
    planned = {str(ipaddress.ip_network(p)) for p in fleet.aggregates}
    for continent in fleet.continents:
        planned.update(str(ipaddress.ip_network(p)) for p in continent.aggregates)
    for region in fleet.regions:
        planned.update(str(ipaddress.ip_network(p)) for p in region.aggregates)
    for metro in fleet.metros:
        planned.update(str(ipaddress.ip_network(p)) for p in metro.service_prefixes)
    if str(network) not in planned:
        raise PlanError(
            f"{network} is not in the fleet's prefix plan: only planned metro prefixes and aggregates are announced"
        )
