"""A NetFlow v9 exporter for tests: flows the test chose, as datagrams shaped like softflowd's, sent over UDP
from a loopback address of the test's choosing (the collector tags flows by their exporter's address)."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

V4_FIELDS = ((8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4), (4, 1), (7, 2), (11, 2))
V6_FIELDS = ((27, 16), (28, 16), (22, 4), (21, 4), (1, 4), (2, 4), (4, 1), (7, 2), (11, 2))
V4_TEMPLATE, V6_TEMPLATE = 1024, 2048
PER_DATAGRAM = 30
UPTIME_MS = 500_000_000  # the exporter's sysUpTime when it sends (ms); flows are timed against it


@dataclass(frozen=True, slots=True)
class Flow:
    src: str
    dst: str
    end_ms: int  # unix ms
    bytes: int
    packets: int
    protocol: int = 6
    src_port: int = 443
    dst_port: int = 50000
    duration_ms: int = 1000


def _template_set(template_id: int, fields: Sequence[tuple[int, int]]) -> bytes:
    body = struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", f, n) for f, n in fields)
    return struct.pack("!HH", 0, 4 + len(body)) + body


def _record(flow: Flow, export_ms: int) -> bytes:
    last = UPTIME_MS - (export_ms - flow.end_ms)
    first = last - flow.duration_ms
    address = ipaddress.ip_address(flow.src)
    src, dst = address.packed, ipaddress.ip_address(flow.dst).packed
    tail = struct.pack(
        "!IIIIBHH", first % 2**32, last % 2**32, flow.bytes, flow.packets, flow.protocol, flow.src_port, flow.dst_port
    )
    return src + dst + tail


def datagrams(flows: Iterable[Flow], *, export_ms: int, source_id: int = 0) -> list[bytes]:
    """v9 datagrams carrying ``flows`` (each with both templates first, as softflowd refreshes them)."""
    export_ms -= export_ms % 1000  # the header carries whole seconds
    out: list[bytes] = []
    templates = _template_set(V4_TEMPLATE, V4_FIELDS) + _template_set(V6_TEMPLATE, V6_FIELDS)
    pending = list(flows)
    for sequence, start in enumerate(range(0, len(pending), PER_DATAGRAM)):
        chunk = pending[start : start + PER_DATAGRAM]
        sets = templates
        for version, template in ((4, V4_TEMPLATE), (6, V6_TEMPLATE)):
            records = [_record(f, export_ms) for f in chunk if ipaddress.ip_address(f.src).version == version]
            if records:
                body = b"".join(records)
                body += b"\0" * (-len(body) % 4)  # sets end on a 4-byte boundary
                sets += struct.pack("!HH", template, 4 + len(body)) + body
        header = struct.pack("!HHIIII", 9, len(chunk) + 2, UPTIME_MS, export_ms // 1000, sequence, source_id)
        out.append(header + sets)
    return out


def send(packets: Iterable[bytes], target: tuple[str, int], *, source: str = "127.0.0.1") -> int:
    """Send ``packets`` from ``source`` (any 127.0.0.0/8 address on Linux); the number sent."""
    count = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for packet in packets:
            sock.sendto(packet, target)
            count += 1
    return count
