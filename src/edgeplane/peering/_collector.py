"""The flow collector: NetFlow v5/v9 and IPFIX datagrams in over UDP, decoded in batches, tagged with the PoP
and metro of their exporter and written to the flow store about once a second; counters on /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector as MetricsSource

from edgeplane.fleet import Fleet
from edgeplane.peering._decode import Decoder, FlowColumns
from edgeplane.peering._store import FlowStore, OurPrefixes, StoreBusy, StoreError, Tag
from edgeplane.web import browser_guard, json_errors, json_response, serve

log = logging.getLogger("edgeplane.flows")

STATE_FILE = "collector.json"
FUTURE_SLACK_MS = 3_600_000  # exporters' clocks drift; a flow ending more than an hour from now is not believed
MAX_STORE_FAILURES = 30  # flushes in a row the store may refuse (not busy: broken) before a batch is given up
DRAIN_DATAGRAMS = 2_000  # read at one wakeup of the loop, so that HTTP and flushes still get their turn


def exporter_address(text: str) -> str:
    """An exporter's address as the fleet writes it: an IPv4 exporter heard on an IPv6 socket as plain IPv4."""
    if text.startswith("::ffff:") and "." in text:
        return text.removeprefix("::ffff:")
    return text


@dataclass(frozen=True, slots=True)
class CollectorOptions:
    flush_seconds: float = 1.0  # at most this long between flushes; sooner once the exporters fall quiet
    batch_datagrams: int = 5_000  # about 150,000 records: enough for the store to write them at full speed
    retention_hours: float = 48.0  # raw flows; older ones are folded into 5-minute aggregates
    aggregate_days: float = 400.0  # aggregates; older ones are dropped
    max_pending_records: int = 5_000_000  # held in memory while the store is busy; beyond, the oldest go
    expire_every_seconds: float = 300.0
    receive_buffer_bytes: int = 8 << 20  # SO_RCVBUF asked; the kernel holds it to net.core.rmem_max
    max_buffered_datagrams: int = 200_000  # held undecoded between flushes (~300 MB); beyond, counted as backlog


def socket_drops(sock: socket.socket) -> int | None:
    """The datagrams the kernel dropped for ``sock`` (its queue full), from /proc/net/udp or udp6; None unknown."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()  # sl local remote st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if len(fields) > 12 and fields[9] == inode:
                return int(fields[12])
    return None


def our_prefixes(fleet: Fleet) -> OurPrefixes:
    """The fleet's own address space: a flow from it goes out, one to it comes in."""
    return OurPrefixes.of(fleet.own_prefixes())


