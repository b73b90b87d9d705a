"""Peering analysis: which networks behind a metro's transits carry enough of its traffic to peer with directly,
what that would save, and where both networks meet. Pure: the store's queries hand it traffic per bin.

Definitions (the ones a transit invoice uses):
- traffic is counted in 5-minute bins over the window, from the first to the last bin the store holds traffic
  for within it (bins without traffic in between count as zero; the store knows nothing outside them);
- a series' 95th percentile is the nearest-rank one: sorted ascending, the value at rank ceil(0.95 n);
- a transit is billed on max(p95 in, p95 out) in Mbps; a candidate's ``p95_mbps`` is that same figure for the
  traffic whose AS path contains it;
- the saving is, for each PoP and transit that carries the candidate's traffic, the transit's price per Mbps
  times the drop of the billed figure when that traffic leaves the transit for a direct session."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edgeplane.bgp import Route, best_path
from edgeplane.fleet import Fleet, Metro
from edgeplane.peering._rib import disjoint_ranges

BIN_SECONDS = 300

Series = npt.NDArray[np.float64]  # bytes per bin, one array for each direction


class Place(Protocol):
    @property
    def kind(self) -> str: ...  # "ix" or "facility"

    @property
    def name(self) -> str: ...


class Directory(Protocol):
    """What is known about other networks: their names, peering policies and where we could meet them."""

    def name(self, asn: int) -> str | None: ...

    def policy(self, asn: int) -> str | None: ...

    def meet(self, asn: int, our_asn: int, metro: Metro) -> Sequence[Place]: ...


class NoDirectory:
    """Nothing known (no PeeringDB file given)."""

    def name(self, asn: int) -> str | None:
        return None

    def policy(self, asn: int) -> str | None:
        return None

    def meet(self, asn: int, our_asn: int, metro: Metro) -> Sequence[Place]:
        return ()


@dataclass(frozen=True, slots=True)
class RoutingView:
    """The routes each PoP uses today, flattened for a range join: an address in [lo, hi] of table t takes
    route r (its longest match among the best routes of that table's PoPs)."""

    ranges: tuple[tuple[int, int, int, int], ...]  # (table, lo, hi, route)
    routes: tuple[tuple[int, tuple[int, ...]], ...]  # route -> (transit ASN, AS path)
    table_of_pop: Mapping[str, int]

    def route_asns(self) -> list[tuple[int, int]]:
        """(route, ASN) for each network behind the transit on each route's path, once per route."""
        rows = []
        for index, (transit, path) in enumerate(self.routes):
            for asn in dict.fromkeys(path):
                if asn != transit:
                    rows.append((index, asn))
        return rows


def routing_view(fleet: Fleet, routes_by_pop: Mapping[str, Sequence[Route]]) -> RoutingView:
    """Each PoP's best route per prefix among those its own transits sent (the decision process as `bgp explain`
    runs it by default: shortest AS path, then MED, compared across transits), PoPs that see the same table
    sharing it."""
    tables: dict[tuple[int, frozenset[int]], int] = {}
    table_of_pop: dict[str, int] = {}
    route_index: dict[tuple[int, tuple[int, ...]], int] = {}
    ranges: list[tuple[int, int, int, int]] = []
    for pop in sorted(routes_by_pop):
        received = routes_by_pop[pop]
        transits = frozenset(t.asn for t in fleet.pop_by_code[pop].transits)
        key = (id(received), transits)
        if key in tables:
            table_of_pop[pop] = tables[key]
            continue
        table = tables[key] = len(tables)
        table_of_pop[pop] = table
        by_prefix: dict[str, list[Route]] = {}
        for route in received:
            if route.peer_asn in transits:
                by_prefix.setdefault(route.prefix, []).append(route)
        prefixes = sorted(by_prefix)
        chosen: list[int] = []
        for prefix in prefixes:
            best = best_path(by_prefix[prefix], always_compare_med=True, explain=False).best
            assert best is not None
            chosen.append(route_index.setdefault((best.peer_asn, best.as_path), len(route_index)))
        for lo, hi, which in disjoint_ranges(prefixes):
            ranges.append((table, lo, hi, chosen[which]))
    routes = tuple(sorted(route_index, key=lambda k: route_index[k]))
    return RoutingView(tuple(ranges), routes, table_of_pop)


def p95(values: Series, bins: int) -> float:
    """Nearest-rank 95th percentile of ``values`` (the non-zero bins) among ``bins`` bins, the rest zero."""
    if bins <= 0:
        return 0.0
    rank = bins - math.ceil(0.95 * bins)  # how many bins lie above the 95th percentile
    nonzero = np.sort(values[values > 0])[::-1]
    return float(nonzero[rank]) if rank < len(nonzero) else 0.0


def mbps(bytes_per_bin: float) -> float:
    return bytes_per_bin * 8 / BIN_SECONDS / 1e6


@dataclass(slots=True)
class Traffic:
    """One series pair (bytes per bin, in and out) with its totals."""

    inbound: Series
    outbound: Series
    bytes: int = 0
    packets: int = 0

    def billed_mbps(self, bins: int) -> float:
        return mbps(max(p95(self.inbound, bins), p95(self.outbound, bins)))


@dataclass(slots=True)
class MetroTraffic:
    """What the store found for one metro over the window."""

    code: str
    bins: int
    transits: dict[tuple[str, int], Traffic]  # (PoP, transit ASN) -> all the traffic it carries
    networks: dict[int, tuple[int, int, float, float]]  # ASN -> (bytes, packets, p95 in, p95 out in bytes/bin)
    behind: dict[int, dict[tuple[str, int], Traffic]] = field(default_factory=dict)  # top ASNs: per PoP and transit
    unrouted_bytes: int = 0


def rank(networks: Mapping[int, tuple[int, int, float, float]], exclude: set[int], top: int) -> list[int]:
    """The ASNs by billed p95 (then bytes, then number), ``top`` of them."""
    eligible = [a for a in networks if a not in exclude]
    eligible.sort(key=lambda a: (-max(networks[a][2], networks[a][3]), -networks[a][0], a))
    return eligible[:top]


def candidates(
    fleet: Fleet,
    traffic: MetroTraffic,
    *,
    top: int,
    directory: Directory,
    price_per_mbps: float | None = None,
) -> dict[str, Any]:
    """The metro's report: its transits and its ranked candidates (see the module's definitions)."""
    metro = fleet.metro_by_code[traffic.code]
    bins = traffic.bins
    price = {}
    capacity = {}
    names = {}
    for pop in fleet.pops_in(metro.code):
        for transit in pop.transits:
            given = transit.price_per_mbps if price_per_mbps is None else price_per_mbps
            price[(pop.code, transit.asn)] = given
            capacity[(pop.code, transit.asn)] = transit.capacity_gbps * 1000
            names[transit.asn] = transit.name
    transit_bytes = sum(t.bytes for t in traffic.transits.values())
    billed = {key: t.billed_mbps(bins) for key, t in traffic.transits.items()}
    rows = []
    order = rank(traffic.networks, set(names) | {fleet.asn}, top)
    for asn in order:
        total_bytes, packets, p95_in, p95_out = traffic.networks[asn]
        per_transit = traffic.behind.get(asn, {})
        saving: float | None = 0.0
        balance = []
        for key in sorted(per_transit):
            part = per_transit[key]
            whole = traffic.transits[key]
            after = Traffic(whole.inbound - part.inbound, whole.outbound - part.outbound).billed_mbps(bins)
            cost = price.get(key)
            if cost is None:
                saving = None
            elif saving is not None:
                saving += cost * (billed[key] - after)
            limit = capacity.get(key)
            balance.append(
                {
                    "pop": key[0],
                    "transit_asn": key[1],
                    "p95_mbps_before": round(billed[key], 6),
                    "p95_mbps_after": round(after, 6),
                    "utilisation_before": round(billed[key] / limit, 6) if limit else None,
                    "utilisation_after": round(after / limit, 6) if limit else None,
                }
            )
        carried: dict[int, int] = {}
        for (_, via), part in per_transit.items():
            carried[via] = carried.get(via, 0) + part.bytes
        rows.append(
            {
                "asn": asn,
                "name": directory.name(asn),
                "p95_mbps": round(mbps(max(p95_in, p95_out)), 6),
                "p95_in_mbps": round(mbps(p95_in), 6),
                "p95_out_mbps": round(mbps(p95_out), 6),
                "bytes": total_bytes,
                "packets": packets,
                "via_transits": sorted(carried, key=lambda a: (-carried[a], a)),
                "share": round(total_bytes / transit_bytes, 6) if transit_bytes else 0.0,
                "saving_per_month": None if saving is None else round(saving, 2),
                "meet": [{"kind": m.kind, "name": m.name} for m in directory.meet(asn, fleet.asn, metro)],
                "policy": directory.policy(asn),
                "balance": balance,
            }
        )
    return {
        "code": metro.code,
        "name": metro.name,
        "bins": bins,
        "transit_bytes": transit_bytes,
        "unrouted_bytes": traffic.unrouted_bytes,
        "transits": [
            {
                "pop": pop,
                "asn": asn,
                "name": names.get(asn),
                "bytes": traffic.transits[(pop, asn)].bytes,
                "p95_mbps": round(billed[(pop, asn)], 6),
                "price_per_mbps": price.get((pop, asn)),
            }
            for pop, asn in sorted(traffic.transits)
        ],
        "candidates": rows,
    }
