"""What goes to each neighbour: intents with the action communities carried out, as ExaBGP commands. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from edgeplane.bgp._communities import Community, Kind, LargeCommunity, parse_community
from edgeplane.bgp._intents import Intent
from edgeplane.fleet import Transit


@dataclass(frozen=True, slots=True)
class Neighbor:
    address: str
    asn: int
    port: int | None = None

    @classmethod
    def parse(cls, text: str, asn: int) -> Neighbor:
        """``ADDRESS`` or ``ADDRESS:PORT`` (IPv6 with a port as ``[ADDRESS]:PORT``)."""
        host, port = text, None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = rest.removeprefix(":") or None
        elif text.count(":") == 1:
            host, port = text.split(":")
        try:
            ipaddress.ip_address(host)
            number = int(port) if port is not None else None
        except ValueError:
            raise ValueError(f"{text!r} is not ADDRESS or ADDRESS:PORT") from None
        if number is not None and not 1 <= number <= 65535:
            raise ValueError(f"port {number} of {text!r} is out of range")
        return cls(host, asn, number)


@dataclass(frozen=True, slots=True)
class RouteOut:
    """One route as sent to one neighbour."""

    prefix: str
    next_hop: str
    # The whole AS path, our AS included, when we prepend (ExaBGP sends it as given); empty: ExaBGP sends our AS.
    as_path: tuple[int, ...] = ()
    med: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()

    def announce(self, neighbor: str) -> str:
        words = [f"neighbor {neighbor} announce route {self.prefix} next-hop {self.next_hop}"]
        if self.as_path:
            words.append(f"as-path [ {' '.join(map(str, self.as_path))} ]")
        if self.med is not None:
            words.append(f"med {self.med}")
        if self.communities:
            words.append(f"community [ {' '.join(f'{a}:{b}' for a, b in self.communities)} ]")
        if self.large_communities:
            words.append(f"large-community [ {' '.join(':'.join(map(str, c)) for c in self.large_communities)} ]")
        return " ".join(words)

    def withdraw(self, neighbor: str) -> str:
        return f"neighbor {neighbor} withdraw route {self.prefix} next-hop {self.next_hop}"


def routes_for(asn: int, intents: Iterable[Intent], neighbor: Neighbor, transit: Transit | None) -> list[RouteOut]:
    """Carry out the action communities aimed at this neighbour's AS: ``A:20:N`` keeps the route from it,
    ``A:21..23:N`` prepends 1 to 3 times toward it, as the transit's own community where the fleet gives one.
    An intent's own ``as_path_prepend`` (a drained PoP's aggregates) goes to every neighbour, in the AS path."""
    routes: list[RouteOut] = []
    for intent in intents:
        aimed = {c[1] for c in intent.large_communities if c[0] == asn and c[2] == neighbor.asn}
        if Kind.NO_EXPORT_TO in aimed:
            continue
        times = max((k - Kind.PREPEND_1 + 1 for k in aimed if Kind.PREPEND_1 <= k <= Kind.PREPEND_3), default=0)
        prepends = intent.as_path_prepend
        communities, large = list(intent.communities), list(intent.large_communities)
        if times:
            mapped = transit.prepend_communities if transit else []
            if len(mapped) >= times:
                theirs = parse_community(mapped[times - 1])
                (communities if len(theirs) == 2 else large).append(theirs)  # type: ignore[arg-type]
            else:
                prepends += times
        as_path = (asn,) * (prepends + 1) if prepends else ()
        routes.append(RouteOut(intent.prefix, intent.next_hop, as_path, intent.med, tuple(communities), tuple(large)))
    return routes
