"""The flow store: raw flows and their 5-minute aggregates in a DuckDB file in the data directory, its
counters, retention, Parquet export, and the traffic queries the peering analysis reads.

DuckDB lets one process write a database file or several read it, not both at once. The collector therefore
opens the file only to write a batch (about once a second) and closes it again; a reader (`flows stats`,
`flows export`, `peering candidates`) opens it read-only between those writes. Either side waits for the
other a while (``wait_seconds``) before it gives up, and the collector keeps its batch in memory meanwhile."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edgeplane._errors import ConfigError
from edgeplane._extras import require
from edgeplane.peering._candidates import MetroTraffic, RoutingView, Traffic, rank
from edgeplane.peering._rib import IPV4_MAPPED, prefix_span

if TYPE_CHECKING:
    from edgeplane.peering._decode import FlowColumns

DATABASE = "flows.duckdb"
BIN_MS = 300_000  # transit is billed on 5-minute samples
DEFAULT_WINDOW_MS = 30 * 86_400_000  # what the analysis looks at unless told: a month, as transit is billed
NO_NETWORK = -1  # summarise's stand-in for "every network": a PoP's transits as a whole
OUT, IN = 0, 1  # a flow's direction: from our addresses to a remote one, or from a remote one to ours

SCHEMA = """
CREATE TABLE IF NOT EXISTS flows (
    end_ms BIGINT NOT NULL, start_ms BIGINT NOT NULL,
    pop VARCHAR, metro VARCHAR, exporter VARCHAR NOT NULL,
    direction UTINYINT NOT NULL, src UHUGEINT NOT NULL, dst UHUGEINT NOT NULL,
    bytes UBIGINT NOT NULL, packets UBIGINT NOT NULL,
    protocol UTINYINT NOT NULL, src_port USMALLINT NOT NULL, dst_port USMALLINT NOT NULL, sampling UINTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pops (
    pop_key USMALLINT PRIMARY KEY, pop VARCHAR NOT NULL UNIQUE, metro VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS traffic_5m (
    bin INTEGER NOT NULL, pop_key USMALLINT NOT NULL, direction UTINYINT NOT NULL, remote UHUGEINT NOT NULL,
    bytes UHUGEINT NOT NULL, packets UHUGEINT NOT NULL, flows UBIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name VARCHAR PRIMARY KEY, value UBIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS exporters (
    address VARCHAR PRIMARY KEY, pop VARCHAR, metro VARCHAR, records UBIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL
);
"""


class StoreError(ConfigError):
    """The flow store cannot be opened or read."""


class StoreBusy(StoreError):
    """Another process holds the flow store for longer than we would wait."""


@dataclass(frozen=True, slots=True)
class Tag:
    """Where an exporter's flows come from."""

    pop: str | None
    metro: str | None


@dataclass(frozen=True, slots=True)
class OurPrefixes:
    """Our own address space (service prefixes and aggregates): a flow from it goes out, one to it comes in."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, prefixes: Sequence[str]) -> OurPrefixes:
        return cls(tuple(prefix_span(p) for p in prefixes))

    def contains(self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        inside = np.zeros(len(hi), dtype=np.bool_)
        v4_top = IPV4_MAPPED | 0xFFFFFFFF
        mapped = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        v4 = sorted(span for span in self.ranges if span[0] >= IPV4_MAPPED and span[1] <= v4_top)
        if v4:  # IPv4 (most flows): one binary search over the merged ranges, not a pass per prefix
            merged: list[list[int]] = []
            for low, high in v4:
                if merged and low <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], high)
                else:
                    merged.append([low, high])
            starts = np.array([m[0] & 0xFFFFFFFF for m in merged], dtype=np.uint64)
            ends = np.array([m[1] & 0xFFFFFFFF for m in merged], dtype=np.uint64)
            value = lo & np.uint64(0xFFFFFFFF)
            at = np.searchsorted(starts, value, side="right") - 1
            inside |= mapped & (at >= 0) & (value <= ends[np.maximum(at, 0)])
        wider = [span for span in self.ranges if span not in v4]
        if not wider:
            return inside
        # IPv6 prefixes (and any reaching out of the IPv4-mapped block): a pass each, over what they could hold
        reaches_v4 = any(low <= v4_top and high >= IPV4_MAPPED for low, high in wider)
        rows = np.arange(len(hi)) if reaches_v4 else np.flatnonzero(~mapped)
        sub_hi, sub_lo = hi[rows], lo[rows]
        found = np.zeros(len(rows), dtype=np.bool_)
        for low, high in wider:
            low_hi, low_lo = np.uint64(low >> 64), np.uint64(low & 0xFFFFFFFFFFFFFFFF)
            high_hi, high_lo = np.uint64(high >> 64), np.uint64(high & 0xFFFFFFFFFFFFFFFF)
            above = (sub_hi > low_hi) | ((sub_hi == low_hi) & (sub_lo >= low_lo))
            below = (sub_hi < high_hi) | ((sub_hi == high_hi) & (sub_lo <= high_lo))
            found |= above & below
        inside[rows] |= found
        return inside


def remote_network(
    hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """The /24 of each IPv4 address (IPv4-mapped in 128 bits), the /48 of each IPv6 one."""
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    net_hi = np.where(v4, hi, hi & np.uint64(0xFFFFFFFFFFFF0000))
    net_lo = np.where(v4, lo & np.uint64(0xFFFFFFFFFFFFFF00), np.uint64(0))
    return net_hi.astype(np.uint64), net_lo.astype(np.uint64)


class FlowStore:
    """The flow database of one data directory."""

    def __init__(self, data_dir: Path, *, wait_seconds: float = 30.0) -> None:
        self.path = data_dir / DATABASE
        self.wait_seconds = wait_seconds
        self._duckdb = require("duckdb", "flows", "the flow store")

    def __repr__(self) -> str:
        return f"<FlowStore {self.path}>"

    @contextlib.contextmanager
    def open(self, *, read_only: bool = False, wait: bool = True) -> Iterator[Any]:
        """A connection, waiting while another process holds the file (StoreBusy after ``wait_seconds``)."""
        if read_only and not self.path.exists():
            raise StoreError(f"{self.path}: no flow store here yet; start `edgeplane flows collect` first")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + (self.wait_seconds if wait else 0.0)
        while True:
            try:
                connection = self._duckdb.connect(str(self.path), read_only=read_only)
                break
            except self._duckdb.IOException as error:
                if "lock" not in str(error).lower():
                    raise StoreError(f"{self.path}: cannot open the flow store ({error})") from None
                if time.monotonic() >= deadline:
                    raise StoreBusy(f"{self.path}: the flow store is busy (another process holds it)") from None
                time.sleep(0.05)
            except self._duckdb.Error as error:
                raise StoreError(f"{self.path}: cannot open the flow store ({error})") from None
        try:
            if not read_only:
                connection.execute(SCHEMA)
            yield connection
        except self._duckdb.Error as error:  # a full disk, an unwritable export directory, a damaged file
            raise StoreError(f"{self.path}: {error}") from None
        finally:
            connection.close()

    # Writing (the collector)

    def append(
        self,
        connection: Any,
        columns: FlowColumns,
        exporters: Sequence[str],
        tags: Mapping[str, Tag],
        ours: OurPrefixes,
    ) -> int:
        """Store ``columns``, each tagged with its exporter's PoP and metro and given its direction."""
        if len(columns) == 0:
            return 0
        pa = require("pyarrow", "flows", "the flow store")
        exporter_names = np.array(list(exporters), dtype=object)
        pops = np.array([tags.get(e, Tag(None, None)).pop for e in exporters], dtype=object)
        metros = np.array([tags.get(e, Tag(None, None)).metro for e in exporters], dtype=object)
        index = columns.exporter.astype(np.int64)
        src_ours = ours.contains(columns.src_hi, columns.src_lo)
        dst_ours = ours.contains(columns.dst_hi, columns.dst_lo)
        # Toward one of ours and not from one of ours: inbound; everything else (neither side ours included) is
        # counted by its destination, as nfdump's per-destination views do.
        direction = np.where(dst_ours & ~src_ours, IN, OUT).astype(np.uint8)
        net_hi, net_lo = remote_network(
            np.where(direction == IN, columns.src_hi, columns.dst_hi),
            np.where(direction == IN, columns.src_lo, columns.dst_lo),
        )
        table = pa.table(
            {
                "end_ms": columns.end_ms,
                "start_ms": columns.start_ms,
                "pop": pa.DictionaryArray.from_arrays(index, pa.array(pops, type=pa.string())),
                "metro": pa.DictionaryArray.from_arrays(index, pa.array(metros, type=pa.string())),
                "exporter": pa.DictionaryArray.from_arrays(index, pa.array(exporter_names, type=pa.string())),
                "direction": direction,
                "src_hi": columns.src_hi,
                "src_lo": columns.src_lo,
                "dst_hi": columns.dst_hi,
                "dst_lo": columns.dst_lo,
                "bytes": columns.bytes,
                "packets": columns.packets,
                "protocol": columns.protocol,
                "src_port": columns.src_port,
                "dst_port": columns.dst_port,
                "sampling": columns.sampling,
                "net_hi": net_hi,
                "net_lo": net_lo,
            }
        )
        connection.register("incoming", table)
        try:
            connection.execute(
                """INSERT INTO pops
                SELECT (SELECT coalesce(max(pop_key), 0) FROM pops) + row_number() OVER (ORDER BY pop), pop, metro
                FROM (SELECT DISTINCT pop::VARCHAR AS pop, metro::VARCHAR AS metro FROM incoming WHERE pop IS NOT NULL)
                WHERE pop NOT IN (SELECT pop FROM pops)"""
            )
            connection.execute(
                """INSERT INTO flows SELECT end_ms, start_ms, pop::VARCHAR, metro::VARCHAR, exporter::VARCHAR,
                direction, (src_hi::UHUGEINT << 64) | src_lo::UHUGEINT, (dst_hi::UHUGEINT << 64) | dst_lo::UHUGEINT,
                bytes, packets, protocol, src_port, dst_port, sampling FROM incoming"""
            )
            # What the analysis reads: per 5-minute bin, PoP, direction and remote network (the /24 of an IPv4
            # address, the /48 of an IPv6 one: the longest prefixes the internet routes), summed as it arrives
            # (and again when compacted), so that a query over months of flows reads far fewer rows.
            connection.execute(
                f"""INSERT INTO traffic_5m
                SELECT i.end_ms // {BIN_MS}, p.pop_key, i.direction,
                    (i.net_hi::UHUGEINT << 64) | i.net_lo::UHUGEINT, sum(i.bytes), sum(i.packets), count(*)
                FROM incoming i JOIN pops p ON p.pop = i.pop::VARCHAR GROUP BY ALL"""
            )
            now_ms = int(time.time() * 1000)
            connection.execute(
                """INSERT INTO exporters
                SELECT exporter::VARCHAR, any_value(pop)::VARCHAR, any_value(metro)::VARCHAR, count(*), $now, $now
                FROM incoming GROUP BY exporter
                ON CONFLICT (address) DO UPDATE SET records = exporters.records + excluded.records,
                    last_seen_ms = excluded.last_seen_ms, pop = excluded.pop, metro = excluded.metro""",
                {"now": now_ms},
            )
        finally:
            connection.unregister("incoming")
        return len(columns)

    @staticmethod
    def save_counters(connection: Any, counters: Mapping[str, int]) -> None:
        """Replace the collector's counters (records, datagrams, dropped:REASON) with their current values."""
        rows = [(name, int(value)) for name, value in counters.items()]
        if rows:
            connection.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value", rows
            )

    @staticmethod
    def load_counters(connection: Any) -> dict[str, int]:
        return {name: int(value) for name, value in connection.execute("SELECT name, value FROM counters").fetchall()}

    @staticmethod
    def expire(connection: Any, *, raw_before_ms: int, aggregates_before_ms: int, compact_from_bin: int) -> int:
        """Drop raw flows that ended before ``raw_before_ms`` (their traffic lives on in the 5-minute table) and
        5-minute rows older than ``aggregates_before_ms``; sum the rows each flush added for one key in the bins
        from ``compact_from_bin`` to the last closed one. Returns the first bin not compacted yet."""
        connection.execute("DELETE FROM flows WHERE end_ms < $before", {"before": raw_before_ms})
        connection.execute(f"DELETE FROM traffic_5m WHERE bin < $before // {BIN_MS}", {"before": aggregates_before_ms})
        open_bin = int(time.time() * 1000) // BIN_MS - 1  # late flows may still come for the last bin or two
        if open_bin > compact_from_bin:
            connection.execute("BEGIN TRANSACTION")
            try:
                window = {"first": compact_from_bin, "last": open_bin}
                connection.execute(
                    """CREATE OR REPLACE TEMP TABLE compacted AS
                    SELECT bin, pop_key, direction, remote, sum(bytes), sum(packets), sum(flows) FROM traffic_5m
                    WHERE bin >= $first AND bin < $last GROUP BY ALL""",
                    window,
                )
                connection.execute("DELETE FROM traffic_5m WHERE bin >= $first AND bin < $last", window)
                connection.execute("INSERT INTO traffic_5m SELECT * FROM compacted")
                connection.execute("DROP TABLE compacted")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            compact_from_bin = open_bin
        return compact_from_bin

    # Reading

    def stats(self) -> dict[str, Any]:
        with self.open(read_only=True) as connection:
            counters = self.load_counters(connection)
            raw = connection.execute("SELECT count(*), min(end_ms), max(end_ms) FROM flows").fetchone()
            folded = connection.execute("SELECT sum(flows), min(bin), max(bin) FROM traffic_5m").fetchone()
            exporters = connection.execute(
                "SELECT address, pop, metro, records, first_seen_ms, last_seen_ms FROM exporters ORDER BY address"
            ).fetchall()
        dropped = {name.removeprefix("dropped:"): v for name, v in counters.items() if name.startswith("dropped:")}
        return {
            "records": counters.get("records", int(folded[0] or 0)),
            "exporters": len(exporters),
            "dropped": dict(sorted(dropped.items())),
            "datagrams": counters.get("datagrams", 0),
            "stored": {"raw": int(raw[0]), "in_5m_bins": int(folded[0] or 0)},
            "first_ms": _least(raw[1], None if folded[1] is None else int(folded[1]) * BIN_MS),
            "last_ms": _most(raw[2], None if folded[2] is None else int(folded[2]) * BIN_MS + BIN_MS - 1),
            "by_exporter": [
                {
                    "address": address,
                    "pop": pop,
                    "metro": metro,
                    "records": int(records),
                    "first_seen_ms": int(first),
                    "last_seen_ms": int(last),
                }
                for address, pop, metro, records, first, last in exporters
            ],
        }

    def export(
        self, destination: Path, *, since_ms: int | None = None, until_ms: int | None = None, replace: bool = False
    ) -> dict[str, Any]:
        """Raw flows as Parquet under ``flows/``, partitioned by metro, date and hour (``metro=M/date=D/hour=H/``),
        addresses as text; the traffic per 5-minute bin and remote network (/24, /48) under ``traffic_5m/`` (by
        metro and date). What Trino, Spark or ClickHouse read."""
        where, params = _window("end_ms", since_ms, until_ms)
        for part in ("flows", "traffic_5m"):
            if (destination / part).exists():
                if not replace:
                    raise StoreError(
                        f"{destination / part}: an export is there already (its files would be read twice):"
                        " give another directory, or --replace"
                    )
                shutil.rmtree(destination / part)
        try:
            destination.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"{destination}: cannot write the export there ({error.strerror})") from None
        with self.open(read_only=True) as connection:
            connection.execute(
                f"""CREATE TEMP MACRO addr(a) AS CASE WHEN a >> 32 = {IPV4_MAPPED >> 32}
                   THEN concat_ws('.', (a >> 24) & 255, (a >> 16) & 255, (a >> 8) & 255, a & 255)
                   ELSE (SELECT concat_ws(':', substr(h, 1, 4), substr(h, 5, 4), substr(h, 9, 4), substr(h, 13, 4),
                         substr(h, 17, 4), substr(h, 21, 4), substr(h, 25, 4), substr(h, 29, 4))
                         FROM (SELECT lpad(lower(printf('%x', a)), 32, '0') AS h)) END"""
            )
            counts = connection.execute(f"SELECT count(*) FROM flows {where}", params).fetchone()
            connection.execute(
                f"""COPY (
                    SELECT make_timestamp(end_ms * 1000) AS end_time, make_timestamp(start_ms * 1000) AS start_time,
                        coalesce(pop, 'untagged') AS pop, coalesce(metro, 'untagged') AS metro, exporter,
                        CASE direction WHEN 1 THEN 'in' ELSE 'out' END AS direction,
                        addr(src) AS src, addr(dst) AS dst, bytes, packets, protocol, src_port, dst_port, sampling,
                        strftime(make_timestamp(end_ms * 1000), '%Y-%m-%d') AS date,
                        hour(make_timestamp(end_ms * 1000)) AS hour
                    FROM flows {where}
                ) TO '{_quoted(destination / "flows")}'
                (FORMAT parquet, PARTITION_BY (metro, date, hour), OVERWRITE_OR_IGNORE,
                 FILENAME_PATTERN 'flows_{{uuid}}')""",
                params,
            )
            where_5m, params_5m = _window(f"t.bin::BIGINT * {BIN_MS}", since_ms, until_ms)
            folded = connection.execute(f"SELECT count(*) FROM traffic_5m t {where_5m}", params_5m).fetchone()
            connection.execute(
                f"""COPY (
                    SELECT make_timestamp(t.bin::BIGINT * {BIN_MS} * 1000) AS bin_start, p.pop, p.metro,
                        CASE t.direction WHEN 1 THEN 'in' ELSE 'out' END AS direction,
                        addr(t.remote) AS remote_network, least(t.bytes, 18446744073709551615)::UBIGINT AS bytes,
                        least(t.packets, 18446744073709551615)::UBIGINT AS packets, t.flows,
                        strftime(make_timestamp(t.bin::BIGINT * {BIN_MS} * 1000), '%Y-%m-%d') AS date
                    FROM traffic_5m t JOIN pops p USING (pop_key) {where_5m}
                ) TO '{_quoted(destination / "traffic_5m")}'
                (FORMAT parquet, PARTITION_BY (metro, date), OVERWRITE_OR_IGNORE,
                 FILENAME_PATTERN 'traffic_{{uuid}}')""",
                params_5m,
            )
        files = sorted(str(p.relative_to(destination)) for p in destination.rglob("*.parquet"))
        return {"path": str(destination), "flows": int(counts[0]), "traffic_5m": int(folded[0]), "files": files}


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def _window(column: str, since_ms: int | None, until_ms: int | None) -> tuple[str, dict[str, int]]:
    clauses, params = [], {}
    if since_ms is not None:
        clauses.append(f"{column} >= $since")
        params["since"] = since_ms
    if until_ms is not None:
        clauses.append(f"{column} < $until")
        params["until"] = until_ms
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


def _least(a: int | None, b: int | None) -> int | None:
    values = [int(v) for v in (a, b) if v is not None]
    return min(values) if values else None


def _most(a: int | None, b: int | None) -> int | None:
    values = [int(v) for v in (a, b) if v is not None]
    return max(values) if values else None


def _uint128_columns(values: Sequence[int]) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    hi = np.fromiter((v >> 64 for v in values), dtype=np.uint64, count=len(values))
    lo = np.fromiter((v & 0xFFFFFFFFFFFFFFFF for v in values), dtype=np.uint64, count=len(values))
    return hi, lo


def summarise(
    connection: Any,
    view: RoutingView,
    *,
    metros: Sequence[str] | None,
    top: int,
    exclude: Mapping[str, set[int]],
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[MetroTraffic]:
    """Per metro: traffic per bin of each PoP's transits and of the networks behind them, the latter ranked and,
    for the ``top`` of each metro (less the ASNs in ``exclude[metro]``), split per PoP and transit.

    Each remote network (/24, /48) takes the route its PoP uses today (a range join on ``view``). Read from the 5-minute
    table, which holds the traffic of every flow stored, raw or expired."""
    pa = require("pyarrow", "flows", "the flow store")
    lo_hi, lo_lo = _uint128_columns([r[1] for r in view.ranges])
    hi_hi, hi_lo = _uint128_columns([r[2] for r in view.ranges])
    ranges = pa.table(
        {
            "t": np.array([r[0] for r in view.ranges], dtype=np.int32),
            "lo_hi": lo_hi,
            "lo_lo": lo_lo,
            "hi_hi": hi_hi,
            "hi_lo": hi_lo,
            "route": np.array([r[3] for r in view.ranges], dtype=np.int32),
        }
    )
    asns = view.route_asns()
    route_asn = pa.table(
        {"route": np.array([r for r, _ in asns], dtype=np.int32), "asn": np.array([a for _, a in asns], np.int64)}
    )
    route_transit = pa.table(
        {
            "route": np.arange(len(view.routes), dtype=np.int32),
            "transit": np.array([t for t, _ in view.routes], dtype=np.int64),
        }
    )
    pop_table = pa.table(
        {"pop": list(view.table_of_pop), "t": np.array(list(view.table_of_pop.values()), dtype=np.int32)}
    )
    for name, table in (
        ("v_ranges", ranges),
        ("v_route_asn", route_asn),
        ("v_route_transit", route_transit),
        ("v_pop_table", pop_table),
    ):
        connection.register(name, table)
    if since_ms is None:  # a month of transit billing, up to the last traffic stored
        (latest,) = connection.execute("SELECT max(bin) FROM traffic_5m").fetchall()
        if latest[0] is not None:
            since_ms = (int(latest[0]) + 1) * BIN_MS - DEFAULT_WINDOW_MS
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE ranges AS SELECT t, (lo_hi::UHUGEINT << 64) | lo_lo::UHUGEINT AS lo,
           (hi_hi::UHUGEINT << 64) | hi_lo::UHUGEINT AS hi, route FROM v_ranges"""
    )
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE keys AS
        SELECT p.pop_key, p.pop, p.metro, coalesce(v.t, -1) AS t, dense_rank() OVER (ORDER BY p.metro)::USMALLINT AS m
        FROM pops p LEFT JOIN v_pop_table v USING (pop)"""
    )
    # The row's PoP gives its table and metro by position in a list, not by a join: a join the planner could
    # reorder (routes with networks first, the rows last) would multiply the rows before they are summed.
    keys = connection.execute("SELECT pop_key, metro, t, m FROM keys ORDER BY pop_key").fetchall()
    size = max((k[0] for k in keys), default=0)
    table_at, metro_at = [-1] * size, [0] * size
    for key, _, table, m in keys:
        table_at[key - 1], metro_at[key - 1] = table, m
    params: dict[str, Any] = {"table_at": table_at, "metro_at": metro_at}
    times = []  # the window, in bins
    if since_ms is not None:  # bin * BIN_MS >= since
        times.append("t.bin >= $first_bin")
        params["first_bin"] = -(-since_ms // BIN_MS)
    if until_ms is not None:  # bin * BIN_MS < until
        times.append("t.bin < $end_bin")
        params["end_bin"] = -(-until_ms // BIN_MS)
    clauses = list(times)
    if metros is not None:
        clauses.append("list_contains($chosen, t.pop_key)")
        params["chosen"] = [k[0] for k in keys if k[1] in set(metros)]

    def run(sql: str, **extra: Any) -> Any:
        """``sql`` with the parameters it names (DuckDB refuses any it does not)."""
        given = {**params, **extra}
        return connection.execute(sql, {k: v for k, v in given.items() if f"${k}" in sql})

    scope = "WHERE " + (" AND ".join(clauses) or "true")
    row_metro = "list_extract($metro_at, t.pop_key)"
    # Every remote network takes its route in each table (a range join over the few distinct networks, not the
    # many rows). A network's low bits are zero (/24, /48), so network + table is one join key for every row.
    run(
        f"""CREATE OR REPLACE TEMP TABLE remotes AS
        WITH seen AS (SELECT DISTINCT t.remote FROM traffic_5m t {scope}),
        per_table AS (
            SELECT s.remote, x.t, CASE WHEN s.remote <= r.hi THEN r.route ELSE -1 END AS route
            FROM seen s CROSS JOIN (SELECT DISTINCT t FROM keys) x
            ASOF LEFT JOIN ranges r ON x.t = r.t AND s.remote >= r.lo
        )
        SELECT p.remote + (p.t & 255)::UHUGEINT AS key, p.t, p.remote, coalesce(p.route, -1) AS route, v.transit
        FROM per_table p LEFT JOIN v_route_transit v USING (route)"""
    )
    tables = len(set(view.table_of_pop.values()))
    routed = (  # the fast key while tables fit in a /24's eight spare bits, the pair beyond
        "r.key = t.remote + (list_extract($table_at, t.pop_key) & 255)::UHUGEINT"
        if tables <= 255
        else "r.remote = t.remote AND r.t = list_extract($table_at, t.pop_key)"
    )
    # 1. One pass: the traffic per PoP and route (what ranks who is looked at first), and the window's bins.
    run(
        f"""CREATE OR REPLACE TEMP TABLE per_route AS
        SELECT {row_metro} AS m, t.pop_key, r.route, sum(t.bytes)::DOUBLE AS bytes,
               sum(t.packets)::DOUBLE AS packets, min(t.bin) AS first, max(t.bin) AS last
        FROM traffic_5m t LEFT JOIN remotes r ON {routed} {scope} GROUP BY ALL"""
    )
    (span,) = connection.execute("SELECT min(first), max(last) FROM per_route").fetchall()
    if span[0] is None or (since_ms is not None and until_ms is not None and until_ms <= since_ms):
        _unregister(connection)
        return []
    if metros is not None:  # the window's bins are the whole store's, whichever metros are asked
        window = " AND ".join(times) or "true"
        (span,) = run(f"SELECT min(t.bin), max(t.bin) FROM traffic_5m t WHERE {window}").fetchall()
    # The bins billed: those of the window from the first to the last the store holds traffic for (quiet ones
    # in between count as zero; before the first or after the last nothing is known, so a wider window than the
    # store's own gives the same answer as none).
    first, last = int(span[0]), int(span[1])
    bins = last - first + 1
    found: dict[str, MetroTraffic] = {}
    metro_key = dict(connection.execute("SELECT DISTINCT metro, m FROM keys").fetchall())

    def metro(code: str) -> MetroTraffic:
        if code not in found:
            found[code] = MetroTraffic(code, bins, {}, {})
        return found[code]

    def add(
        into: dict[Any, Traffic], key: Any, direction: int, at: list[int], volumes: list[float], packets: float
    ) -> None:
        """One series (the bins with traffic and their bytes) into ``into[key]``."""
        if key not in into:
            into[key] = Traffic(np.zeros(bins), np.zeros(bins))
        traffic = into[key]
        values = np.asarray(volumes, dtype=np.float64)
        (traffic.inbound if direction == IN else traffic.outbound)[np.asarray(at, dtype=np.int64) - first] += values
        traffic.bytes += int(values.sum())
        traffic.packets += int(packets)

    totals: dict[str, dict[int, tuple[int, int]]] = {}
    for code, asn, volume, packets in connection.execute(
        """SELECT k.metro, a.asn, sum(p.bytes), sum(p.packets)
        FROM per_route p JOIN keys k USING (pop_key) JOIN v_route_asn a USING (route) GROUP BY ALL"""
    ).fetchall():
        totals.setdefault(code, {})[int(asn)] = (int(volume), int(packets))
    for code, volume in connection.execute(
        "SELECT k.metro, sum(p.bytes) FROM per_route p JOIN keys k USING (pop_key) WHERE p.route = -1 GROUP BY ALL"
    ).fetchall():
        metro(code).unrouted_bytes = int(volume)
    # 2. A pass per batch of networks, the ones with the most bytes first: each network's traffic per bin, PoP
    #    and transit (what its 95th percentiles, and for the top the savings and balance, are made of). The first
    #    pass also sums each PoP's transits per bin (as network NO_NETWORK: every route leads to it). Batches go
    #    on until no network left could rank among the top: a 95th percentile of v means at least `deep` bins of
    #    v or more, so a network whose bytes in one direction are under deep * v cannot reach v.
    deep = bins - math.ceil(0.95 * bins) + 1
    order: dict[str, list[int]] = {}
    for code, per in totals.items():
        shut_out = exclude.get(code, set())
        volume = {a: v[0] for a, v in per.items() if a not in shut_out}
        order[code] = sorted(volume, key=lambda a: (-volume[a], a))
    done = dict.fromkeys(order, 0)
    batch_size = 5 * top + 20  # on real traffic the top by p95 is nearly the top by bytes: one pass, mostly
    connection.execute(
        """CREATE OR REPLACE TEMP TABLE per_bin (m USMALLINT, asn BIGINT, pop_key USMALLINT, transit BIGINT,
           direction UTINYINT, bin INTEGER, bytes DOUBLE, packets DOUBLE)"""
    )
    passes = 0
    while True:
        batch = {}
        if top > 0:
            batch = {code: names[done[code] : done[code] + batch_size] for code, names in order.items()}
            batch = {code: names for code, names in batch.items() if names}
            batch_size *= 2  # few passes even where traffic is spread thin over many networks
        if passes and not batch:
            break
        connection.register(
            "v_batch",
            pa.table(
                {
                    "m": np.array([metro_key[code] for code, names in batch.items() for _ in names], dtype=np.uint16),
                    "asn": np.array([a for names in batch.values() for a in names], dtype=np.int64),
                }
            ),
        )
        transits = "" if passes else "UNION ALL SELECT DISTINCT route, m, $whole FROM per_route"
        connection.execute("SET disabled_optimizers = 'join_order'")  # rows to routes first, then to networks
        try:
            run(
                f"""INSERT INTO per_bin
                WITH wanted AS (
                    SELECT DISTINCT a.route, b.m, a.asn FROM v_route_asn a JOIN v_batch b USING (asn) {transits}
                )
                SELECT w.m, w.asn, t.pop_key, r.transit, t.direction, t.bin, sum(t.bytes)::DOUBLE,
                       sum(t.packets)::DOUBLE
                FROM traffic_5m t LEFT JOIN remotes r ON {routed}
                JOIN wanted w ON w.route = r.route AND w.m = {row_metro}
                {scope} GROUP BY ALL""",
                whole=NO_NETWORK,
            )
        finally:
            connection.execute("RESET disabled_optimizers")
        passes += 1
        if not batch:
            connection.unregister("v_batch")
            break
        for code, asn, p95_in, p95_out in run(
            """WITH per_network AS (
                SELECT b.m, b.asn, b.direction, b.bin, sum(b.bytes) AS bytes
                FROM per_bin b JOIN v_batch USING (m, asn) GROUP BY ALL
            ), ranked AS (
                SELECT *, row_number() OVER (PARTITION BY m, asn, direction ORDER BY bytes DESC) AS place
                FROM per_network WHERE bytes > 0
            )
            SELECT k.metro, r.asn, coalesce(max(r.bytes) FILTER (r.place = $deep AND r.direction = 1), 0),
                   coalesce(max(r.bytes) FILTER (r.place = $deep AND r.direction = 0), 0)
            FROM ranked r JOIN (SELECT DISTINCT m, metro FROM keys) k USING (m) GROUP BY ALL""",
            deep=deep,
        ).fetchall():
            volume, packets = totals[code][int(asn)]
            metro(code).networks[int(asn)] = (volume, packets, float(p95_in), float(p95_out))
        connection.unregister("v_batch")
        for code, names in batch.items():
            here = metro(code)
            for asn in names:  # a network whose traffic all fell outside the window's bins
                here.networks.setdefault(asn, (*totals[code][asn], 0.0, 0.0))
            done[code] += len(names)
        for code in list(order):
            ranked = rank(found[code].networks, set(), top) if code in found else []
            if len(ranked) < top or done[code] >= len(order[code]):
                if done[code] >= len(order[code]):
                    order.pop(code)
                continue
            floor = max(found[code].networks[ranked[-1]][2:])
            if totals[code][order[code][done[code]]][0] < deep * floor:
                order.pop(code)  # nobody left can reach the top
    # 3. Each PoP's transits per bin, and for the top of each metro its traffic per PoP and transit.
    for code, pop, transit, direction, at, volumes, packets in run(
        """SELECT k.metro, k.pop, b.transit, b.direction, list(b.bin), list(b.bytes), sum(b.packets)
        FROM per_bin b JOIN keys k USING (pop_key) WHERE b.asn = $whole AND b.transit IS NOT NULL GROUP BY ALL""",
        whole=NO_NETWORK,
    ).fetchall():
        add(metro(code).transits, (pop, int(transit)), int(direction), at, volumes, packets)
    wanted = [(code, asn) for code, traffic in found.items() for asn in rank(traffic.networks, set(), top)]
    if wanted:
        connection.register(
            "v_top",
            pa.table(
                {
                    "m": np.array([metro_key[c] for c, _ in wanted], dtype=np.uint16),
                    "asn": np.array([a for _, a in wanted], dtype=np.int64),
                }
            ),
        )
        for code, asn, pop, transit, direction, at, volumes, packets in connection.execute(
            """SELECT k.metro, b.asn, k.pop, b.transit, b.direction, list(b.bin), list(b.bytes), sum(b.packets)
            FROM per_bin b JOIN v_top USING (m, asn) JOIN keys k USING (pop_key) GROUP BY ALL"""
        ).fetchall():
            parts = found[code].behind.setdefault(int(asn), {})
            add(parts, (pop, int(transit)), int(direction), at, volumes, packets)
        connection.unregister("v_top")
    _unregister(connection)
    return [found[code] for code in sorted(found)]


def _unregister(connection: Any) -> None:
    for name in ("v_ranges", "v_route_asn", "v_route_transit", "v_pop_table"):
        connection.unregister(name)
