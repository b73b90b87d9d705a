"""Where users' connections enter: the transits as routers per metro, their IGP, and the BGP decision at each.

The model the lab builds (a BIRD router per transit and metro, OSPF costs from the distance between metros, the
PoPs' speakers as eBGP neighbours, full-mesh iBGP inside each transit) and the planner predicts with. A metro's
clients sit behind one router of one transit; a connection to their metro's service address follows that
router's best route for the longest prefix covering it, to the exit router that learned it and on to the PoP
that announced it (hot-potato routing). The decision is :mod:`edgeplane.bgp._decision`'s. Pure."""

from __future__ import annotations

import heapq
import ipaddress
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgeplane.bgp._communities import GRACEFUL_SHUTDOWN
from edgeplane.bgp._decision import DEFAULT_LOCAL_PREF, Decision, Route, best_path, path_key
from edgeplane.bgp._export import Neighbor, routes_for
from edgeplane.bgp._intents import Intent, next_hops, pop_intents
from edgeplane.fleet import Fleet, great_circle_km

# Router ids: router ``index`` is ROUTER_ID_BASE + index + 1, in documentation space (TEST-NET-2) for the first
# 254; a BGP identifier is a 32-bit number, so beyond that they go on (unique, no longer documentation space).
ROUTER_ID_BASE = ipaddress.IPv4Address("198.51.100.0")
KM_PER_IGP_COST = 10.0  # one unit of OSPF cost per 10 km between metros, on top of 1 per link
GRACEFUL_SHUTDOWN_LOCAL_PREF = 0  # RFC 8326: what the transits' routers set on routes tagged 65535:0


@dataclass(frozen=True, slots=True)
class TransitRouter:
    """One router of one transit in one metro where some PoP of that metro buys from it."""

    name: str  # "{transit name}-{metro}"
    transit: str  # the transit's name, as the fleet's first PoP listing its ASN spells it
    asn: int
    metro: str
    index: int  # 0, 1, ... over the fleet's routers ordered by (ASN, metro id): the lab derives addresses from it
    router_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "transit": self.transit,
            "asn": self.asn,
            "metro": self.metro,
            "index": self.index,
            "router_id": self.router_id,
        }


def transit_routers(fleet: Fleet) -> list[TransitRouter]:
    """One router per (transit, metro) where some PoP of that metro lists the transit, ordered by (ASN, metro
    id): a PoP added elsewhere in the file moves no router's index unless it brings a new (transit, metro)."""
    names: dict[int, str] = {}
    present: set[tuple[int, str]] = set()
    for pop in fleet.pops:
        for transit in pop.transits:
            names.setdefault(transit.asn, transit.name)
            present.add((transit.asn, pop.metro))
    keys = sorted(present, key=lambda key: (key[0], fleet.metro_by_code[key[1]].id))
    return [
        TransitRouter(f"{names[asn]}-{metro}", names[asn], asn, metro, index, str(ROUTER_ID_BASE + index + 1))
        for index, (asn, metro) in enumerate(keys)
    ]


def igp_cost(fleet: Fleet, metro_a: str, metro_b: str) -> int:
    """The OSPF cost of the link between a transit's routers in two metros: 1 + the great-circle distance in
    units of 10 km, rounded (0 within one metro: no link)."""
    if metro_a == metro_b:
        return 0
    a, b = fleet.metro_by_code[metro_a], fleet.metro_by_code[metro_b]
    return 1 + round(great_circle_km(a.latitude, a.longitude, b.latitude, b.longitude) / KM_PER_IGP_COST)


def client_router(fleet: Fleet, metro: str) -> TransitRouter:
    """Where a metro's clients enter: the router, in that metro, of the first transit listed by the metro's
    first PoP (fleet order) that lists any. ValueError when no PoP of the metro has a transit."""
    for pop in fleet.pops_in(metro):
        if pop.transits:
            asn = pop.transits[0].asn
            return next(r for r in transit_routers(fleet) if (r.asn, r.metro) == (asn, metro))
    raise ValueError(f"metro {metro!r} has no PoP with a transit: its clients have no router to enter by")


def service_address(fleet: Fleet, metro: str) -> str | None:
    """The address a metro's clients connect to: the first host of its first IPv4 service prefix."""
    for prefix in fleet.metro_by_code[metro].service_prefixes:
        network = ipaddress.ip_network(prefix)
        if network.version == 4:
            return str(next(iter(network.hosts()), network.network_address))
    return None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A route at the clients' router, with where it leads: the exit router that learned it from ``pop``."""

    route: Route
    pop: str
    exit: TransitRouter

    def to_json(self) -> dict[str, Any]:
        return {"pop": self.pop, "exit_router": self.exit.name, "route": self.route.to_json()}


