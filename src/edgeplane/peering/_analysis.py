"""The peering report: where the routes come from (a RIB file, or each PoP's speaker), the flow store's traffic
over them, and the ranked candidates per metro."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edgeplane._errors import ConfigError
from edgeplane.bgp import Route
from edgeplane.fleet import Fleet
from edgeplane.peering._candidates import BIN_SECONDS, Directory, NoDirectory, candidates, p95, routing_view
from edgeplane.peering._rib import RibError, read_rib, routes_from_speaker
from edgeplane.peering._rib import Route as RibRoute
from edgeplane.peering._store import FlowStore, summarise

DEFAULT_TOP = 20
# Numbers on AS paths that are no network one could peer with: reserved (RFC 7607), AS_TRANS (RFC 6793), last.
NOT_NETWORKS = {0, 23456, 65535, 4294967295}


@dataclass(frozen=True, slots=True)
class Routes:
    """The routes each PoP's transits send it, and where they were read."""

    by_pop: Mapping[str, Sequence[Route]]
    source: str


def _for_decision(routes: Sequence[RibRoute]) -> list[Route]:
    """Routes as the decision process takes them (the same one `bgp explain` runs)."""
    return [
        Route(
            prefix=r.prefix,
            peer=r.next_hop or "",
            peer_asn=r.transit_asn,
            next_hop=r.next_hop or "",
            as_path=r.as_path,
            med=r.med,
            local_pref=r.local_pref,
        )
        for r in routes
    ]


def rib_routes(fleet: Fleet, path: Path) -> Routes:
    """One table for every PoP from a file (MRT TABLE_DUMP_V2 or `birdc show route all`); each PoP keeps the
    routes its own transits sent."""
    table = _for_decision(read_rib(path))
    return Routes({pop.code: table for pop in fleet.pops}, str(path))


def speaker_routes(fleet: Fleet, data_dir: Path) -> Routes:
    """The routes each PoP's speaker (`bgp run`) received from its transits, as it last wrote them."""
    found: dict[str, Sequence[Route]] = {}
    for pop in fleet.pops:
        path = data_dir / f"bgp-{pop.code}" / "rib-in.json"
        try:
            body = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            continue
        except OSError as error:
            raise RibError(f"{path}: cannot read the received routes ({error.strerror})") from None
        except orjson.JSONDecodeError as error:
            raise RibError(f"{path}: not JSON ({error})") from None
        found[pop.code] = _for_decision(routes_from_speaker(body, source=str(path)))
    if not found:
        raise ConfigError(
            f"no received routes under {data_dir} (bgp-POP/rib-in.json): give --rib FILE (MRT or a birdc dump),"
            " or run the PoPs' speakers (`edgeplane bgp run`)"
        )
    return Routes(found, f"{data_dir}/bgp-*/rib-in.json")


def report(
    fleet: Fleet,
    store: FlowStore,
    routes: Routes,
    *,
    metros: Sequence[str] | None = None,
    top: int = DEFAULT_TOP,
    directory: Directory | None = None,
    price_per_mbps: float | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> dict[str, Any]:
    """``{"metros": [{"code", "candidates": [...]}, ...]}`` (see edgeplane.peering._candidates for the figures)."""
    started = time.perf_counter()
    directory = directory or NoDirectory()
    view = routing_view(fleet, routes.by_pop)
    exclude = {
        m.code: {t.asn for p in fleet.pops_in(m.code) for t in p.transits} | {fleet.asn} | NOT_NETWORKS
        for m in fleet.metros
    }
    with store.open(read_only=True) as connection:
        found = summarise(
            connection, view, metros=metros, top=top, exclude=exclude, since_ms=since_ms, until_ms=until_ms
        )
    by_code = {t.code: t for t in found}
    shown = []
    for code in metros if metros is not None else sorted(by_code):
        traffic = by_code.get(code)
        if traffic is None:
            shown.append(
                {
                    "code": code,
                    "name": fleet.metro_by_code[code].name,
                    "bins": 0,
                    "transit_bytes": 0,
                    "unrouted_bytes": 0,
                    "transits": [],
                    "candidates": [],
                }
            )
            continue
        shown.append(candidates(fleet, traffic, top=top, directory=directory, price_per_mbps=price_per_mbps))
    return {
        "metros": shown,
        "routes": {
            "source": routes.source,
            "prefixes": len({r.prefix for t in {id(t): t for t in routes.by_pop.values()}.values() for r in t}),
        },
        "bin_seconds": BIN_SECONDS,
        "seconds": round(time.perf_counter() - started, 3),
    }


def inbound_gbps(
    fleet: Fleet,
    store: FlowStore,
    routes: Routes,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> dict[str, dict[int, float]]:
    """Per PoP and transit, the 95th percentile of inbound traffic in Gbps (what `bgp balance` balances), each
    flow counted against the transit its remote address is routed over today."""
    view = routing_view(fleet, routes.by_pop)
    with store.open(read_only=True) as connection:
        found = summarise(connection, view, metros=None, top=0, exclude={}, since_ms=since_ms, until_ms=until_ms)
    traffic: dict[str, dict[int, float]] = {}
    for metro in found:
        for (pop, asn), series in metro.transits.items():
            traffic.setdefault(pop, {})[asn] = p95(series.inbound, metro.bins) * 8 / BIN_SECONDS / 1e9
    return traffic
