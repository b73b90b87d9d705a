"""The BGP decision process (RFC 4271 section 9.1 and the usual vendor steps), explaining each choice. Pure."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

ORIGINS = {"igp": 0, "egp": 1, "incomplete": 2}
DEFAULT_LOCAL_PREF = 100


@dataclass(frozen=True, slots=True)
class Route:
    """One path to a prefix, as learned from one neighbour."""

    prefix: str
    peer: str  # the neighbour's address
    peer_asn: int
    next_hop: str = ""
    as_path: tuple[int, ...] = ()
    origin: str = "igp"
    med: int | None = None  # missing counts as 0, the lowest (RFC 4271 9.1.2.2 c)
    local_pref: int | None = None  # missing counts as 100
    weight: int = 0  # local to this router, never sent
    locally_originated: bool = False
    ibgp: bool = False
    igp_cost: int = 0
    router_id: str | None = None  # the neighbour's BGP identifier; the peer address when unknown

    @property
    def neighbor_as(self) -> int:
        """The AS the route came from: the leftmost AS of its path (RFC 4271 9.1.2.2 c)."""
        return self.as_path[0] if self.as_path else self.peer_asn

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "peer": self.peer,
            "peer_asn": self.peer_asn,
            "next_hop": self.next_hop,
            "as_path": list(self.as_path),
            "origin": self.origin,
            "med": self.med,
            "local_pref": self.local_pref,
            "weight": self.weight,
            "locally_originated": self.locally_originated,
            "ibgp": self.ibgp,
            "igp_cost": self.igp_cost,
            "router_id": self.router_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Route:
        origin = str(data.get("origin", "igp")).lower()
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
        return cls(
            prefix=str(ipaddress.ip_network(str(data["prefix"]))),
            peer=str(ipaddress.ip_address(str(data["peer"]))),
            peer_asn=int(data["peer_asn"]),
            next_hop=str(data.get("next_hop", "")),
            as_path=tuple(int(a) for a in data.get("as_path", ())),
            origin=origin,
            med=None if data.get("med") is None else int(data["med"]),
            local_pref=None if data.get("local_pref") is None else int(data["local_pref"]),
            weight=int(data.get("weight", 0)),
            locally_originated=bool(data.get("locally_originated", False)),
            ibgp=bool(data.get("ibgp", False)),
            igp_cost=int(data.get("igp_cost", 0)),
            router_id=data.get("router_id"),
        )

    def label(self) -> str:
        return f"via {self.peer} (AS{self.peer_asn})"


@functools.lru_cache(maxsize=1 << 16)
def _ip(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return address.version, int(address)


# The steps in order, each with a key where lower wins.
STEPS: list[tuple[str, Callable[[Route], Any]]] = [
    ("weight", lambda r: -r.weight),
    ("local_pref", lambda r: -(DEFAULT_LOCAL_PREF if r.local_pref is None else r.local_pref)),
    ("locally_originated", lambda r: 0 if r.locally_originated else 1),
    ("as_path_length", lambda r: len(r.as_path)),
    ("origin", lambda r: ORIGINS[r.origin]),
    ("med", lambda r: r.med or 0),
    ("ebgp_over_ibgp", lambda r: 1 if r.ibgp else 0),
    ("igp_cost", lambda r: r.igp_cost),
    ("router_id", lambda r: _ip(r.router_id or r.peer)),
    ("peer_address", lambda r: _ip(r.peer)),
]


@dataclass(frozen=True, slots=True)
class Comparison:
    winner: Route
    loser: Route
    step: str  # the step that decided
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner.label(), "loser": self.loser.label(), "step": self.step, "detail": self.detail}


def compare(a: Route, b: Route, *, always_compare_med: bool = False) -> Comparison:
    """Which of two routes to the same prefix wins, and at which step. MED is compared only between routes
    from the same neighbour AS unless ``always_compare_med``."""
    for name, key in STEPS:
        if name == "med" and not always_compare_med and a.neighbor_as != b.neighbor_as:
            continue
        ka, kb = key(a), key(b)
        if ka != kb:
            winner, loser = (a, b) if ka < kb else (b, a)
            return Comparison(winner, loser, name, _detail(name, winner, loser))
    return Comparison(a, b, "equal", "the routes are equal in every step")


def _detail(step: str, winner: Route, loser: Route) -> str:
    values: dict[str, Callable[[Route], Any]] = {
        "weight": lambda r: r.weight,
        "local_pref": lambda r: DEFAULT_LOCAL_PREF if r.local_pref is None else r.local_pref,
        "locally_originated": lambda r: r.locally_originated,
        "as_path_length": lambda r: len(r.as_path),
        "origin": lambda r: r.origin,
        "med": lambda r: r.med or 0,
        "ebgp_over_ibgp": lambda r: "iBGP" if r.ibgp else "eBGP",
        "igp_cost": lambda r: r.igp_cost,
        "router_id": lambda r: r.router_id or r.peer,
        "peer_address": lambda r: r.peer,
    }
    value = values[step]
    return f"{step.replace('_', ' ')}: {value(winner)} beats {value(loser)}"


@dataclass(frozen=True, slots=True)
class Decision:
    prefix: str
    best: Route | None
    reasons: tuple[Comparison, ...]  # why each other route lost
    method: str

    def to_json(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "best": self.best.to_json() if self.best else None,
            "method": self.method,
            "others": [c.to_json() for c in self.reasons],
        }


MED = 5  # the position of MED in a route's key
EBGP_OVER_IBGP = 6  # the steps before it compare the path itself; from it on, how this router reaches it


def _key(r: Route) -> tuple[Any, ...]:
    """Every step's key in order (lower wins), computed once per route: the fast path of :func:`compare`."""
    return (
        -r.weight,
        -(DEFAULT_LOCAL_PREF if r.local_pref is None else r.local_pref),
        0 if r.locally_originated else 1,
        len(r.as_path),
        ORIGINS[r.origin],
        r.med or 0,
        1 if r.ibgp else 0,
        r.igp_cost,
        _ip(r.router_id or r.peer),
        _ip(r.peer),
    )


