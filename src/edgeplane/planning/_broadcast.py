"""Broadcast plans for the fabric: which site each site receives an object from, over the fleet's links, so that
sending one object to many sites takes barely longer than sending it to one (pure: no sockets, no clock).

Sites forward chunks while they still receive them, so a plan is a tree whose completion time is the object's
size over the slowest link in it, plus the pipeline's fill (one chunk and one round trip per hop). The tree is
the one with the widest bottleneck any tree can have, and, among those, the fewest hops. The origin sends one
copy (a single child) unless a target can be reached only through it; sites that already hold the object
complete serve as further roots; sites out of service carry nothing.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeplane.fleet import Fleet


@dataclass(frozen=True, slots=True)
class FabricLink:
    """One fabric link: both directions carry ``bytes_per_second`` each."""

    a: str
    b: str
    bytes_per_second: float
    rtt_seconds: float = 0.0


def fabric_links(fleet: Fleet, scale: float = 1.0) -> list[FabricLink]:
    """The fleet's links, their capacities times ``scale`` (the emulated fabric's time scale)."""
    return [
        FabricLink(link.a, link.b, link.capacity_gbps * 1e9 / 8 * scale, (link.rtt_ms or 0.0) / 1000)
        for link in fleet.links
    ]


def link_between(links: Sequence[FabricLink], a: str, b: str) -> FabricLink | None:
    """The link joining two sites directly, the widest if there are several."""
    found = [link for link in links if {link.a, link.b} == {a, b}]
    return max(found, key=lambda link: link.bytes_per_second, default=None)


def widest_rate(links: Sequence[FabricLink], a: str, b: str) -> float:
    """Bytes per second from ``a`` to ``b`` over the widest path of links between them (0 when none joins them)."""
    best = _widest(_adjacency(links, frozenset()), {a: math.inf})
    return 0.0 if a == b else best.get(b, (0.0, 0, 0.0, None))[0]


@dataclass(frozen=True)
class BroadcastPlan:
    """Who receives from whom. ``parents`` holds every site that receives (targets, and relays that pass the
    object on to targets behind them); ``sources`` are the roots that hold it already."""

    origin: str
    sources: tuple[str, ...]
    targets: frozenset[str]
    parents: Mapping[str, str]
    unreachable: frozenset[str]
    size_bytes: int
    chunk_bytes: int
    rates: Mapping[tuple[str, str], float] = field(repr=False)  # (sender, receiver) -> bytes per second
    rtts: Mapping[tuple[str, str], float] = field(repr=False)

    @property
    def relays(self) -> frozenset[str]:
        return frozenset(self.parents) - self.targets

    def children(self, pop: str) -> list[str]:
        return sorted(child for child, parent in self.parents.items() if parent == pop)

    def path(self, pop: str) -> list[str]:
        """The sites the object passes through to reach ``pop``, from its root."""
        path = [pop]
        while path[-1] in self.parents:
            path.append(self.parents[path[-1]])
        return path[::-1]

    def site_bound_seconds(self, pop: str) -> float:
        """The least time ``pop`` can hold the whole object in: its size over the slowest link on its path, a chunk
        stored and forwarded by each other hop, and a round trip per hop for the first request."""
        path = self.path(pop)
        hops = list(itertools.pairwise(path))
        if not hops:
            return 0.0
        rates = [self.rates[hop] for hop in hops]
        slowest = min(rates)
        chunk = min(self.chunk_bytes, self.size_bytes)
        fill = sum(chunk / rate for rate in rates) - chunk / slowest
        return self.size_bytes / slowest + fill + sum(self.rtts[hop] for hop in hops)

    @property
    def lower_bound_seconds(self) -> float:
        return max((self.site_bound_seconds(pop) for pop in self.targets - self.unreachable), default=0.0)

    @property
    def origin_copies(self) -> int:
        """How many copies the origin sends: one per child."""
        return len(self.children(self.origin))

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "sources": list(self.sources),
            "targets": sorted(self.targets),
            "relays": sorted(self.relays),
            "unreachable": sorted(self.unreachable),
            "parents": dict(sorted(self.parents.items())),
            "lower_bound_seconds": self.lower_bound_seconds,
            "bottleneck_bytes_per_second": min(self.rates.values(), default=0.0),
        }


def plan_broadcast(
    links: Sequence[FabricLink],
    origin: str,
    targets: Iterable[str],
    *,
    size_bytes: int,
    chunk_bytes: int,
    holders: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> BroadcastPlan:
    """The tree that sends an object from ``origin`` (and any ``holders``, which hold it complete) to ``targets``,
    around the ``exclude``d sites. Targets no link reaches are ``unreachable``."""
    out = frozenset(exclude) - {origin}
    sources = tuple(dict.fromkeys([origin, *sorted(set(holders) - out - {origin})]))
    wanted = frozenset(targets) - set(sources) - out
    adjacency = _adjacency(links, out)
    best: tuple[float, int, float] | None = None
    chosen: dict[str, tuple[float, int, float, str | None]] = {}
    # The origin sends one copy: try each of its links as the only one out, keep the best tree.
    firsts: list[str | None] = [*sorted(adjacency.get(origin, {}))] or [None]
    for first in firsts:
        labels = _single_copy_tree(adjacency, origin, first, sources, wanted)
        score = _score(labels, wanted, size_bytes, chunk_bytes, origin)
        if best is None or score < best:
            best, chosen = score, labels
    reached = frozenset(pop for pop in wanted if pop in chosen)
    parents = _prune({pop: parent for pop, (*_, parent) in chosen.items() if parent is not None}, reached)
    rates = {(parent, pop): adjacency[parent][pop][0] for pop, parent in parents.items()}
    rtts = {(parent, pop): adjacency[parent][pop][1] for pop, parent in parents.items()}
    return BroadcastPlan(
        origin=origin,
        sources=sources,
        targets=wanted,
        parents=parents,
        unreachable=wanted - reached,
        size_bytes=size_bytes,
        chunk_bytes=chunk_bytes,
        rates=rates,
        rtts=rtts,
    )


Adjacency = dict[str, dict[str, tuple[float, float]]]  # site -> neighbour -> (bytes per second, rtt seconds)
Label = tuple[float, int, float, str | None]  # widest bottleneck, hops, rtt sum, parent


def _adjacency(links: Sequence[FabricLink], out: frozenset[str]) -> Adjacency:
    adjacency: Adjacency = {}
    for link in links:
        if link.a in out or link.b in out or link.a == link.b:
            continue
        for x, y in ((link.a, link.b), (link.b, link.a)):
            known = adjacency.setdefault(x, {}).get(y)
            if known is None or link.bytes_per_second > known[0]:
                adjacency[x][y] = (link.bytes_per_second, link.rtt_seconds)
    return adjacency


def _widest(adjacency: Adjacency, roots: Mapping[str, float]) -> dict[str, Label]:
    """Per site: the widest bottleneck from any root, then the fewest hops, then the least RTT (Dijkstra on that
    order)."""
    labels: dict[str, Label] = {root: (width, 0, 0.0, None) for root, width in roots.items()}
    heap = [(-width, 0, 0.0, root) for root, width in sorted(roots.items())]
    heapq.heapify(heap)
    done: set[str] = set()
    while heap:
        negative, hops, rtt, pop = heapq.heappop(heap)
        if pop in done:
            continue
        done.add(pop)
        for neighbour, (rate, link_rtt) in sorted(adjacency.get(pop, {}).items()):
            if neighbour in done:
                continue
            label = (min(-negative, rate), hops + 1, rtt + link_rtt, pop)
            known = labels.get(neighbour)
            if known is None or (-label[0], label[1], label[2]) < (-known[0], known[1], known[2]):
                labels[neighbour] = label
                heapq.heappush(heap, (-label[0], label[1], label[2], neighbour))
    return labels


Root = tuple[float, int, float]  # a root's width, and the hops and RTT it is from the origin already


def _tree(adjacency: Adjacency, roots: Mapping[str, Root], wanted: frozenset[str]) -> dict[str, Label]:
    """The widest tree, then as shallow as that width allows: the bottleneck every wanted site can be reached
    with, then the fewest hops (and least RTT) over the links at least that wide."""
    widest = _widest(adjacency, {root: width for root, (width, _, _) in roots.items()})
    floor = min((widest[pop][0] for pop in wanted if pop in widest), default=0.0)
    labels: dict[str, Label] = {root: (width, hops, rtt, None) for root, (width, hops, rtt) in roots.items()}
    heap = [(hops, rtt, root) for root, (_, hops, rtt) in sorted(roots.items())]
    heapq.heapify(heap)
    done: set[str] = set()
    while heap:
        hops, rtt, pop = heapq.heappop(heap)
        if pop in done:
            continue
        done.add(pop)
        for neighbour, (rate, link_rtt) in sorted(adjacency.get(pop, {}).items()):
            if neighbour in done or rate < floor:
                continue
            known = labels.get(neighbour)
            if known is None or (hops + 1, rtt + link_rtt) < (known[1], known[2]):
                labels[neighbour] = (min(labels[pop][0], rate), hops + 1, rtt + link_rtt, pop)
                heapq.heappush(heap, (hops + 1, rtt + link_rtt, neighbour))
    return labels


def _single_copy_tree(
    adjacency: Adjacency, origin: str, first: str | None, sources: Sequence[str], wanted: frozenset[str]
) -> dict[str, Label]:
    """A tree in which the origin sends only to ``first``; the origin sends more copies only to what cannot be
    reached otherwise."""
    others: dict[str, Root] = {pop: (math.inf, 0, 0.0) for pop in sources if pop != origin}
    if first is None:
        return _tree(adjacency, {origin: (math.inf, 0, 0.0), **others}, wanted)
    rate, rtt = adjacency[origin][first]
    without = {pop: {n: v for n, v in nbrs.items() if n != origin} for pop, nbrs in adjacency.items() if pop != origin}
    labels = dict(_tree(without, {first: (rate, 1, rtt), **others}, wanted))
    if first not in others:
        labels[first] = (rate, 1, rtt, origin)
    labels[origin] = (math.inf, 0, 0.0, None)
    missing = frozenset(pop for pop in wanted if pop not in labels)
    if missing:  # only the origin reaches these: it sends them a copy of their own
        for pop, label in _tree(adjacency, {origin: (math.inf, 0, 0.0), **others}, missing).items():
            labels.setdefault(pop, label)
    return labels


def _score(
    labels: Mapping[str, Label], wanted: frozenset[str], size_bytes: int, chunk_bytes: int, origin: str
) -> tuple[float, int, float]:
    """Fewer unreachable targets first, then fewer copies from the origin, then the slowest target's bound."""
    reached = frozenset(pop for pop in wanted if pop in labels)
    parents = _prune({pop: parent for pop, (*_, parent) in labels.items() if parent is not None}, reached)
    copies = sum(parent == origin for parent in parents.values())
    worst = 0.0
    for pop in reached:
        width, hops, rtt, _ = labels[pop]
        chunk = min(chunk_bytes, size_bytes)
        worst = max(worst, size_bytes / width + max(0, hops - 1) * chunk / width + rtt if width > 0 else math.inf)
    return (float(len(wanted) - len(reached)), copies, worst)


def _prune(parents: Mapping[str, str], keep: frozenset[str]) -> dict[str, str]:
    """Only the sites on some kept site's path: relays with no target behind them are dropped."""
    needed: set[str] = set()
    for pop in keep:
        while pop in parents and pop not in needed:
            needed.add(pop)
            pop = parents[pop]
    return {pop: parents[pop] for pop in sorted(needed)}
