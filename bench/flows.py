"""Flows: the collector's ingest against nfcapd on the same replayed export, and `peering candidates` over a
day of 100 million stored flows.

    python bench/flows.py [--part ingest|candidates|all] [--records 1000000] [--rounds 3] [--flows 100000000]

ingest:     a replay of softflowd-shaped NetFlow v9 datagrams (30 IPv4 records each, a template datagram every
            16th), built in memory once, sent from this process over loopback to nfcapd and to `edgeplane flows
            collect`, alternately for --rounds rounds, in two ways. Own rate: the collector is stopped (SIGSTOP),
            the whole replay queued in its socket (net.core.rmem_max raised for the run where we are root, put
            back after; both ask for the same buffer, nfcapd -B, ours --receive-buffer), then timed from SIGCONT:
            what each does alone, the sender out of the way. Paced: sent in bursts, the next once the receiver's
            queue (/proc/net/udp) is below half a burst. Records per second = records stored / seconds until the
            collector had stored them all (ours: `stored` on /api/flows/stats reaching the total; nfcapd: its
            flush on SIGTERM done and the process gone); kernel drops are shown.
candidates: a flow store of --flows flows written through FlowStore.append in batches (as the collector writes
            them) and compacted once as the collector does every 5 minutes, then `edgeplane peering candidates
            --json --rib FILE` timed as a user runs it (median of 3), against the 5 s goal; then the same work
            in-process, timed step by step (reading the RIB, the routing view, each statement of summarise).

The data: the default fleet (10 PoPs in 9 metros); remote addresses from ~1M hosts in 50,000 routed IPv4
prefixes whose popularity is Zipf-like (a few prefixes carry most traffic); 70% of flows out, 30% in; bytes
lognormal (heavy-tailed); one day of 288 five-minute bins, with a daily cycle per PoP's time zone. The RIB (MRT
TABLE_DUMP_V2) holds those prefixes with two routes each as every PoP sees them (one per transit of the PoP: NA
PoPs AS64497/AS64498, EU PoPs AS64499/AS64500), AS paths of 2-5 ASes over ~5,000 ASes, origins Zipf-like.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "peering"))

from _mrt import write_mrt  # noqa: E402

from edgeplane.fleet import Fleet, load_fleet  # noqa: E402
from edgeplane.peering._collector import our_prefixes  # noqa: E402
from edgeplane.peering._decode import FlowColumns  # noqa: E402
from edgeplane.peering._store import BIN_MS, FlowStore, Tag  # noqa: E402

PREFIXES = 50_000
HOSTS = 1_000_000
ASES = 5_000
CORE_ASES = 300  # the ASes in the middle of paths (the first 30 of them right behind our transits)
PREFIX_ZIPF = 1.05
ORIGIN_ZIPF = 1.0
OUT_SHARE = 0.7
BINS = 288  # one day of 5-minute bins
GOAL_SECONDS = 5.0
PER_DATAGRAM = 30
TEMPLATE_EVERY = 16
# Address space the synthetic Internet is not drawn from (reserved, private, ours).
RESERVED = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
            "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
            "203.0.113.0/24")  # fmt: skip

U32 = npt.NDArray[np.uint32]


# The synthetic Internet: prefixes, hosts, their popularity, and the routes to them


@dataclass(frozen=True)
class Internet:
    base: U32  # each prefix's first address
    length: npt.NDArray[np.int64]  # its prefix length
    cumulative: npt.NDArray[np.float64]  # Zipf-like popularity, cumulative, for drawing a prefix per flow
    host_start: npt.NDArray[np.int64]  # each prefix's hosts: hosts[host_start[p] : host_start[p] + host_count[p]]
    host_count: npt.NDArray[np.int64]
    hosts: U32

    def remotes(self, rng: np.random.Generator, n: int) -> U32:
        prefix = np.searchsorted(self.cumulative, rng.random(n) * self.cumulative[-1], side="right")
        prefix = np.minimum(prefix, len(self.base) - 1)
        # within a prefix, a few hosts carry most of its flows too (density ~ 1/sqrt(rank))
        offset = (self.host_count[prefix] * rng.random(n) ** 2).astype(np.int64)
        return self.hosts[self.host_start[prefix] + offset]

    def prefix_text(self, index: int) -> str:
        value = int(self.base[index])
        return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}/{int(self.length[index])}"


def _ipv4(text: str) -> tuple[int, int]:
    address, _, length = text.partition("/")
    a, b, c, d = (int(x) for x in address.split("."))
    low = (a << 24) | (b << 16) | (c << 8) | d
    return low, low + (1 << (32 - int(length))) - 1


def internet(seed: int = 1) -> Internet:
    rng = np.random.default_rng(seed)
    lengths = np.array([16, 17, 18, 19, 20, 21, 22, 23, 24])
    shares = np.array([0.03, 0.02, 0.03, 0.04, 0.07, 0.06, 0.1, 0.08, 0.57])
    reserved = [_ipv4(r) for r in RESERVED]
    base = np.zeros(0, np.int64)
    length = np.zeros(0, np.int64)
    while len(base) < PREFIXES:
        n = PREFIXES * 2
        want = rng.choice(lengths, n, p=shares)
        start = rng.integers(1 << 24, 224 << 24, n) & ~((1 << (32 - want)) - 1)
        base = np.concatenate([base, start])
        length = np.concatenate([length, want])
        end = base + (1 << (32 - length)) - 1
        keep = np.ones(len(base), bool)
        for low, high in reserved:
            keep &= (end < low) | (base > high)
        base, length, end = base[keep], length[keep], end[keep]
        order = np.argsort(base, kind="stable")
        base, length, end = base[order], length[order], end[order]
        # no overlaps: a prefix that starts inside the one before (as laid out) goes
        overlapping = np.zeros(len(base), bool)
        overlapping[1:] = base[1:] <= np.maximum.accumulate(end)[:-1]
        base, length = base[~overlapping], length[~overlapping]
    pick = np.sort(rng.choice(len(base), PREFIXES, replace=False))
    base, length = base[pick], length[pick]
    popularity = 1.0 / (rng.permutation(PREFIXES) + 1.0) ** PREFIX_ZIPF
    size = 1 << (32 - length)
    # popular prefixes have more hosts; each at least one, at most its size less network and broadcast
    share = np.sqrt(popularity)
    host_count = np.clip(np.round(HOSTS * share / share.sum()), 1, size - 2).astype(np.int64)
    host_start = np.concatenate([[0], np.cumsum(host_count)[:-1]])
    owner = np.repeat(np.arange(PREFIXES), host_count)
    offsets = 1 + (rng.random(len(owner)) * (size[owner] - 2)).astype(np.int64)
    hosts = (base[owner] + offsets).astype(np.uint32)
    return Internet(
        base.astype(np.uint32), length, np.cumsum(popularity), host_start.astype(np.int64), host_count, hosts
    )


def rib_routes(net: Internet, fleet: Fleet, seed: int = 2) -> list[tuple[str, int, list[int], None]]:
    """Two routes per prefix as each PoP sees them: one from each of its transits, paths of 2-5 ASes."""
    rng = np.random.default_rng(seed)
    ours = {fleet.asn} | {t.asn for p in fleet.pops for t in p.transits}
    pool = np.array([a for a in rng.choice(np.arange(1_000, 60_000), ASES + 50, replace=False) if a not in ours])
    core, edge = pool[:CORE_ASES], pool[CORE_ASES:ASES]
    weights = 1.0 / (np.arange(len(edge)) + 1.0) ** ORIGIN_ZIPF
    origins = rng.choice(edge, PREFIXES, p=weights / weights.sum())
    pairs = sorted({tuple(sorted(t.asn for t in p.transits)) for p in fleet.pops})
    routes: list[tuple[str, int, list[int], None]] = []
    lengths = np.array([2, 3, 4, 5])
    length_share = np.array([0.25, 0.4, 0.25, 0.1])
    for index in range(PREFIXES):
        prefix = net.prefix_text(index)
        origin = int(origins[index])
        for pair in pairs:
            first, second = rng.choice(lengths, 2, replace=False, p=length_share)  # different lengths
            for transit, hops in zip(pair, (first, second), strict=True):
                middle = [int(rng.choice(core[:30]))] if hops > 2 else []
                while len(middle) < hops - 2:
                    asn = int(rng.choice(core))
                    if asn not in middle:
                        middle.append(asn)
                routes.append((prefix, transit, [transit, *middle, origin], None))
    return routes


# Ingest: a replayed softflowd export into nfcapd and into ours

# softflowd 1.1.0's v9 templates (as bench/flow_decode.py): 1024 IPv4, 2048 IPv6, and their ICMP variants.
V4_FIELDS = [(8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4), (10, 4), (14, 4), (61, 1), (136, 1), (7, 2),
             (11, 2), (4, 1), (6, 1), (60, 1), (5, 1)]  # fmt: skip
V6_FIELDS = [(27, 16), (28, 16), *V4_FIELDS[2:]]
ICMP4_FIELDS = [*V4_FIELDS[:10], (32, 2), *V4_FIELDS[12:]]
ICMP6_FIELDS = [*V6_FIELDS[:10], (139, 2), *V6_FIELDS[12:]]
V4_RECORD = np.dtype(
    [("src", ">u4"), ("dst", ">u4"), ("first", ">u4"), ("last", ">u4"), ("bytes", ">u4"), ("packets", ">u4"),
     ("input", ">u4"), ("output", ">u4"), ("direction", "u1"), ("reason", "u1"), ("src_port", ">u2"),
     ("dst_port", ">u2"), ("protocol", "u1"), ("tcp_flags", "u1"), ("ip_version", "u1"), ("tos", "u1")]
)  # fmt: skip


def _set(set_id: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def _template(template_id: int, fields: list[tuple[int, int]]) -> bytes:
    return struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", *f) for f in fields)


def replay(net: Internet, fleet: Fleet, records: int, seed: int = 3) -> list[bytes]:
    """What softflowd at nyc1 would send for ``records`` IPv4 flows: 30 records a datagram."""
    rng = np.random.default_rng(seed)
    datagrams = -(-records // PER_DATAGRAM)
    records = datagrams * PER_DATAGRAM
    local_base, _ = _ipv4(fleet.metro_by_code["nyc"].service_prefixes[0])
    remote = net.remotes(rng, records)
    local = (local_base + rng.integers(1, 255, records)).astype(np.uint32)
    out = rng.random(records) < OUT_SHARE
    uptime_ms = 3_600_000_000
    table = np.zeros(records, V4_RECORD)
    table["src"] = np.where(out, local, remote)
    table["dst"] = np.where(out, remote, local)
    size = np.clip(rng.lognormal(np.where(out, 9.0, 7.0), 2.0), 40, 4e9).astype(np.uint64)
    table["bytes"] = size
    table["packets"] = np.maximum(1, size // rng.integers(500, 1500, records))
    last = uptime_ms - rng.integers(0, 60_000, records)
    table["last"] = last
    table["first"] = last - np.minimum(rng.exponential(10_000, records), 300_000).astype(np.int64)
    table["src_port"] = np.where(out, 443, rng.integers(32768, 61000, records))
    table["dst_port"] = np.where(out, rng.integers(32768, 61000, records), 443)
    udp = rng.random(records) < 0.1
    table["protocol"] = np.where(udp, 17, 6)
    table["tcp_flags"] = np.where(udp, 0, 0x1B)
    table["ip_version"] = 4
    body = table.tobytes()
    step = PER_DATAGRAM * V4_RECORD.itemsize
    templates = _set(0, b"".join(_template(t, f) for t, f in
                     ((1024, V4_FIELDS), (1025, ICMP4_FIELDS), (2048, V6_FIELDS), (2049, ICMP6_FIELDS))))  # fmt: skip
    options = _set(1, struct.pack("!HHH", 256, 4, 12) + struct.pack("!HHHHHHHH", 2, 4, 34, 4, 35, 1, 82, 16))
    options_data = _set(256, struct.pack("!IIB", 0, 1, 0) + b"softflowd".ljust(16, b"\0"))
    now_s = int(time.time())
    out_list = []
    for n in range(datagrams):
        extra = [templates, options, options_data] if n % TEMPLATE_EVERY == 0 else []
        count = PER_DATAGRAM + (6 if extra else 0)  # v9 counts template and options records too
        header = struct.pack("!HHIIII", 9, count, uptime_ms, now_s, n, 0)
        out_list.append(header + b"".join(extra) + _set(1024, body[n * step : (n + 1) * step]))
    return out_list


def _udp_socket(port: int) -> tuple[int, int] | None:
    """(bytes queued, drops) of the UDP socket bound to 127.0.0.1:``port``; None when there is none."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        for line in table:
            fields = line.split()
            if fields[1] == wanted:
                return int(fields[4].split(":")[1], 16), int(fields[-1])
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(what: str, done: Callable[[], bool], seconds: float, pause: float = 0.0005) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(pause)


