"""The flow decoder's ingest rate on softflowd-shaped NetFlow v9, beside the netflow package's.

    python bench/flow_decode.py [--datagrams 10000] [--repeat 5]

Builds, in memory, the datagrams softflowd sends (a template datagram every 16th: its four data templates,
its options template and options data; the others 24 IPv4 and 6 IPv6 records each), then prints records/s for
Decoder.decode over every datagram plus one take() (best of --repeat), and for the netflow package (0.12.2,
pure Python) over the first 1,000, with the ratio. The goal is nfcapd's rate, about 1M records/s on one core.
"""

from __future__ import annotations

import argparse
import random
import struct
import time

from netflow.v9 import V9ExportPacket

from edgeplane.peering._decode import Decoder

# softflowd 1.1.0's v9 templates (checked on a real export): 1024 IPv4, 2048 IPv6.
V4_FIELDS = [(8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4), (10, 4), (14, 4), (61, 1), (136, 1), (7, 2),
             (11, 2), (4, 1), (6, 1), (60, 1), (5, 1)]  # fmt: skip
V6_FIELDS = [(27, 16), (28, 16), *V4_FIELDS[2:]]
ICMP4_FIELDS = [*V4_FIELDS[:10], (32, 2), *V4_FIELDS[12:]]
ICMP6_FIELDS = [*V6_FIELDS[:10], (139, 2), *V6_FIELDS[12:]]
TEMPLATE_EVERY = 16


def _set(set_id: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def _template(template_id: int, fields: list[tuple[int, int]]) -> bytes:
    return struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", *f) for f in fields)


def _records(rng: random.Random, fields: list[tuple[int, int]], count: int, uptime_ms: int) -> bytes:
    out = b""
    for _ in range(count):
        end = uptime_ms - rng.randrange(60_000)
        values = {1: rng.randrange(40, 1_500_000), 2: rng.randrange(1, 1000), 21: end, 22: end - rng.randrange(30_000),
                  4: rng.choice([6, 17]), 7: rng.randrange(65536), 11: rng.choice([53, 80, 443]), 60: 4}  # fmt: skip
        for ie, length in fields:
            value = values.get(ie, rng.randrange(1 << 32) if ie in (8, 12) else 0)
            out += rng.randbytes(16) if length == 16 else value.to_bytes(length, "big")
    return out


def softflowd_datagrams(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    templates = _set(0, b"".join(_template(t, f) for t, f in
                     ((1024, V4_FIELDS), (1025, ICMP4_FIELDS), (2048, V6_FIELDS), (2049, ICMP6_FIELDS))))  # fmt: skip
    options = _set(1, struct.pack("!HHH", 256, 4, 12) + struct.pack("!HHHHHHHH", 2, 4, 34, 4, 35, 1, 82, 16))
    options_data = _set(256, struct.pack("!IIB", 0, 1, 0) + b"softflowd".ljust(16, b"\0"))
    datagrams = []
    for n in range(count):
        uptime_ms = 3_600_000 + n * 10
        header = struct.pack("!HHIIII", 9, 30, uptime_ms, 1_790_000_000 + n // 100, n, 0)
        sets = [templates, options, options_data] if n % TEMPLATE_EVERY == 0 else []
        sets += [
            _set(1024, _records(rng, V4_FIELDS, 24, uptime_ms)),
            _set(2048, _records(rng, V6_FIELDS, 6, uptime_ms)),
        ]
        datagrams.append(header + b"".join(sets))
    return datagrams


def ours(datagrams: list[bytes]) -> tuple[int, float]:
    decoder = Decoder()
    started = time.perf_counter()
    for datagram in datagrams:
        decoder.decode(datagram, "192.0.2.1", 0)
    records = len(decoder.take())
    seconds = time.perf_counter() - started
    assert not any(decoder.dropped.values()), decoder.dropped
    return records, seconds


def theirs(datagrams: list[bytes]) -> tuple[int, float]:
    templates: dict[int, object] = {}
    started = time.perf_counter()
    records = sum(len(V9ExportPacket(datagram, templates).flows) for datagram in datagrams)
    return records, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datagrams", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    datagrams = softflowd_datagrams(args.datagrams)
    records, seconds = min((ours(datagrams) for _ in range(args.repeat)), key=lambda r: r[1])
    rate = records / seconds
    subset = datagrams[:1000]
    their_records, their_seconds = theirs(subset)
    their_rate = their_records / their_seconds
    print(
        f"Decoder: {records} records from {len(datagrams)} datagrams in {seconds * 1000:.0f} ms: {rate:,.0f} records/s"
        f" (goal: nfcapd's ~1M records/s on one core; rate/goal = {rate / 1e6:.2f})"
    )
    print(
        f"netflow package: {their_records} records from {len(subset)} datagrams in {their_seconds * 1000:.0f} ms:"
        f" {their_rate:,.0f} records/s; Decoder/netflow = {rate / their_rate:.1f}x"
    )


if __name__ == "__main__":
    main()