@dataclass(frozen=True, slots=True)
class Ingress:
    """Where one metro's clients' connections to their service address enter the fleet, and why."""

    metro: str
    address: str
    router: TransitRouter  # the clients' router
    prefix: str | None  # the longest prefix the router holds covering the address; None: no route at all
    candidates: tuple[Candidate, ...]  # the router's routes to that prefix, as `birdc show route all` lists them
    decision: Decision
    winner: Candidate | None

    @property
    def pop(self) -> str | None:
        return self.winner.pop if self.winner else None

    def why_not(self, candidate: Candidate) -> str:
        """Why a route lost: the step that decided, and against which route."""
        for comparison in self.decision.reasons:
            if comparison.loser is candidate.route:
                return comparison.detail
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "metro": self.metro,
            "address": self.address,
            "router": self.router.to_json(),
            "prefix": self.prefix,
            "pop": self.pop,
            "exit_router": self.winner.exit.name if self.winner else None,
            "method": self.decision.method,
            "candidates": [
                {**c.to_json(), "best": c is self.winner, "why_not": "" if c is self.winner else self.why_not(c)}
                for c in self.candidates
            ],
        }


class IngressModel:
    """The fleet's transits as routers, built once per fleet; :meth:`predict` per state of the edge."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.routers = transit_routers(fleet)
        self._router = {(r.asn, r.metro): r for r in self.routers}
        self._members: dict[int, list[TransitRouter]] = {}
        for router in self.routers:
            self._members.setdefault(router.asn, []).append(router)
        self._distances: dict[str, dict[str, int]] = {}
        self.clients: dict[str, tuple[TransitRouter, str]] = {}
        for metro in fleet.metros:
            address = service_address(fleet, metro.code)
            if address is None:
                continue
            try:
                self.clients[metro.code] = (client_router(fleet, metro.code), address)
            except ValueError:
                continue

    def __repr__(self) -> str:
        routers, transits, metros = len(self.routers), len(self._members), len(self.clients)
        return f"<IngressModel [Routers: {routers} of {transits} transits, Client metros: {metros}]>"

    def path_cost(self, a: TransitRouter, b: TransitRouter) -> int:
        """The IGP cost of the shortest path between two routers of one transit (Dijkstra over the full mesh of
        :func:`igp_cost` links: rounding can make a detour cheaper than the direct link)."""
        if a.asn != b.asn:
            raise ValueError(f"{a.name} and {b.name} are routers of different transits")
        if a.name not in self._distances:
            self._distances[a.name] = self._dijkstra(a)
        return self._distances[a.name][b.name]

    def _dijkstra(self, source: TransitRouter) -> dict[str, int]:
        members = self._members[source.asn]
        done: dict[str, int] = {}
        queue = [(0, source.index, source)]
        while queue:
            cost, _, router = heapq.heappop(queue)
            if router.name in done:
                continue
            done[router.name] = cost
            for other in members:
                if other.name not in done:
                    link = igp_cost(self.fleet, router.metro, other.metro)
                    heapq.heappush(queue, (cost + link, other.index, other))
        return done

    def announcements(
        self,
        *,
        withdrawn_metros: Collection[str] = (),
        shutting_down_metros: Collection[str] = (),
        failed_pops: Collection[str] = (),
        intents: Mapping[str, Sequence[Intent]] | None = None,
    ) -> dict[int, dict[str, dict[str, list[Candidate]]]]:
        """What each transit's routers learn over eBGP: ASN -> IPv4 prefix -> router name -> routes, in fleet
        order. A failed PoP announces nothing; the others their ``intents`` (else :func:`pop_intents` for the
        drains), with their actions toward each transit carried out as the speaker does (:func:`routes_for`)."""
        fleet = self.fleet
        learned: dict[int, dict[str, dict[str, list[Candidate]]]] = {}
        for pop in fleet.pops:
            if pop.code in failed_pops:
                continue
            if intents is not None and pop.code in intents:
                announced = list(intents[pop.code])
            else:
                announced = pop_intents(
                    fleet,
                    pop.code,
                    withdrawn_metros=withdrawn_metros,
                    shutting_down_metros=shutting_down_metros,
                    quiet_pops=failed_pops,
                )
            speaker = next_hops(pop.id)[0]  # the speaker's router id and our side of the session
            seen: set[int] = set()
            for transit in pop.transits:
                if transit.asn in seen:
                    continue
                seen.add(transit.asn)
                router = self._router[transit.asn, pop.metro]
                for out in routes_for(fleet.asn, announced, Neighbor(router.router_id, transit.asn), transit):
                    if ipaddress.ip_network(out.prefix).version != 4:
                        continue
                    graceful = GRACEFUL_SHUTDOWN in out.communities
                    route = Route(
                        prefix=out.prefix,
                        peer=speaker,
                        peer_asn=fleet.asn,
                        next_hop=out.next_hop,
                        as_path=out.as_path or (fleet.asn,),
                        med=out.med,
                        local_pref=GRACEFUL_SHUTDOWN_LOCAL_PREF if graceful else DEFAULT_LOCAL_PREF,
                        router_id=speaker,
                    )
                    by_router = learned.setdefault(transit.asn, {}).setdefault(out.prefix, {})
                    by_router.setdefault(router.name, []).append(Candidate(route, pop.code, router))
        return learned

    def predict(
        self,
        *,
        withdrawn_metros: Collection[str] = (),
        shutting_down_metros: Collection[str] = (),
        failed_pops: Collection[str] = (),
        intents: Mapping[str, Sequence[Intent]] | None = None,
    ) -> dict[str, Ingress]:
        """Each client metro's ingress (metros without a client router or an IPv4 service address are left out)."""
        learned = self.announcements(
            withdrawn_metros=withdrawn_metros,
            shutting_down_metros=shutting_down_metros,
            failed_pops=failed_pops,
            intents=intents,
        )
        advertised: dict[tuple[int, str], list[Candidate]] = {}
        out: dict[str, Ingress] = {}
        for metro, (router, address) in self.clients.items():
            table = learned.get(router.asn, {})
            prefix = _longest_match(table, address)
            if prefix is None:
                out[metro] = Ingress(metro, address, router, None, (), best_path([]), None)
                continue
            key = (router.asn, prefix)
            if key not in advertised:
                advertised[key] = _advertised(table[prefix])
            candidates = [
                *table[prefix].get(router.name, []),
                *(self._over_ibgp(router, c) for c in advertised[key] if c.exit.name != router.name),
            ]
            decision = best_path([c.route for c in candidates])
            winner = next(c for c in candidates if c.route is decision.best)
            out[metro] = Ingress(metro, address, router, prefix, tuple(candidates), decision, winner)
        return out

    def _over_ibgp(self, at: TransitRouter, learned: Candidate) -> Candidate:
        """A route as another router of the transit passes it on: attributes unchanged, learned from that router
        (its id, the IGP cost of the way there)."""
        exit_router = learned.exit
        route = replace(
            learned.route,
            peer=exit_router.router_id,
            peer_asn=exit_router.asn,
            ibgp=True,
            igp_cost=self.path_cost(at, exit_router),
            router_id=exit_router.router_id,
        )
        return Candidate(route, learned.pop, exit_router)