class FlowCollector:
    """One collector: a UDP endpoint, a decoder, a store and the counters of all three."""

    def __init__(
        self,
        fleet: Fleet,
        data_dir: Path,
        *,
        pop: str | None = None,
        options: CollectorOptions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fleet, self.data_dir, self.pop = fleet, data_dir, pop
        self.options = options or CollectorOptions()
        self.clock = clock
        self.exporter_pop = {str(address): p.code for p in fleet.pops for address in p.flow_exporters}
        self.decoder = Decoder(reserved=self.exporter_pop)  # the fleet's exporters never lose their place to junk
        self.store = FlowStore(data_dir, wait_seconds=0.0)
        self.ours = our_prefixes(fleet)
        self.pending: list[FlowColumns] = []
        self.stored = 0
        self.store_dropped = 0
        self.untagged = 0
        self.store_errors = 0
        self._last_expire = 0.0
        self.time_dropped = {"future_time": 0, "too_old": 0}
        self.store_failed = 0  # records given up after the store refused them MAX_STORE_FAILURES times in a row
        self._failures = 0
        self.before: dict[str, int] = {}  # the counters of this data directory's earlier runs
        self._socket: socket.socket | None = None
        self._flushing = asyncio.Lock()
        self._taken_datagrams = 0  # the decoder's datagram count at the last take(): what it holds is the rest
        self.queue_dropped = 0
        self.backlog_dropped = 0
        self.udp_address = ""
        self.registry = CollectorRegistry()
        self.registry.register(_Metrics(self))

    def __repr__(self) -> str:
        return (
            f"<FlowCollector udp {self.udp_address or '-'} | records {self.decoder.records}, stored {self.stored},"
            f" pending {sum(len(p) for p in self.pending)} | dropped {sum(self.dropped().values())}>"
        )

    def dropped(self, *, zeros: bool = False) -> dict[str, int]:
        """What was discarded, by reason (with ``zeros``: every reason, for metrics that must not vanish)."""
        counts = dict(self.decoder.dropped)
        counts.update(self.time_dropped)
        counts["store_busy"] = self.store_dropped
        counts["store_failed"] = self.store_failed
        counts["receive_queue"] = self.queue_dropped  # datagrams the kernel dropped, our queue full
        counts["backlog"] = self.backlog_dropped  # datagrams read but not kept: the store too far behind
        return {reason: n for reason, n in counts.items() if n or zeros}

    def tag(self, exporter: str) -> Tag:
        code = self.pop or self.exporter_pop.get(exporter)
        if code is None:
            return Tag(None, None)
        return Tag(code, self.fleet.pop_by_code[code].metro)

    def counters(self) -> dict[str, int]:
        """Since the data directory's first run: this run's counts on top of what earlier runs stored."""
        counts = {
            "records": self.decoder.records,
            "datagrams": self.decoder.datagrams,
            "stored": self.stored,
        }
        counts.update({f"dropped:{reason}": n for reason, n in self.dropped().items()})
        for name, value in self.before.items():
            if name == "records" or name == "datagrams" or name == "stored" or name.startswith("dropped:"):
                counts[name] = counts.get(name, 0) + value
        counts["untagged"] = self.untagged
        return counts

    def stats(self) -> dict[str, Any]:
        """What `flows stats --json` says of a running collector (counts since the data directory's first run)."""
        counts = self.counters()
        dropped = {name.removeprefix("dropped:"): n for name, n in counts.items() if name.startswith("dropped:") and n}
        return {
            "records": counts["records"],
            "exporters": len(self.decoder.exporters),
            "dropped": dict(sorted(dropped.items())),
            "datagrams": counts["datagrams"],
            "stored": counts["stored"],
            "stored_this_run": self.stored,
            "pending": sum(len(p) for p in self.pending),
            "templates": self.decoder.templates(),
            "untagged": self.untagged,
        }

    # Receiving

    def _drain(self) -> None:
        """Read what the socket holds, up to DRAIN_DATAGRAMS at a time (one wakeup of the loop, not one each)."""
        sock = self._socket
        if sock is None:
            return
        now_ms = int(self.clock() * 1000)
        decode = self.decoder.decode
        full = self.decoder.datagrams - self._taken_datagrams >= self.options.max_buffered_datagrams
        for _ in range(DRAIN_DATAGRAMS):
            try:
                datagram, address = sock.recvfrom(65_535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # an ICMP error for a datagram we never sent: nothing to do
                log.debug("udp error: %s", error)
                return
            if full:  # the store is behind by more than we hold: this one is read and counted, not kept
                self.backlog_dropped += 1
                continue
            decode(datagram, exporter_address(str(address[0])), now_ms)

    async def listen(self, host: str, port: int) -> str:
        loop = asyncio.get_running_loop()
        found = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = found[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # a deeper queue rides out the moments the loop is busy writing
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.options.receive_buffer_bytes)
            if family == socket.AF_INET6:  # [::] hears IPv4 exporters too, as IPv4-mapped addresses
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        loop.add_reader(sock.fileno(), self._drain)
        bound = sock.getsockname()
        self.udp_address = f"[{bound[0]}]:{bound[1]}" if ":" in bound[0] else f"{bound[0]}:{bound[1]}"
        return self.udp_address

    def close(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(RuntimeError):  # the loop already gone
                asyncio.get_running_loop().remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None

    # Writing

    def _load_counters(self) -> dict[str, int]:
        opener = FlowStore(self.data_dir, wait_seconds=30.0)
        with opener.open() as connection:
            return {k: v for k, v in opener.load_counters(connection).items() if k != "compacted_bin"}

    def _take(self) -> None:
        self._taken_datagrams = self.decoder.datagrams
        batch = self._plausible(self.decoder.take())
        if len(batch):
            self.pending.append(batch)
        held = sum(len(p) for p in self.pending)
        while held > self.options.max_pending_records and len(self.pending) > 1:
            lost = self.pending.pop(0)
            held -= len(lost)
            self.store_dropped += len(lost)

    def _plausible(self, batch: FlowColumns) -> FlowColumns:
        """Flows that ended neither in the future (a router whose clock is off) nor before the aggregates' retention:
        one such flow would stretch every metro's window of 5-minute bins (and be kept forever)."""
        if not len(batch):
            return batch
        now_ms = int(self.clock() * 1000)
        future = batch.end_ms > now_ms + FUTURE_SLACK_MS
        past = batch.end_ms < now_ms - int(self.options.aggregate_days * 86_400_000)
        if not (future.any() or past.any()):
            return batch
        self.time_dropped["future_time"] += int(future.sum())
        self.time_dropped["too_old"] += int(past.sum())
        keep = ~(future | past)
        return FlowColumns(**{f.name: getattr(batch, f.name)[keep] for f in dataclasses.fields(FlowColumns)})

    def _write(
        self, batch: FlowColumns, exporters: list[str], counters: Mapping[str, int], expire: bool
    ) -> int:  # runs in a worker thread: it touches the store and what it is given, never the decoder
        tags = {e: self.tag(e) for e in exporters}
        with self.store.open() as connection:
            connection.execute("BEGIN TRANSACTION")
            written = self.store.append(connection, batch, exporters, tags, self.ours)
            self.store.save_counters(connection, counters)
            connection.execute("COMMIT")
            if expire:
                now_ms = int(self.clock() * 1000)
                compacted = self.store.load_counters(connection).get("compacted_bin", 0)
                compacted = self.store.expire(
                    connection,
                    raw_before_ms=now_ms - int(self.options.retention_hours * 3_600_000),
                    aggregates_before_ms=now_ms - int(self.options.aggregate_days * 86_400_000),
                    compact_from_bin=compacted,
                )
                self.store.save_counters(connection, {"compacted_bin": compacted})
        return written

    async def flush(self) -> None:
        """Write what was received since the last flush (and what a busy store held back). One flush at a time;
        one stopped while its write runs waits for that write, so that its batch ends up stored or still pending,
        never both (the last flush would store it again) nor neither."""
        async with self._flushing:
            self._take()
            self._count_queue_drops()
            batch = FlowColumns.concat(self.pending) if self.pending else FlowColumns.empty()
            untagged = sum(1 for e in self.decoder.exporters if self.tag(e).pop is None)
            expire = self.clock() - self._last_expire >= self.options.expire_every_seconds
            counters = self.counters()
            counters["stored"] += len(batch)  # what these counters will be true of once this batch is in
            exporters = list(self.decoder.exporters)
            write = asyncio.ensure_future(asyncio.to_thread(self._write, batch, exporters, counters, expire))
            try:
                await asyncio.wait([write])
            except asyncio.CancelledError:
                await asyncio.wait([write])
                self._settle(write, batch, untagged, expire)
                raise
            self._settle(write, batch, untagged, expire)

    def _settle(self, write: asyncio.Future[int], batch: FlowColumns, untagged: int, expire: bool) -> None:
        """Count a finished write: its batch stored, kept for the next flush, or given up (counted)."""
        error = write.exception()
        if isinstance(error, StoreBusy):  # a reader holds it: keep the batch for the next flush
            self.store_errors += 1
            log.info("flow store busy: %s", error)
            self.pending = [batch] if len(batch) else []
            return
        if isinstance(error, StoreError):  # broken (a full disk?): try again a while, then give the batch up
            self.store_errors += 1
            self._failures += 1
            log.warning("flow store not written (%d in a row): %s", self._failures, error)
            if self._failures < MAX_STORE_FAILURES:
                self.pending = [batch] if len(batch) else []
            else:
                self.store_failed += len(batch)
                self.pending, self._failures = [], 0
            return
        if error is not None:
            raise error
        self._failures = 0
        self.pending = []
        self.stored += write.result()
        self.untagged = untagged
        if expire:
            self._last_expire = self.clock()

    def _count_queue_drops(self) -> None:
        """What the kernel dropped because our socket's queue was full (its count in /proc/net/udp[6])."""
        if self._socket is None:
            return
        drops = socket_drops(self._socket)
        if drops is not None:
            self.queue_dropped = drops

    async def run_flushes(self) -> None:
        """A flush a second at most; sooner when a burst has filled a batch (decoded and written while more
        arrive), or once the exporters fall quiet for a tick with something received (what came is stored now,
        not a second later)."""
        last_time, last_count = time.monotonic(), self.decoder.datagrams
        seen = last_count
        while True:
            await asyncio.sleep(self.options.flush_seconds / 20)
            count = self.decoder.datagrams
            waited = time.monotonic() - last_time >= self.options.flush_seconds
            quiet = count == seen and count > last_count
            seen = count
            if waited or quiet or count - last_count >= self.options.batch_datagrams:
                last_time, last_count = time.monotonic(), count
                await self.flush()

    # HTTP: metrics and stats

    def app(self) -> web.Application:
        # A page in the user's browser can reach loopback: names it rebinds are refused, as by every service.
        app = web.Application(middlewares=[json_errors, browser_guard()])

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def stats(_: web.Request) -> web.Response:
            return json_response(self.stats())

        async def health(_: web.Request) -> web.Response:
            return json_response({"ok": True, "udp": self.udp_address})

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/api/flows/stats", stats)
        app.router.add_get("/healthz", health)
        return app

    async def run(
        self,
        udp_host: str,
        udp_port: int,
        http_host: str,
        http_port: int,
        *,
        on_ready: Callable[[str, str], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.before = await asyncio.to_thread(self._load_counters)  # and a store we cannot open stops us here
        udp = await self.listen(udp_host, udp_port)
        state = self.data_dir / STATE_FILE

        def ready(url: str) -> None:
            state.parent.mkdir(parents=True, exist_ok=True)
            partial = state.with_suffix(".tmp")  # whole or absent: a reader never sees half of it
            partial.write_bytes(orjson.dumps({"pid": os.getpid(), "udp": udp, "http": url}))
            partial.replace(state)
            if on_ready is not None:
                on_ready(udp, url)

        try:
            await serve(
                self.app(), http_host, http_port, on_ready=ready, background=lambda _: [self.run_flushes], stop=stop
            )
        finally:
            self.close()
            await self.flush()  # what arrived before the stop is stored, not lost
            with contextlib.suppress(OSError):
                state.unlink()


class _Metrics(MetricsSource):
    def __init__(self, collector: FlowCollector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Any]:
        c = self.collector
        yield CounterMetricFamily("edgeplane_flow_datagrams", "Datagrams received.", value=c.decoder.datagrams)
        yield CounterMetricFamily("edgeplane_flow_records", "Flow records decoded.", value=c.decoder.records)
        yield CounterMetricFamily("edgeplane_flow_stored_records", "Flow records written to the store.", value=c.stored)
        dropped = CounterMetricFamily(
            "edgeplane_flow_dropped", "Datagrams, sets or records discarded, by reason.", labels=["reason"]
        )
        for reason, count in sorted(c.dropped(zeros=True).items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily("edgeplane_flow_templates", "Data templates known.", value=c.decoder.templates())
        yield GaugeMetricFamily("edgeplane_flow_exporters", "Exporters heard from.", value=len(c.decoder.exporters))
        yield GaugeMetricFamily(
            "edgeplane_flow_pending_records", "Records waiting for the store.", value=sum(len(p) for p in c.pending)
        )
        yield CounterMetricFamily(
            "edgeplane_flow_store_errors", "Flushes the store refused (busy or broken).", value=c.store_errors
        )