def path_key(r: Route) -> tuple[Any, ...]:
    """The steps that weigh the path itself (weight to MED; lower wins), which iBGP carries unchanged: every
    router of an AS ranks two paths alike on them, whichever router learned each over eBGP. MED is included,
    so compare only paths from one neighbour AS this way (or with always-compare-med)."""
    return _key(r)[:EBGP_OVER_IBGP]


def _wins(a: Route, ka: tuple[Any, ...], b: Route, kb: tuple[Any, ...], always_compare_med: bool) -> bool:
    """True if ``a`` stays best against ``b`` (ties keep the incumbent)."""
    if always_compare_med or a.neighbor_as == b.neighbor_as:
        return ka <= kb
    return ka[:MED] + ka[MED + 1 :] <= kb[:MED] + kb[MED + 1 :]


def _fold(routes: Sequence[Route], keys: dict[int, tuple[Any, ...]], always_compare_med: bool) -> Route:
    best = routes[0]
    for route in routes[1:]:
        if not _wins(best, keys[id(best)], route, keys[id(route)], always_compare_med):
            best = route
    return best


def best_path(
    routes: Sequence[Route], *, always_compare_med: bool = False, deterministic_med: bool = False, explain: bool = True
) -> Decision:
    """The best of ``routes`` (all to one prefix). Without always-compare-med MED is not transitive, so:
    deterministic MED first picks the best of each neighbour AS and then compares those (RFC 4271's procedure,
    order-independent); otherwise routes are compared one by one in the order given (as they arrived), which
    is what routers do by default and can depend on that order. ``explain`` adds why each other route lost."""
    if not routes:
        return Decision("", None, (), "no route")
    prefix = routes[0].prefix
    keys = {id(r): _key(r) for r in routes}
    if always_compare_med or not deterministic_med:
        method = "always-compare-med" if always_compare_med else "pairwise in arrival order"
        best = _fold(routes, keys, always_compare_med)
        reasons = (
            tuple(compare(best, r, always_compare_med=always_compare_med) for r in routes if r is not best)
            if explain
            else ()
        )
        return Decision(prefix, best, reasons, method)
    groups: dict[int, list[Route]] = {}
    for route in routes:
        groups.setdefault(route.neighbor_as, []).append(route)
    leaders = [_fold(members, keys, False) for members in groups.values()]
    best = _fold(leaders, keys, False)
    reasons_list: list[Comparison] = []
    if explain:
        for leader, members in zip(leaders, groups.values(), strict=True):
            reasons_list += [compare(leader, r) for r in members if r is not leader]
        reasons_list += [compare(best, r) for r in leaders if r is not best]
    return Decision(prefix, best, tuple(reasons_list), "deterministic-med")


def by_prefix(routes: Iterable[Route]) -> dict[str, list[Route]]:
    table: dict[str, list[Route]] = {}
    for route in routes:
        table.setdefault(route.prefix, []).append(route)
    return table
