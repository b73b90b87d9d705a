"""The lab's plan: every namespace, link, address and route, worked out from the fleet alone. Pure: the same
fleet gives the same plan on any machine, and the plan is checked without root."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field

from edgeplane.bgp import TransitRouter, client_router, igp_cost, next_hops, service_address, transit_routers
from edgeplane.fleet import Fleet

PREFIX = "ep-"  # every namespace the lab makes starts with it (and one of the kinds below)
NETNS_KINDS = ("ep-pop-", "ep-rt-", "ep-client-", "ep-control", "ep-mgmt")
HOST_LINK = "ep-lab0"  # the one link the lab adds to the host's namespace
MGMT_BRIDGE = "br0"
GATEWAY_PORT = 8080
AGENT_PORT = 8090
CONTROL_PORT = 8081
# Documentation and benchmarking ranges only (RFC 5737, RFC 2544): the management network takes the first that
# neither a fleet prefix nor a router's loopback (its router id, 198.51.100.x) overlaps; the data network's
# links a free /20 of 198.18.0.0/15.
MGMT_CANDIDATES = ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24")
INFRA_SPACE = "198.18.0.0/15"
INFRA_SIZE = 20
MGMT_FIRST_POP = 10  # host .1, control plane .2, PoPs from .10


class LabPlanError(ValueError):
    """A fleet the lab cannot build, and why."""


@dataclass(frozen=True, slots=True)
class Address:
    """An IPv4 address on an interface: on a subnet (``peer`` None), or point-to-point to ``peer``."""

    local: str
    prefixlen: int
    peer: str | None = None

    def __str__(self) -> str:
        return f"{self.local} peer {self.peer}/32" if self.peer else f"{self.local}/{self.prefixlen}"


@dataclass(frozen=True, slots=True)
class End:
    netns: str | None  # None: the host's own namespace
    ifname: str
    addresses: tuple[Address, ...] = ()
    bridge: str | None = None  # enslaved to this bridge in its namespace


@dataclass(frozen=True, slots=True)
class Link:
    """A veth pair."""

    a: End
    b: End
    cost: int | None = None  # OSPF cost of a link between two routers
    rtt_ms: float | None = None  # the fleet's round trip between the routers' metros


@dataclass(frozen=True, slots=True)
class Route:
    netns: str
    destination: str  # "0.0.0.0/0" for the default
    gateway: str


@dataclass(frozen=True, slots=True)
class PopLink:
    transit: str
    asn: int
    router: str  # the router's name
    ifname: str  # in the PoP's namespace
    router_address: str  # the router's end: the PoP speaker's --neighbor


@dataclass(frozen=True, slots=True)
class PopPlan:
    code: str
    id: int
    metro: str
    netns: str
    mgmt_address: str
    next_hop: str  # 192.0.2.x, as `bgp intents` derives it: on every link to a transit
    service_addresses: tuple[str, ...]  # every metro's, on the loopback (anycast)
    links: tuple[PopLink, ...]


@dataclass(frozen=True, slots=True)
class RouterPeer:
    name: str
    loopback: str
    ifname: str
    cost: int


@dataclass(frozen=True, slots=True)
class RouterPop:
    pop: str
    ifname: str
    address: str  # the router's end
    neighbor: str  # the PoP's next hop


@dataclass(frozen=True, slots=True)
class RouterPlan:
    name: str
    transit: str
    asn: int
    metro: str
    index: int
    router_id: str
    netns: str
    loopback: str
    peers: tuple[RouterPeer, ...]  # the same transit's routers in other metros (OSPF + iBGP)
    pops: tuple[RouterPop, ...]  # eBGP
    client_prefixes: tuple[str, ...] = ()  # announced into the transit when this is a metro's client router
    client_ifname: str | None = None


@dataclass(frozen=True, slots=True)
class ClientPlan:
    metro: str
    netns: str
    address: str
    prefix: str
    gateway: str  # the client router's address on the client's network
    router: str
    service_address: str


@dataclass(frozen=True, slots=True)
class LabPlan:
    fleet_asn: int
    mgmt_network: str
    mgmt_netns: str
    host_address: str
    control_netns: str
    control_address: str
    infra_network: str
    pops: tuple[PopPlan, ...]
    routers: tuple[RouterPlan, ...]
    clients: tuple[ClientPlan, ...]
    links: tuple[Link, ...]
    routes: tuple[Route, ...]
    service_address_by_metro: dict[str, str] = field(default_factory=dict)

    @property
    def control_url(self) -> str:
        return f"http://{self.control_address}:{CONTROL_PORT}"

    def service_url(self, metro: str) -> str:
        return f"http://{self.service_address_by_metro[metro]}:{GATEWAY_PORT}/v1"

    def namespaces(self) -> list[str]:
        return [
            self.mgmt_netns,
            self.control_netns,
            *(p.netns for p in self.pops),
            *(r.netns for r in self.routers),
            *(c.netns for c in self.clients),
        ]


def _v4(prefixes: list[str]) -> list[ipaddress.IPv4Network]:
    return [n for n in (ipaddress.ip_network(p) for p in prefixes) if isinstance(n, ipaddress.IPv4Network)]


def fleet_networks(fleet: Fleet) -> list[ipaddress.IPv4Network]:
    """Every IPv4 prefix the fleet's plan uses (clients, services, aggregates) and the PoPs' next hops."""
    networks = _v4([*fleet.own_prefixes(), *(p for metro in fleet.metros for p in metro.client_prefixes)])
    networks += [ipaddress.IPv4Network(f"{next_hops(pop.id)[0]}/32") for pop in fleet.pops]
    return networks


def _free(candidate: ipaddress.IPv4Network, taken: list[ipaddress.IPv4Network]) -> bool:
    return not any(candidate.overlaps(t) for t in taken)


def _netns_name(kind: str, code: str) -> str:
    return f"{PREFIX}{kind}-{code}"


class _Pool:
    """Addresses handed out in order from the infrastructure network."""

    def __init__(self, network: ipaddress.IPv4Network, start: int = 0) -> None:
        self.network, self.next = network, int(network.network_address) + start

    def take(self, count: int = 1, align: int = 1) -> ipaddress.IPv4Address:
        self.next += -self.next % align
        first = self.next
        self.next += count
        if self.next > int(self.network.broadcast_address):
            raise LabPlanError(f"the lab's infrastructure network {self.network} is too small for this fleet")
        return ipaddress.IPv4Address(first)


def _client_router(fleet: Fleet, metro: str) -> TransitRouter | None:
    try:
        return client_router(fleet, metro)
    except ValueError:  # a metro without a PoP that has a transit: no client namespace
        return None


def plan_lab(fleet: Fleet) -> LabPlan:
    """The whole lab for ``fleet``; LabPlanError when the fleet lacks what the lab needs."""
    routers_model = transit_routers(fleet)
    taken = fleet_networks(fleet)
    # Each router's loopback is its router id (edgeplane.bgp's transit model): the iBGP sessions run between them.
    loopback = {r.name: r.router_id for r in routers_model}
    for router in routers_model:
        host = ipaddress.IPv4Network(f"{router.router_id}/32")
        if not _free(host, taken):
            raise LabPlanError(f"router {router.name}'s loopback {router.router_id} overlaps the fleet's prefixes")
        taken.append(host)
    mgmt = next((n for n in map(ipaddress.IPv4Network, MGMT_CANDIDATES) if _free(n, taken)), None)
    if mgmt is None:
        raise LabPlanError(f"the fleet's prefixes overlap every management network the lab can use: {MGMT_CANDIDATES}")
    if len(fleet.pops) > 254 - MGMT_FIRST_POP:
        raise LabPlanError(f"the lab takes at most {254 - MGMT_FIRST_POP} PoPs; this fleet has {len(fleet.pops)}")
    space = ipaddress.IPv4Network(INFRA_SPACE)
    infra = next((n for n in reversed(list(space.subnets(new_prefix=INFRA_SIZE))) if _free(n, [*taken, mgmt])), None)
    if infra is None:
        raise LabPlanError(f"no /{INFRA_SIZE} of {INFRA_SPACE} is free of the fleet's prefixes for the lab's links")

    service: dict[str, str] = {}
    for metro in fleet.metros:
        anycast = service_address(fleet, metro.code)
        if anycast is None:
            raise LabPlanError(
                f"metro {metro.code} has no IPv4 service_prefixes: the lab's clients reach the service there"
            )
        service[metro.code] = anycast

    links_pool = _Pool(infra)

    links: list[Link] = []
    routes: list[Route] = []
    peers: dict[str, list[RouterPeer]] = {r.name: [] for r in routers_model}
    router_pops: dict[str, list[RouterPop]] = {r.name: [] for r in routers_model}
    by_key = {(r.asn, r.metro): r for r in routers_model}

    def router_netns(router: TransitRouter) -> str:
        return _netns_name("rt", router.name)

    # A full mesh between the routers of each transit, each link costed by the distance of its metros.
    for i, a in enumerate(routers_model):
        for b in routers_model[i + 1 :]:
            if a.asn != b.asn:
                continue
            cost = igp_cost(fleet, a.metro, b.metro)
            first = links_pool.take(2, align=2)
            a_addr, b_addr = str(first), str(first + 1)
            links.append(
                Link(
                    End(router_netns(a), f"r{b.index}", (Address(a_addr, 31),)),
                    End(router_netns(b), f"r{a.index}", (Address(b_addr, 31),)),
                    cost=cost,
                    rtt_ms=fleet.metro_rtt_ms(a.metro, b.metro),
                )
            )
            peers[a.name].append(RouterPeer(b.name, loopback[b.name], f"r{b.index}", cost))
            peers[b.name].append(RouterPeer(a.name, loopback[a.name], f"r{a.index}", cost))

    mgmt_hosts = list(mgmt.hosts())
    mgmt_netns, control_netns = f"{PREFIX}mgmt", f"{PREFIX}control"
    host_address, control_address = str(mgmt_hosts[0]), str(mgmt_hosts[1])
    links.append(
        Link(
            End(None, HOST_LINK, (Address(host_address, mgmt.prefixlen),)),
            End(mgmt_netns, "mhost", bridge=MGMT_BRIDGE),
        )
    )
    links.append(
        Link(
            End(control_netns, "mgmt0", (Address(control_address, mgmt.prefixlen),)),
            End(mgmt_netns, "mctl", bridge=MGMT_BRIDGE),
        )
    )

    pops: list[PopPlan] = []
    for position, pop in enumerate(fleet.pops):
        netns = _netns_name("pop", pop.code)
        next_hop = next_hops(pop.id)[0]
        mgmt_address = str(mgmt_hosts[MGMT_FIRST_POP - 1 + position])
        links.append(
            Link(
                End(netns, "mgmt0", (Address(mgmt_address, mgmt.prefixlen),)),
                End(mgmt_netns, f"m{pop.id}", bridge=MGMT_BRIDGE),
            )
        )
        pop_links: list[PopLink] = []
        for k, transit in enumerate(pop.transits):
            router = by_key[(transit.asn, pop.metro)]
            router_address = str(links_pool.take())
            ifname = f"t{k}"
            links.append(
                Link(
                    End(netns, ifname, (Address(next_hop, 32, router_address),)),
                    End(router_netns(router), f"p{pop.id}", (Address(router_address, 32, next_hop),)),
                )
            )
            pop_links.append(PopLink(transit.name, transit.asn, router.name, ifname, router_address))
            router_pops[router.name].append(RouterPop(pop.code, f"p{pop.id}", router_address, next_hop))
        if pop_links:
            # Replies to a metro's clients leave through the transit those clients enter by, where the PoP has
            # it: transits do not carry each other's customers here.
            routes.append(Route(netns, "0.0.0.0/0", pop_links[0].router_address))
            for metro in fleet.metros:
                entry = _client_router(fleet, metro.code)
                link = next((pl for pl in pop_links if entry is not None and pl.asn == entry.asn), None)
                if link is not None and link is not pop_links[0]:
                    for prefix in _v4(list(metro.client_prefixes)):
                        routes.append(Route(netns, str(prefix), link.router_address))
        pops.append(
            PopPlan(
                pop.code,
                pop.id,
                pop.metro,
                netns,
                mgmt_address,
                next_hop,
                tuple(service[m.code] for m in fleet.metros),
                tuple(pop_links),
            )
        )

    clients: list[ClientPlan] = []
    client_of: dict[str, tuple[str, ...]] = {}
    for metro in fleet.metros:
        entry = _client_router(fleet, metro.code)
        prefixes = _v4(list(metro.client_prefixes))
        if entry is None or not prefixes:
            continue  # a metro without PoPs (or IPv4 clients) has no client namespace
        prefix = prefixes[0]
        if prefix.prefixlen > 30:
            raise LabPlanError(f"metro {metro.code}'s client prefix {prefix} is too small for a client and its router")
        netns = _netns_name("client", metro.code)
        client_address, gateway = str(prefix.network_address + 1), str(prefix.broadcast_address - 1)
        links.append(
            Link(
                End(netns, "up0", (Address(client_address, prefix.prefixlen),)),
                End(router_netns(entry), "cl0", (Address(gateway, prefix.prefixlen),)),
            )
        )
        routes.append(Route(netns, "0.0.0.0/0", gateway))
        client_of[entry.name] = tuple(str(p) for p in prefixes)
        clients.append(
            ClientPlan(metro.code, netns, client_address, str(prefix), gateway, entry.name, service[metro.code])
        )

    routers = tuple(
        RouterPlan(
            r.name,
            r.transit,
            r.asn,
            r.metro,
            r.index,
            r.router_id,
            router_netns(r),
            loopback[r.name],
            tuple(peers[r.name]),
            tuple(router_pops[r.name]),
            client_of.get(r.name, ()),
            "cl0" if r.name in client_of else None,
        )
        for r in routers_model
    )
    return LabPlan(
        fleet_asn=fleet.asn,
        mgmt_network=str(mgmt),
        mgmt_netns=mgmt_netns,
        host_address=host_address,
        control_netns=control_netns,
        control_address=control_address,
        infra_network=str(infra),
        pops=tuple(pops),
        routers=routers,
        clients=tuple(clients),
        links=tuple(links),
        routes=tuple(routes),
        service_address_by_metro=service,
    )


def addresses(plan: LabPlan) -> Iterator[tuple[str | None, str]]:
    """Every (namespace, address) the plan puts on an interface, loopbacks included."""
    for link in plan.links:
        for end in (link.a, link.b):
            for address in end.addresses:
                yield end.netns, address.local
    for pop in plan.pops:
        for anycast in pop.service_addresses:
            yield pop.netns, anycast
    for router in plan.routers:
        yield router.netns, router.loopback