def _longest_match(table: Mapping[str, object], address: str) -> str | None:
    ip = ipaddress.IPv4Address(address)
    covering = [ipaddress.IPv4Network(p) for p in table if ip in ipaddress.IPv4Network(p)]
    return str(max(covering, key=lambda n: n.prefixlen)) if covering else None


def _advertised(by_router: Mapping[str, list[Candidate]]) -> list[Candidate]:
    """What each router passes on over iBGP: its best route when that is one it learned over eBGP. A router
    whose best eBGP route loses, on the path's own attributes, to another router's prefers that iBGP route
    and passes nothing on (iBGP routes are not re-advertised inside a full mesh)."""
    bests = [_best(routes) for routes in by_router.values()]
    top = min(path_key(c.route) for c in bests)
    return [c for c in bests if path_key(c.route) == top]


def _best(candidates: Sequence[Candidate]) -> Candidate:
    decision = best_path([c.route for c in candidates], explain=False)
    return next(c for c in candidates if c.route is decision.best)


def predict_ingress(
    fleet: Fleet,
    *,
    withdrawn_metros: Collection[str] = (),
    shutting_down_metros: Collection[str] = (),
    failed_pops: Collection[str] = (),
    intents: Mapping[str, Sequence[Intent]] | None = None,
) -> dict[str, Ingress]:
    """The PoP at which each metro's clients' connections to their own service address enter, with why: as
    the transits' routers decide (longest prefix, then local pref: 0 for GRACEFUL_SHUTDOWN; AS path length;
    MED; eBGP over iBGP; IGP cost to the exit; router id). ``intents`` (per PoP, e.g. the control plane's,
    actions included) replaces what a PoP's drains would make it announce; the others follow the drains.
    Build an :class:`IngressModel` once to predict many states of one fleet."""
    return IngressModel(fleet).predict(
        withdrawn_metros=withdrawn_metros,
        shutting_down_metros=shutting_down_metros,
        failed_pops=failed_pops,
        intents=intents,
    )
