"""MRT table dumps written byte by byte (RFC 6396), for tests that read the routes our transits send us."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

TIMESTAMP = 1_700_000_000
TABLE_DUMP, TABLE_DUMP_V2, BGP4MP = 12, 13, 16
PEER_INDEX_TABLE, RIB_IPV4_UNICAST, RIB_IPV6_UNICAST = 1, 2, 4
RIB_IPV4_UNICAST_ADDPATH, RIB_IPV6_UNICAST_ADDPATH = 8, 10
AS_SET, AS_SEQUENCE = 1, 2

Segment = tuple[int, Sequence[int]]  # (AS_SET or AS_SEQUENCE, its ASes)
MrtRoute = tuple[str, int, Sequence[int], int | None]  # prefix, transit (peer) AS, AS path, MED


def write_mrt(path: Path, routes: Sequence[MrtRoute]) -> Path:
    """A TABLE_DUMP_V2 file: a PEER_INDEX_TABLE with one peer per transit AS (in order of first appearance),
    then one RIB_IPV4_UNICAST or RIB_IPV6_UNICAST record per prefix holding each transit's route to it, with
    ORIGIN, a 4-byte AS_PATH, the next hop (peer_address / peer_address6 of the peer) and the MED if any."""
    path.write_bytes(table_dump(routes))
    return path


def peer_address(index: int) -> str:
    return f"192.0.2.{index + 1}"


def peer_address6(index: int) -> str:
    return f"2001:db8::{index + 1:x}"


def table_dump(routes: Sequence[MrtRoute]) -> bytes:
    asns = list(dict.fromkeys(asn for _, asn, _, _ in routes))
    out = [peer_index_table([(asn, peer_address(i)) for i, asn in enumerate(asns)])]
    by_prefix: dict[str, list[tuple[int, bytes]]] = {}
    for prefix, asn, as_path, med in routes:
        index = asns.index(asn)
        version = ipaddress.ip_network(prefix).version
        hop = peer_address(index) if version == 4 else peer_address6(index)
        entry = (index, path_attributes([(AS_SEQUENCE, as_path)], next_hop=hop, med=med))
        by_prefix.setdefault(prefix, []).append(entry)
    for sequence, (prefix, entries) in enumerate(by_prefix.items()):
        out.append(rib_record(prefix, entries, sequence=sequence))
    return b"".join(out)


def record(kind: int, subtype: int, body: bytes, timestamp: int = TIMESTAMP) -> bytes:
    """One MRT record: the common header (RFC 6396 2), then ``body``."""
    return struct.pack("!IHHI", timestamp, kind, subtype, len(body)) + body


def peer_index_table(peers: Sequence[tuple[int, str]], view: str = "master") -> bytes:
    """A PEER_INDEX_TABLE record (RFC 6396 4.3.1) of (AS, address) peers, each with a 4-byte AS."""
    body = ipaddress.IPv4Address("192.0.2.254").packed + struct.pack("!H", len(view)) + view.encode()
    body += struct.pack("!H", len(peers))
    for asn, address in peers:
        ip = ipaddress.ip_address(address)
        peer_type = 0x02 | (0x01 if ip.version == 6 else 0x00)  # 4-byte AS; IPv6 address
        body += struct.pack("!B", peer_type) + ipaddress.IPv4Address("198.51.100.1").packed
        body += ip.packed + struct.pack("!I", asn)
    return record(TABLE_DUMP_V2, PEER_INDEX_TABLE, body)


def rib_record(
    prefix: str, entries: Sequence[tuple[int, bytes]], *, sequence: int = 0, path_ids: Sequence[int] | None = None
) -> bytes:
    """A RIB_IPV4_UNICAST or RIB_IPV6_UNICAST record (RFC 6396 4.3.2) of (peer index, path attributes)
    entries; the ADDPATH subtype (RFC 8050) when ``path_ids`` are given."""
    network = ipaddress.ip_network(prefix)
    if path_ids is None:
        subtype = RIB_IPV4_UNICAST if network.version == 4 else RIB_IPV6_UNICAST
    else:
        subtype = RIB_IPV4_UNICAST_ADDPATH if network.version == 4 else RIB_IPV6_UNICAST_ADDPATH
    length = network.prefixlen
    body = struct.pack("!IB", sequence, length) + network.network_address.packed[: (length + 7) // 8]
    body += struct.pack("!H", len(entries))
    for number, (peer_index, attributes) in enumerate(entries):
        body += struct.pack("!HI", peer_index, TIMESTAMP)
        if path_ids is not None:
            body += struct.pack("!I", path_ids[number])
        body += struct.pack("!H", len(attributes)) + attributes
    return record(TABLE_DUMP_V2, subtype, body)


def attribute(flags: int, kind: int, value: bytes) -> bytes:
    """One path attribute (RFC 4271 4.3), with the extended length flag when the value needs it."""
    if len(value) > 255:
        return struct.pack("!BBH", flags | 0x10, kind, len(value)) + value
    return struct.pack("!BBB", flags, kind, len(value)) + value


def as_path_value(segments: Iterable[Segment], as_bytes: int = 4) -> bytes:
    out = b""
    for kind, asns in segments:
        asns = list(asns)
        for start in range(0, max(len(asns), 1), 255):  # a segment holds at most 255 ASes
            chunk = asns[start : start + 255]
            out += struct.pack("!BB", kind, len(chunk))
            out += b"".join(struct.pack("!I" if as_bytes == 4 else "!H", a) for a in chunk)
    return out


def path_attributes(
    segments: Iterable[Segment],
    *,
    next_hop: str | None = None,
    med: int | None = None,
    local_pref: int | None = None,
    as_bytes: int = 4,
    as4_segments: Iterable[Segment] | None = None,
    extra: bytes = b"",
) -> bytes:
    """ORIGIN IGP, AS_PATH, the next hop (NEXT_HOP for IPv4; for IPv6 the MP_REACH_NLRI that holds only the
    next hop, as RFC 6396 4.3.4 has it), MULTI_EXIT_DISC and LOCAL_PREF when given, AS4_PATH when given."""
    out = attribute(0x40, 1, b"\x00") + attribute(0x40, 2, as_path_value(segments, as_bytes))
    if next_hop is not None:
        hop = ipaddress.ip_address(next_hop)
        if hop.version == 4:
            out += attribute(0x40, 3, hop.packed)
        else:
            out += attribute(0x80, 14, struct.pack("!B", 16) + hop.packed)
    if med is not None:
        out += attribute(0x80, 4, struct.pack("!I", med))
    if local_pref is not None:
        out += attribute(0x40, 5, struct.pack("!I", local_pref))
    if as4_segments is not None:
        out += attribute(0xC0, 17, as_path_value(as4_segments, 4))
    return out + extra


def table_dump_v1(
    prefix: str, peer: str, peer_asn: int, attributes: bytes, *, timestamp: int = TIMESTAMP, sequence: int = 0
) -> bytes:
    """A TABLE_DUMP record (RFC 6396 4.2): 2-byte peer AS, and AS_PATH with 2-byte ASes in ``attributes``."""
    network = ipaddress.ip_network(prefix)
    width = 4 if network.version == 4 else 16
    peer_ip = ipaddress.ip_address(peer).packed.ljust(width, b"\x00")  # an IPv4 peer, as Zebra wrote it
    body = struct.pack("!HH", 0, sequence) + network.network_address.packed
    body += struct.pack("!BBI", network.prefixlen, 1, timestamp) + peer_ip
    body += struct.pack("!HH", peer_asn, len(attributes)) + attributes
    return record(TABLE_DUMP, 1 if network.version == 4 else 2, body, timestamp)