def preload(datagrams: list[bytes], port: int) -> int:
    """Send every datagram at once into a stopped receiver's queue; the bytes queued (all, or drops show)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in datagrams:
            sender.sendto(datagram, ("127.0.0.1", port))
    return (_udp_socket(port) or (0, 0))[0]


def deliver(
    process: subprocess.Popen[Any], datagrams: list[bytes], port: int, burst: int, *, preloaded: bool
) -> tuple[float, float]:
    """The replay to a collector: paced (send), or, for its own rate, queued whole while it is stopped and timed
    from SIGCONT until its queue is drained. The start time, and the seconds the sender waited for it."""
    if not preloaded:
        return send(datagrams, port, burst)
    process.send_signal(signal.SIGSTOP)
    preload(datagrams, port)
    started = time.monotonic()
    process.send_signal(signal.SIGCONT)
    _wait("the collector to drain its queue", lambda: (_udp_socket(port) or (0, 0))[0] == 0, 60, 0.0002)
    return started, 0.0


def send(datagrams: list[bytes], port: int, burst: int) -> tuple[float, float]:
    """Send every datagram to 127.0.0.1:``port``, a burst at a time, the next once the receiver's queue holds
    less than half a burst. The monotonic time of the first send, and the seconds spent waiting for the queue
    before the last datagram went (near zero: the sender, not the receiver, set the pace)."""
    target = ("127.0.0.1", port)
    low_water = burst // 2 * len(datagrams[-1])
    waited = 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        started = time.monotonic()
        for start in range(0, len(datagrams), burst):
            if start:
                pause = time.monotonic()
                _wait("the receiver's queue", lambda: (_udp_socket(port) or (0, 0))[0] < low_water, 60)
                waited += time.monotonic() - pause
            for datagram in datagrams[start : start + burst]:
                sender.sendto(datagram, target)
        _wait("the receiver's queue to drain", lambda: (_udp_socket(port) or (0, 0))[0] == 0, 60)
    return started, waited


@dataclass
class IngestRun:
    records: int  # what the collector says it stored
    seconds: float  # first datagram sent until stored
    drops: int  # the kernel's count for the receiving socket
    waited: float  # seconds the sender waited for the receiver's queue before its last datagram
    decoded_seconds: float | None = None  # ours: until `records` (decoded) reached the total
    received_seconds: float | None = None  # until the socket was drained

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def run_nfcapd(datagrams: list[bytes], work: Path, burst: int, buffer_bytes: int, *, preloaded: bool) -> IngestRun:
    store = work / "nfcapd"
    store.mkdir()
    port = _free_port()
    process = subprocess.Popen(
        ["nfcapd", "-w", str(store), "-b", "127.0.0.1", "-p", str(port), "-t", "60", "-B", str(buffer_bytes)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait("nfcapd to listen", lambda: _udp_socket(port) is not None, 30, 0.01)
        time.sleep(0.2)
        started, waited = deliver(process, datagrams, port, burst, preloaded=preloaded)
        received = time.monotonic() - started
        found = _udp_socket(port)
        drops = found[1] if found else -1
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        seconds = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    summary = subprocess.run(["nfdump", "-R", str(store), "-I"], capture_output=True, text=True, check=True).stdout
    flows = next(int(line.split(":")[1]) for line in summary.splitlines() if line.startswith("Flows:"))
    return IngestRun(flows, seconds, drops, waited, received_seconds=received)


def _stats(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(http + "/api/flows/stats", timeout=10) as answer:
        return dict(json.loads(answer.read()))


def run_ours(datagrams: list[bytes], work: Path, burst: int, buffer_bytes: int, *, preloaded: bool) -> IngestRun:
    data_dir = work / "edgeplane"
    argv = [*_edgeplane(), "flows", "collect", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    argv += ["--data-dir", str(data_dir), "--pop", "nyc1", "--receive-buffer", str(buffer_bytes)]
    log = open(work / "collector.log", "w")  # noqa: SIM115
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    state = data_dir / "collector.json"
    total = len(datagrams) * PER_DATAGRAM
    try:
        _wait("the collector to listen", lambda: state.exists() or process.poll() is not None, 60, 0.01)
        if process.poll() is not None:
            raise SystemExit(f"the collector exited: {(work / 'collector.log').read_text()}")
        found = json.loads(state.read_text())
        port = int(found["udp"].rpartition(":")[2])
        http = found["http"]
        time.sleep(0.2)
        started, waited = deliver(process, datagrams, port, burst, preloaded=preloaded)
        received = time.monotonic() - started
        drops = (_udp_socket(port) or (0, -1))[1]
        decoded: float | None = None
        deadline = time.monotonic() + 300
        while True:
            stats = _stats(http)
            now = time.monotonic() - started
            if decoded is None and stats["records"] >= total:
                decoded = now
            if stats["stored"] >= total:
                seconds = now
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the collector stored {stats['stored']} of {total}: {stats}")
            time.sleep(0.02)
        if stats["dropped"]:
            print(f"  note: the collector dropped {stats['dropped']}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        log.close()
    with FlowStore(data_dir).open(read_only=True) as connection:
        rows = connection.execute("SELECT count(*) FROM flows").fetchone()[0]
    if rows != stats["stored"]:
        print(f"  note: /api/flows/stats said {stats['stored']} stored, the flows table holds {rows}")
    return IngestRun(int(rows), seconds, drops, waited, decoded_seconds=decoded, received_seconds=received)


@contextlib.contextmanager
def receive_queue(wanted: int) -> Iterator[int]:
    """net.core.rmem_max raised to ``wanted`` for the run where we may (root), put back after; what holds."""
    knob = Path("/proc/sys/net/core/rmem_max")
    before = int(knob.read_text())
    raised = False
    if before < wanted:
        try:
            knob.write_text(str(wanted))
            raised = True
        except OSError:
            pass
    try:
        yield int(knob.read_text())
    finally:
        if raised:
            knob.write_text(str(before))


def bench_ingest(records: int, rounds: int, burst: int, work: Path) -> None:
    fleet = load_fleet(None)
    started = time.perf_counter()
    datagrams = replay(internet(), fleet, records)
    total = len(datagrams) * PER_DATAGRAM
    size = sum(map(len, datagrams))
    print(
        f"ingest: {total:,} records in {len(datagrams):,} softflowd-shaped v9 datagrams ({PER_DATAGRAM} IPv4"
        f" records each, {size / 1e6:.1f} MB) built in {time.perf_counter() - started:.1f} s"
    )
    # A queue deep enough for the whole replay (the kernel counts about twice the datagram bytes on loopback).
    with receive_queue(max(8 << 20, 4 * size)) as rmem_max:
        buffer_bytes = rmem_max
        preload_fits = rmem_max >= 3 * size
        print(f"  both collectors ask for a {buffer_bytes >> 20} MiB socket buffer (net.core.rmem_max {rmem_max})")
        modes = [("own rate: the replay queued while stopped, timed from SIGCONT", True)] if preload_fits else []
        if not preload_fits:
            print("  (net.core.rmem_max too small to queue the whole replay and not ours to raise: paced only)")
        modes.append((f"paced: bursts of {burst}, the next once the queue is under half a burst", False))
        for label, preloaded in modes:
            print(f"  {label}")
            ratio = _ingest_rounds(datagrams, total, rounds, burst, buffer_bytes, work, preloaded=preloaded)
            goal = "met" if ratio >= 1 else "not met"
            print(f"  ingest ({'own rate' if preloaded else 'paced'}) ours/nfcapd = {ratio:.2f} (goal >= 1; {goal})")


def _ingest_rounds(
    datagrams: list[bytes], total: int, rounds: int, burst: int, buffer_bytes: int, work: Path, *, preloaded: bool
) -> float:
    runs: dict[str, list[IngestRun]] = defaultdict(list)
    for round_ in range(rounds):
        order = ("nfcapd", "edgeplane") if round_ % 2 == 0 else ("edgeplane", "nfcapd")
        for name in order:
            place = work / f"ingest-{round_}-{name}"
            place.mkdir()
            if name == "nfcapd":
                run = run_nfcapd(datagrams, place, burst, buffer_bytes, preloaded=preloaded)
            else:
                run = run_ours(datagrams, place, burst, buffer_bytes, preloaded=preloaded)
            runs[name].append(run)
            decoded = "" if run.decoded_seconds is None else f", decoded after {run.decoded_seconds:.2f} s"
            print(
                f"    round {round_ + 1} {name:9}: {run.records:,} records stored in {run.seconds:.2f} s"
                f" ({run.rate:,.0f} records/s; socket drained after {run.received_seconds:.2f} s{decoded});"
                f" sender waited {run.waited:.2f} s for it; kernel drops {run.drops}"
            )
            shutil.rmtree(place)
    medians = {name: statistics.median(r.rate for r in found) for name, found in runs.items()}
    for name, found in runs.items():
        counts = sorted({r.records for r in found})
        extra = ""
        if name == "edgeplane":
            decode = statistics.median(r.decoded_seconds or 0.0 for r in found)
            extra = f"; decoded (records = total) after {decode:.2f} s, {total / decode:,.0f} records/s"
        print(
            f"    {name:9}: median {medians[name]:,.0f} records/s stored"
            f" (median {statistics.median(r.seconds for r in found):.2f} s)"
            f"{extra}; records {'/'.join(f'{c:,}' for c in counts)} of {total:,} sent;"
            f" kernel drops {sum(r.drops for r in found)}"
        )
    return medians["edgeplane"] / medians["nfcapd"]


# Candidates: 100M stored flows, then `peering candidates`


def _edgeplane() -> list[str]:
    script = Path(sys.executable).parent / "edgeplane"
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgeplane"]


def _daily(minutes: npt.NDArray[np.int64], utc_offset_hours: float) -> npt.NDArray[np.float64]:
    """Traffic through the day (``minutes`` after 00:00 UTC): a sine, highest at 20:00 local time, 1.6 times the
    mean, and lowest at 08:00, 0.4 times."""
    hours = (minutes / 60 + utc_offset_hours) % 24
    return 1.0 + 0.6 * np.sin((hours - 14.0) / 24 * 2 * math.pi)


UTC_OFFSET = {"nyc": -5, "iad": -5, "ord": -6, "dfw": -6, "sjc": -8, "sea": -8, "lon": 0, "ams": 1, "fra": 1}
POP_SHARE = {"nyc1": 0.14, "nyc2": 0.08, "iad1": 0.1, "ord1": 0.09, "dfw1": 0.08, "sjc1": 0.11, "sea1": 0.07,
             "lon1": 0.13, "ams1": 0.1, "fra1": 0.1}  # fmt: skip


def flow_batches(
    net: Internet, fleet: Fleet, flows: int, batch: int, last_bin: int, seed: int = 4
) -> Iterator[FlowColumns]:
    """A day of flows at every PoP, in time order, ``batch`` at a time (the last one smaller)."""
    rng = np.random.default_rng(seed)
    pops = [p.code for p in fleet.pops]
    bins = np.arange(last_bin - BINS + 1, last_bin + 1)
    # the same day whenever it runs: the window's first bin taken as 00:00 UTC
    minutes = np.arange(BINS) * (BIN_MS // 60_000)
    weight = np.stack([POP_SHARE[p] * _daily(minutes, UTC_OFFSET[fleet.pop_by_code[p].metro]) for p in pops], axis=1)
    counts = rng.multinomial(flows, (weight / weight.sum()).ravel()).reshape(weight.shape)  # [bin, pop]
    local_base = np.array([_ipv4(fleet.metro_by_code[fleet.pop_by_code[p].metro].service_prefixes[0])[0] for p in pops])
    pending: list[tuple[int, npt.NDArray[np.int64]]] = []
    held = 0
    for row, bin_ in enumerate(bins):
        pending.append((int(bin_), counts[row]))
        held += int(counts[row].sum())
        if held < batch and row < len(bins) - 1:
            continue
        pop = np.concatenate([np.repeat(np.arange(len(pops)), c) for _, c in pending])
        bin_of = np.concatenate([np.full(int(c.sum()), b, np.int64) for b, c in pending])
        pending, n = [], len(pop)
        held = 0
        remote = net.remotes(rng, n).astype(np.uint64)
        local = (local_base[pop] + rng.integers(1, 255, n)).astype(np.uint64)
        out = rng.random(n) < OUT_SHARE
        mapped = np.uint64(0xFFFF00000000)
        end_ms = bin_of * BIN_MS + rng.integers(0, BIN_MS, n)
        size = np.clip(rng.lognormal(np.where(out, 9.0, 7.0), 2.0), 40, 1e12).astype(np.uint64)
        udp = rng.random(n) < 0.1
        yield FlowColumns(
            exporter=pop.astype(np.uint32),
            domain=np.zeros(n, np.uint32),
            start_ms=end_ms - np.minimum(rng.exponential(10_000, n), 300_000).astype(np.int64),
            end_ms=end_ms,
            src_hi=np.zeros(n, np.uint64),
            src_lo=np.where(out, local, remote) | mapped,
            dst_hi=np.zeros(n, np.uint64),
            dst_lo=np.where(out, remote, local) | mapped,
            bytes=size,
            packets=np.maximum(1, size // rng.integers(500, 1500, n).astype(np.uint64)),
            protocol=np.where(udp, 17, 6).astype(np.uint8),
            src_port=np.where(out, 443, rng.integers(32768, 61000, n)).astype(np.uint16),
            dst_port=np.where(out, rng.integers(32768, 61000, n), 443).astype(np.uint16),
            sampling=np.ones(n, np.uint32),
        )


def build_store(net: Internet, fleet: Fleet, data_dir: Path, flows: int, batch: int) -> None:
    exporters = [f"10.{i}.0.1" for i in range(len(fleet.pops))]
    tags = {e: Tag(p.code, p.metro) for e, p in zip(exporters, fleet.pops, strict=True)}
    ours = our_prefixes(fleet)
    store = FlowStore(data_dir)
    last_bin = int(time.time() * 1000) // BIN_MS - 3  # a closed bin: the compaction below covers the whole day
    written = 0
    started = time.perf_counter()
    with store.open() as connection:
        for columns in flow_batches(net, fleet, flows, batch, last_bin):
            connection.execute("BEGIN TRANSACTION")
            written += store.append(connection, columns, exporters, tags, ours)
            store.save_counters(connection, {"records": written, "stored": written})
            connection.execute("COMMIT")
            print(f"\r  written {written:,} of {flows:,} ({time.perf_counter() - started:.0f} s)", end="", flush=True)
        appended = time.perf_counter() - started
        compacted = store.expire(connection, raw_before_ms=0, aggregates_before_ms=0, compact_from_bin=0)
        store.save_counters(connection, {"compacted_bin": compacted})
        rows = connection.execute("SELECT count(*), count(DISTINCT remote) FROM traffic_5m").fetchone()
    print(
        f"\r  store: {written:,} flows appended in {appended:.0f} s, compacted in"
        f" {time.perf_counter() - started - appended:.0f} s; traffic_5m {rows[0]:,} rows, {rows[1]:,} remote"
        f" addresses; {store.path.stat().st_size / 1e9:.2f} GB"
    )


class _Timed:
    """A DuckDB connection that times each statement (its fetch included) for the step-by-step breakdown."""

    def __init__(self, connection: Any, into: list[tuple[str, float]]) -> None:
        self._connection, self._into = connection, into

    def execute(self, sql: str, *args: Any) -> Any:
        started = time.perf_counter()
        result = self._connection.execute(sql, *args)
        label = " ".join(sql.split())[:90]
        return _TimedResult(result, self._into, label, started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class _TimedResult:
    def __init__(self, result: Any, into: list[tuple[str, float]], label: str, started: float) -> None:
        self._result, self._into, self._label = result, into, label
        into.append((label, time.perf_counter() - started))

    def _timed(self, method: str) -> Any:
        started = time.perf_counter()
        value = getattr(self._result, method)()
        self._into.append((f"  (fetch) {self._label[:60]}", time.perf_counter() - started))
        return value

    def fetchall(self) -> Any:
        return self._timed("fetchall")

    def fetchone(self) -> Any:
        return self._timed("fetchone")


def breakdown(fleet: Fleet, data_dir: Path, rib: Path) -> None:
    """The report's steps one by one, in this process: where the candidates' seconds go."""
    from edgeplane.peering._analysis import rib_routes as read_routes
    from edgeplane.peering._candidates import candidates, routing_view
    from edgeplane.peering._store import summarise

    steps: list[tuple[str, float]] = []
    started = time.perf_counter()
    routes = read_routes(fleet, rib)
    steps.append(("read the RIB (MRT)", time.perf_counter() - started))
    started = time.perf_counter()
    view = routing_view(fleet, routes.by_pop)
    steps.append(("routing_view (best path per prefix and table)", time.perf_counter() - started))
    exclude = {m.code: {t.asn for p in fleet.pops_in(m.code) for t in p.transits} | {fleet.asn} for m in fleet.metros}
    statements: list[tuple[str, float]] = []
    store = FlowStore(data_dir)
    started = time.perf_counter()
    with store.open(read_only=True) as connection:
        opened = time.perf_counter() - started
        started = time.perf_counter()
        found = summarise(_Timed(connection, statements), view, metros=None, top=20, exclude=exclude)
        summarised = time.perf_counter() - started
    steps.append(("open the store read-only", opened))
    steps.append(("summarise", summarised))
    started = time.perf_counter()
    for traffic in found:
        candidates(fleet, traffic, top=20, directory=_NoDirectory())
    steps.append(("candidates per metro", time.perf_counter() - started))
    print("  in-process breakdown:")
    for label, seconds in steps:
        print(f"    {seconds:7.2f} s  {label}")
    print("  summarise, statement by statement:")
    for label, seconds in statements:
        if seconds >= 0.01:
            print(f"    {seconds:7.2f} s  {label}")
    print(f"    {sum(s for _, s in statements):7.2f} s  (all statements; the rest of summarise is Python)")


class _NoDirectory:
    def name(self, asn: int) -> None:
        return None

    def policy(self, asn: int) -> None:
        return None

    def meet(self, asn: int, our_asn: int, metro: Any) -> tuple[()]:
        return ()


def time_candidates(data_dir: Path, rib: Path, repeats: int) -> tuple[float, float, dict[str, Any]]:
    """Median wall seconds of the CLI and of its own "seconds" field, and the last report."""
    walls, inner = [], []
    report: dict[str, Any] = {}
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [*_edgeplane(), "peering", "candidates", "--json", "--rib", str(rib), "--data-dir", str(data_dir)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        walls.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"peering candidates failed ({done.returncode}): {done.stderr}")
        report = json.loads(done.stdout)
        inner.append(float(report["seconds"]))
    return statistics.median(walls), statistics.median(inner), report


def bench_candidates(flows_list: list[int], batch: int, repeats: int, work: Path, *, profile: bool, keep: bool) -> None:
    fleet = load_fleet(None)
    started = time.perf_counter()
    net = internet()
    rib = write_mrt(work / "rib.mrt", rib_routes(net, fleet))
    print(
        f"candidates: synthetic Internet of {PREFIXES:,} prefixes, {len(np.unique(net.hosts)):,} hosts, RIB of"
        f" {PREFIXES * 4:,} routes ({rib.stat().st_size / 1e6:.1f} MB MRT);"
        f" built in {time.perf_counter() - started:.1f} s"
    )
    for flows in flows_list:
        data_dir = work / f"store-{flows}"
        started = time.perf_counter()
        build_store(net, fleet, data_dir, flows, batch)
        generated = time.perf_counter() - started
        wall, inner, report = time_candidates(data_dir, rib, repeats)
        metros = report["metros"]
        routed = sum(m.get("transit_bytes", 0) for m in metros)
        unrouted = sum(m.get("unrouted_bytes", 0) for m in metros)
        print(
            f"  {flows:,} flows (generated and stored in {generated:.0f} s, not counted): `peering candidates`"
            f' median {wall:.2f} s over {repeats} runs (its own "seconds": {inner:.2f}); goal {GOAL_SECONDS:.0f} s;'
            f" ratio {wall / GOAL_SECONDS:.2f}; {len(metros)} metros,"
            f" {sum(len(m['candidates']) for m in metros)} candidates, {unrouted / max(routed + unrouted, 1):.2%}"
            " of bytes unrouted"
        )
        if profile:
            breakdown(fleet, data_dir, rib)
        if keep:
            print(f"  kept {data_dir} and {rib} (--keep)")
        else:
            shutil.rmtree(data_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["ingest", "candidates", "all"], default="all")
    parser.add_argument("--records", type=int, default=1_000_000, help="ingest: records replayed")
    parser.add_argument("--rounds", type=int, default=3, help="ingest: rounds, each collector once per round")
    parser.add_argument("--burst", type=int, default=500, help="ingest: datagrams sent between queue checks")
    parser.add_argument(
        "--flows", default="100000000", help="candidates: flows stored (comma-separated for several sizes)"
    )
    parser.add_argument("--batch", type=int, default=2_000_000, help="candidates: flows per FlowStore.append")
    parser.add_argument("--repeats", type=int, default=3, help="candidates: CLI runs per size (median)")
    parser.add_argument("--no-profile", action="store_true", help="candidates: skip the step-by-step breakdown")
    parser.add_argument("--work", type=Path, help="where to write the stores (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="candidates: keep the stores and the RIB (needs --work)")
    args = parser.parse_args()
    if args.keep and args.work is None:
        parser.error("--keep needs --work (a temporary directory is removed at the end)")
    if args.part in ("ingest", "all") and shutil.which("nfcapd") is None:
        raise SystemExit("nfcapd not found: install nfdump (Debian), as scripts/install does")
    with contextlib.ExitStack() as stack:
        if args.work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeplane-flows-")))
        else:
            work = args.work
            work.mkdir(parents=True, exist_ok=True)
        print(f"{os.cpu_count()} cores; work in {work}")
        if args.part in ("ingest", "all"):
            bench_ingest(args.records, args.rounds, args.burst, work)
        if args.part in ("candidates", "all"):
            sizes = [int(s) for s in str(args.flows).split(",")]
            bench_candidates(sizes, args.batch, args.repeats, work, profile=not args.no_profile, keep=args.keep)


if __name__ == "__main__":
    main()
