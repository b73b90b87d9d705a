"""The routes our transits send us, read from an MRT table dump, `birdc show route all` or the speaker's rib-in file."""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import gc
import gzip
import io
import ipaddress
import re
import socket
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import pydantic
from pydantic import AliasChoices, ConfigDict, Field

from edgeplane._errors import ConfigError
from edgeplane._extras import require
from edgeplane.fleet import field_name, problem_message

ASN_MAX = 2**32 - 1
AS_TRANS = 23456  # stands in for a 4-byte AS where only 2 bytes fit (RFC 6793)
AS_SET, AS_SEQUENCE, AS_CONFED_SEQUENCE, AS_CONFED_SET = 1, 2, 3, 4


class RibError(ConfigError):
    """A routing table could not be read; the message names the file and, for text, the line."""


@dataclass(frozen=True, slots=True)
class Route:
    """One path to a prefix, as one transit sent it to us."""

    prefix: str  # normalized network text: "203.0.113.0/24", "2001:db8::/32"
    as_path: tuple[int, ...]  # AS_SEQUENCE order, first = the neighbour; AS_SET members appended, sorted
    as_set: bool  # the path had an AS_SET
    transit_asn: int  # the neighbour AS that sent the route
    med: int | None = None
    local_pref: int | None = None
    next_hop: str | None = None
    as_set_size: int = 0  # how many of as_path's last ASes came from AS_SETs

    def path_length(self) -> int:
        """The length BGP compares: an AS_SET counts as one AS however many it holds (RFC 4271 9.1.2.2 a)."""
        return len(self.as_path) - self.as_set_size + (1 if self.as_set else 0)


def read_rib(path: Path) -> list[Route]:
    """The routes in ``path``, an MRT table dump (plain, gzip or bzip2) or the text `birdc show route all` printed."""
    try:
        with path.open("rb") as stream:
            head = stream.read(12)
    except OSError as error:
        raise RibError(f"{path}: cannot read: {error.strerror or error}") from None
    if not head:
        raise RibError(f"{path}: the file is empty; expected an MRT table dump or `birdc show route all` output")
    if _looks_like_mrt(head):
        routes = read_mrt(path)
    else:
        try:
            text: str | None = path.read_text("utf-8")
        except OSError as error:
            raise RibError(f"{path}: cannot read: {error.strerror or error}") from None
        except UnicodeDecodeError:
            text = None
        if text is None or "\0" in text:  # binary
            kind = MRT_HEADER.unpack(head)[1] if len(head) == 12 else None
            if kind is not None and kind < 256:  # with what an MRT header would say in its place
                raise RibError(
                    f"{path}: its first record's MRT type is {kind}, not a table dump"
                    f" (TABLE_DUMP_V2 {TABLE_DUMP_V2} or TABLE_DUMP {TABLE_DUMP})"
                )
            raise RibError(f"{path}: neither an MRT table dump nor `birdc show route all` text")
        routes = read_birdc(text, source=str(path))
    if not routes:  # a dump of the wrong table, or of a session that was down: no answer would be right
        raise RibError(f"{path}: no routes in it (expected an MRT table dump or `birdc show route all` output)")
    return routes


MRT_HEADER = struct.Struct("!IHHI")  # timestamp, type, subtype, length (RFC 6396 2)
MRT_TYPE_NAMES = {
    11: "OSPFv2 (11)", 12: "TABLE_DUMP (12)", 13: "TABLE_DUMP_V2 (13)", 16: "BGP4MP (16)", 17: "BGP4MP_ET (17)",
    32: "ISIS (32)", 33: "ISIS_ET (33)", 48: "OSPFv3 (48)", 49: "OSPFv3_ET (49)",
}  # fmt: skip
MRT_TYPES = set(MRT_TYPE_NAMES)
TABLE_DUMP, TABLE_DUMP_V2 = 12, 13
PEER_INDEX_TABLE = 1
# TABLE_DUMP_V2 subtypes read, to (IP version, add-path): unicast only, multicast does not carry our traffic.
RIB_SUBTYPES = {2: (4, False), 4: (6, False), 8: (4, True), 10: (6, True)}
READ_CHUNK_BYTES = 1 << 20
# A RIB entry's header by add-path (RFC 6396 4.3.4, RFC 8050): peer index, originated time, path identifier,
# attribute length; the time and the path identifier are skipped.
RIB_ENTRY = {False: struct.Struct("!H4xH"), True: struct.Struct("!H8xH")}
U16, U32 = struct.Struct("!H"), struct.Struct("!I")
# The ASes of one AS_PATH segment (at most 255), by count: 4-byte and 2-byte.
AS4_SEGMENTS = [struct.Struct(f"!{count}I") for count in range(256)]
AS2_SEGMENTS = [struct.Struct(f"!{count}H") for count in range(256)]
FAMILIES = {4: (socket.AF_INET, 4), 6: (socket.AF_INET6, 16)}  # by IP version: address family, address bytes
# How many decoded attribute blocks (and, apart, tails of blocks) are kept per IP version while a file is read:
# a bound on the memory of a table whose entries share few of them.
ATTRIBUTE_CACHE_ENTRIES = 1 << 18


def _looks_like_mrt(head: bytes) -> bool:
    if head.startswith((b"\x1f\x8b", b"BZh")):  # gzip, bzip2: how route collectors ship their dumps
        return True
    return len(head) == 12 and MRT_HEADER.unpack(head)[1] in MRT_TYPES


class _Corrupt(Exception):
    """A record is malformed; read_mrt adds the file and where."""


def read_mrt(path: Path) -> list[Route]:
    """The routes in an MRT table dump: TABLE_DUMP_V2 (IPv4 and IPv6 unicast, with or without add-path) and the
    older TABLE_DUMP. Each route's transit is the peer's AS from the PEER_INDEX_TABLE (or the record, in
    TABLE_DUMP); routes of no peer AS (the dumping router's own) fall back to the path's first AS and are left
    out when the path is empty. Other record types are skipped; a file with no table dump at all is refused.

    TABLE_DUMP_V2 is decoded here, about ten times as fast as mrtparse did (a full table is millions of routes);
    mrtparse reads what is rare: TABLE_DUMP, and a RIB record with an MP_REACH_NLRI attribute written whole."""
    with _collector_paused():
        return _read_mrt(path)


def _read_mrt(path: Path) -> list[Route]:
    tables = _Tables()
    routes: list[Route] = []
    try:
        with _open(path) as stream:
            for number, (offset, kind, subtype, record) in enumerate(_records(stream), 1):
                try:
                    routes += tables.read(kind, subtype, record)
                except _Corrupt as error:
                    raise RibError(f"{path}: MRT record {number} (byte {offset}): {error}") from None
    except _Corrupt as error:  # the framing: a record cut short
        raise RibError(f"{path}: {error}") from None
    except (OSError, EOFError, zlib.error) as error:  # what gzip and bz2 raise on a corrupt or cut archive
        raise RibError(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    if not tables.seen:
        kinds = ", ".join(MRT_TYPE_NAMES.get(k, str(k)) for k in sorted(tables.kinds)) or "none"
        raise RibError(
            f"{path}: no TABLE_DUMP or TABLE_DUMP_V2 records (its MRT record types: {kinds});"
            " expected a routing table dump"
        )
    return routes


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a table is read: as the routes pile up it walks them again
    and again (adding half the decoding's time, more in a process holding much else), and routes hold no cycles
    for it to find. It walks them once when it resumes; the reader's caches are gone by then."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Tables:
    """Reads table dump records in file order: a RIB record's peer indexes refer to the latest PEER_INDEX_TABLE
    (BIRD writes one before each table it dumps)."""

    def __init__(self) -> None:
        self.peers: list[int] | None = None  # the AS of each peer index
        self.seen = 0  # table dump records, read or skipped
        self.kinds: set[int] = set()  # the MRT types met (a few: to name them when none was a table dump)
        self.attributes = {4: _AttributeCache(4), 6: _AttributeCache(6)}
        self._mrtparse: ModuleType | None = None

    def read(self, kind: int, subtype: int, record: bytes) -> list[Route]:
        if len(self.kinds) < 16:
            self.kinds.add(kind)
        if kind == TABLE_DUMP_V2:
            self.seen += 1
            if subtype == PEER_INDEX_TABLE:
                self.peers = _peer_asns(record)
            elif subtype in RIB_SUBTYPES:
                if self.peers is None:
                    raise _Corrupt("a RIB record before any PEER_INDEX_TABLE")
                version, add_path = RIB_SUBTYPES[subtype]
                routes = _rib_v2(record, self.peers, add_path, self.attributes[version])
                return _rib_v2_mrtparse(self.mrtparse(), record, self.peers, version) if routes is None else routes
        elif kind == TABLE_DUMP and subtype in (1, 2):
            self.seen += 1
            route = _rib_v1(self.mrtparse(), record, 4 if subtype == 1 else 6)
            return [] if route is None else [route]
        return []

    def mrtparse(self) -> ModuleType:
        if self._mrtparse is None:
            self._mrtparse = require("mrtparse", "flows", "reading MRT table dumps")
        return self._mrtparse


def _open(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as probe:
        head = probe.read(3)
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    if head.startswith(b"BZh"):
        return bz2.open(path, "rb")
    return path.open("rb")


def _records(stream: io.BufferedIOBase) -> Iterator[tuple[int, int, int, bytes]]:
    """Each record as (byte offset, type, subtype, header and body). Framed here rather than by mrtparse's
    reader, which raises KeyError on an unknown type and leaves the stream mid-record; cut from a megabyte read
    at a time, not from two reads a record (a table has millions of records)."""
    buffer, at, offset = b"", 0, 0  # what was read, where the next record starts in it and in the file
    while True:
        if len(buffer) - at < MRT_HEADER.size:
            buffer, at = buffer[at:] + _read(stream, max(MRT_HEADER.size - (len(buffer) - at), READ_CHUNK_BYTES)), 0
            if not buffer:
                return
            if len(buffer) < MRT_HEADER.size:
                raise _Corrupt(f"cut short at byte {offset}, in a record's header ({len(buffer)} of 12 bytes)")
        _, kind, subtype, length = MRT_HEADER.unpack_from(buffer, at)
        size = MRT_HEADER.size + length
        if len(buffer) - at < size:
            buffer, at = buffer[at:] + _read(stream, max(size - (len(buffer) - at), READ_CHUNK_BYTES)), 0
            if len(buffer) < size:
                raise _Corrupt(
                    f"cut short in the record at byte {offset}: {len(buffer) - MRT_HEADER.size} of its {length} bytes"
                )
        yield offset, kind, subtype, buffer[at : at + size]
        at += size
        offset += size


def _read(stream: io.BufferedIOBase, size: int) -> bytes:
    # In chunks: a corrupt length field can say 4 GiB, and read(n) sets aside n bytes before it reads any.
    parts: list[bytes] = []
    while size > 0:
        part = stream.read(min(size, READ_CHUNK_BYTES))
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _peer_asns(record: bytes) -> list[int]:
    """The AS of each peer in a PEER_INDEX_TABLE (RFC 6396 4.3.1): collector BGP ID, view name, then per peer
    its type (bit 0: an IPv6 address, bit 1: a 4-byte AS), BGP ID, address and AS. 0 where the AS is unknown:
    0 itself (BIRD's own routes), or AS_TRANS (a 4-byte AS that a 2-byte field could not hold)."""
    end = len(record)
    position = MRT_HEADER.size + 4
    if position + 2 > end:
        raise _Corrupt("a PEER_INDEX_TABLE cut short before its view name")
    position += 2 + U16.unpack_from(record, position)[0]
    if position + 2 > end:
        raise _Corrupt("a PEER_INDEX_TABLE cut short before its peer count")
    (count,) = U16.unpack_from(record, position)
    position += 2
    asns = []
    for number in range(count):
        if position >= end:
            raise _Corrupt(f"a PEER_INDEX_TABLE of {count} peers cut short at peer {number}")
        peer_type = record[position]
        position += 1 + 4 + (16 if peer_type & 0x01 else 4)
        as_bytes = 4 if peer_type & 0x02 else 2
        if position + as_bytes > end:
            raise _Corrupt(f"a PEER_INDEX_TABLE of {count} peers cut short at peer {number}")
        asn = int.from_bytes(record[position : position + as_bytes], "big")
        asns.append(0 if asn == AS_TRANS else asn)
        position += as_bytes
    return asns


# Plain tuples below: a NamedTuple's constructor adds a tenth to the time of a table whose entries share few
# attributes. An AS path as Route holds it: as_path, as_set, as_set_size.
_Path = tuple[tuple[int, ...], bool, int]
# What a block of path attributes says: its AS path (None without an AS_PATH), MED, LOCAL_PREF, NEXT_HOP and the
# next hop of its MP_REACH_NLRI.
_Fields = tuple[_Path | None, int | None, int | None, str | None, str | None]
# What a route takes from a RIB entry's attributes: as_path, as_set, as_set_size, the first AS (the neighbour's by
# the path, for a peer of no AS; 0 when it has none), med, local_pref, next_hop.
_Attributes = tuple[tuple[int, ...], bool, int, int, int | None, int | None, str | None]


class _AttributeCache:
    """The path attributes of RIB entries of one IP version (which decides their next hop), each distinct block
    decoded once: a transit sends the prefixes of one path with the same attributes. Most blocks are ORIGIN, an
    AS_PATH of one AS_SEQUENCE, then what a transit sends with many paths (next hop, MED, communities): that tail
    is decoded once per distinct tail, so a block of a new path costs little more than reading its path."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.blocks: dict[bytes, _Attributes] = {}
        self.tails: dict[bytes, _Fields] = {}

    def decode(self, block: bytes) -> _Attributes | None:
        """What a route takes from ``block``; None where an MP_REACH_NLRI is written whole (see _read_attributes)."""
        path: _Path | None = None
        tail = block  # what follows the path
        fields: _Fields | None
        # ORIGIN (one byte, so a 4-byte attribute), then an AS_PATH of one AS_SEQUENCE (BIRD, FRR and Quagga write
        # them so), its length in one byte or two.
        if len(block) >= 9 and block[1] == 1 and block[2] == 1 and not block[0] & 0x10 and block[5] == 2:
            start, length = (8, block[6] << 8 | block[7]) if block[4] & 0x10 else (7, block[6])
            if (
                start + 2 <= len(block)
                and block[start] == AS_SEQUENCE
                and 2 + 4 * block[start + 1] == length
                and start + length <= len(block)
            ):
                path = AS4_SEGMENTS[block[start + 1]].unpack_from(block, start + 2), False, 0
                tail = block[start + length :]
        if path is None:
            fields = _read_attributes(block, 0, len(block), self.version)
        elif (fields := self.tails.get(tail)) is None:
            fields = _read_attributes(tail, 0, len(tail), self.version)
            if fields is not None:
                if len(self.tails) >= ATTRIBUTE_CACHE_ENTRIES:
                    self.tails.clear()
                self.tails[tail] = fields
        if fields is None:
            return None
        tail_path, med, local_pref, next_hop, mp_next_hop = fields
        as_path, as_set, set_size = tail_path or path or ((), False, 0)  # a later AS_PATH wins, as in _route
        hop = next_hop if self.version == 4 and next_hop else (mp_next_hop or next_hop)
        first_as = as_path[0] if len(as_path) > set_size else 0
        if len(self.blocks) >= ATTRIBUTE_CACHE_ENTRIES:
            self.blocks.clear()
        self.blocks[block] = attributes = as_path, as_set, set_size, first_as, med, local_pref, hop
        return attributes


# Route(...) sets each field through object.__setattr__, as a frozen dataclass's __init__ does: a third of the
# time of reading a table dump. Its reader sets the slots itself, in field order (a field added to Route stops
# this import; the tests hold what it makes equal to Route(...)).
(_set_prefix, _set_as_path, _set_as_set, _set_transit_asn, _set_med, _set_local_pref, _set_next_hop,
 _set_as_set_size) = (getattr(Route, field.name).__set__ for field in dataclasses.fields(Route))  # fmt: skip


def _new_route(
    prefix: str,
    as_path: tuple[int, ...],
    as_set: bool,
    transit_asn: int,
    med: int | None,
    local_pref: int | None,
    next_hop: str | None,
    as_set_size: int,
) -> Route:
    route: Route = object.__new__(Route)
    _set_prefix(route, prefix)
    _set_as_path(route, as_path)
    _set_as_set(route, as_set)
    _set_transit_asn(route, transit_asn)
    _set_med(route, med)
    _set_local_pref(route, local_pref)
    _set_next_hop(route, next_hop)
    _set_as_set_size(route, as_set_size)
    return route


def _rib_v2(record: bytes, peers: Sequence[int], add_path: bool, attributes: _AttributeCache) -> list[Route] | None:
    """The routes of a RIB_IPV4/IPV6_UNICAST(_ADDPATH) record (RFC 6396 4.3.2, RFC 8050), each length checked
    before what it covers is read; None where an entry's MP_REACH_NLRI is written whole (AFI, SAFI, next hop,
    NLRI, as some old dumpers did), once the whole record is checked: mrtparse reads that record, as it always has.
    ``attributes``: those of the record's IP version decoded so far."""
    end = len(record)
    start = MRT_HEADER.size + 4  # after the sequence number
    if start >= end:
        raise _Corrupt("a RIB record shorter than its fixed fields")
    bits = record[start]
    position = start + 1 + (bits + 7) // 8
    if position + 2 > end:
        raise _Corrupt("a RIB record cut short in its prefix")
    prefix = _prefix_text(record[start + 1 : position], bits, attributes.version)
    (count,) = U16.unpack_from(record, position)
    position += 2
    entry = RIB_ENTRY[add_path]
    header, unpack_entry, known, peer_count = entry.size, entry.unpack_from, attributes.blocks.get, len(peers)
    routes: list[Route] = []
    add = routes.append
    whole_mp_reach = False
    for _ in range(count):
        if position + header > end:
            raise _Corrupt("a RIB entry cut short")
        index, length = unpack_entry(record, position)
        position += header + length
        if position > end:
            raise _Corrupt(f"path attributes of {length} bytes where {end - position + length} are left")
        block = record[position - length : position]
        decoded = known(block) or attributes.decode(block)
        if decoded is None:
            whole_mp_reach = True
            continue
        if index >= peer_count:
            raise _Corrupt(f"peer index {index}, but the PEER_INDEX_TABLE has {peer_count} peers")
        as_path, as_set, set_size, first_as, med, local_pref, next_hop = decoded
        transit = peers[index] or first_as  # a peer of no AS: the neighbour by the path
        if transit:  # else the dumping router's own route: no transit sent it
            add(_new_route(prefix, as_path, as_set, transit, med, local_pref, next_hop, set_size))
    if position != end:
        raise _Corrupt(f"{end - position} bytes after the last RIB entry")
    return None if whole_mp_reach else routes


def _prefix_text(packed: bytes, bits: int, version: int) -> str:
    """A RIB record's prefix (its leading ``(bits + 7) // 8`` bytes) in the text ipaddress writes."""
    family, size = FAMILIES[version]
    if bits > size * 8:
        raise _Corrupt(f"a prefix of {bits} bits in an IPv{version} table")
    if bits & 7 and packed[-1] & (0xFF >> (bits & 7)):
        raise _Corrupt(f"a /{bits} prefix with host bits set")
    address = packed.ljust(size, b"\0")
    text = socket.inet_ntop(family, address)
    if version == 6 and "." in text:  # the C library writes ::ffff:192.0.2.0 where ipaddress has ::ffff:c000:200
        return str(ipaddress.IPv6Network((address, bits)))
    return f"{text}/{bits}"


def _rib_v2_mrtparse(mrtparse: ModuleType, record: bytes, peers: Sequence[int], version: int) -> list[Route]:
    """A RIB record that _rib_v2 has checked, read by mrtparse."""
    data = _decode(mrtparse, record)
    prefix = _prefix(data["prefix"], data["length"])
    routes = []
    for entry in data["rib_entries"]:
        index = entry["peer_index"]
        if index >= len(peers):
            raise _Corrupt(f"peer index {index}, but the PEER_INDEX_TABLE has {len(peers)} peers")
        route = _route(prefix, entry["path_attributes"], peers[index], version, as4_path=False)
        if route is not None:
            routes.append(route)
    return routes


def _decode(mrtparse: ModuleType, record: bytes) -> dict[str, Any]:
    try:
        entry = next(mrtparse.Reader(io.BytesIO(record)))
    except Exception as error:  # mrtparse meets corrupt data with whatever Python raises first
        raise _Corrupt(f"{type(error).__name__}: {error}") from None
    if entry.err:
        raise _Corrupt(str(entry.err_msg))
    return dict(entry.data)


def _rib_v1(mrtparse: ModuleType, record: bytes, version: int) -> Route | None:
    address = 4 if version == 4 else 16
    body = memoryview(record)[MRT_HEADER.size :]
    start = 4 + address + 1 + 1 + 4 + address + 2  # view, sequence, prefix, length, status, time, peer IP, peer AS
    if len(body) < start + 2:
        raise _Corrupt("a TABLE_DUMP record shorter than its fixed fields")
    (length,) = U16.unpack_from(body, start)
    if start + 2 + length != len(body):
        raise _Corrupt(f"path attributes of {length} bytes in a record with {len(body) - start - 2} left")
    first = MRT_HEADER.size + start + 2
    _read_attributes(record, first, first + length, version, as_bytes=2)
    data = _decode(mrtparse, record)
    # TABLE_DUMP paths hold 2-byte ASes; AS4_PATH carries the 4-byte ones they stand in for.
    return _route(_prefix(data["prefix"], data["length"]), data["path_attributes"], _asn(data["peer_as"]), version)


# Attribute types whose length mrtparse assumes, to the lengths that are sound.
FIXED_LENGTHS = {1: {1}, 4: {4}, 5: {4}, 6: {0}, 7: {6, 8}, 9: {4}, 18: {8}}
# The next hop lengths mrtparse reads right in a table of each IP version: by AFI, 0 for the table's own.
NEXT_HOP_SIZES = {4: {0: {4}, 1: {4}}, 6: {0: {16, 32}, 2: {16, 32}}}
LENGTH_MULTIPLES = {8: 4, 10: 4, 16: 8, 32: 12}  # communities, cluster list, extended and large communities


def _read_attributes(
    data: bytes, start: int, end: int, version: int, as_bytes: int = 4, depth: int = 0
) -> _Fields | None:
    """What the path attributes in ``data[start:end]`` say, as _route reads mrtparse's decoding of them (of a
    type given twice, the last), in a table of IP ``version``; None where an MP_REACH_NLRI is written whole (AFI,
    SAFI, next hop, NLRI), which mrtparse reads in ways of its own. What mrtparse would misread is refused here,
    for the records it still reads: it reads past a wrong length into the next field rather than stop, and loops
    forever on an AIGP attribute whose TLV length is under 3."""
    path: _Path | None = None
    med = local_pref = next_hop = mp_next_hop = None
    whole_mp_reach = False
    position = start
    while position < end:
        if position + 3 > end:
            raise _Corrupt("a path attribute cut short in its header")
        kind = data[position + 1]
        if data[position] & 0x10:  # extended length
            if position + 4 > end:
                raise _Corrupt("a path attribute cut short in its header")
            length = data[position + 2] << 8 | data[position + 3]
            position += 4
        else:
            length = data[position + 2]
            position += 3
        stop = position + length
        if stop > end:
            raise _Corrupt(f"path attribute {kind} of {length} bytes where {end - position} are left")
        if kind == 2:
            path = _as_path(data, position, stop, as_bytes)
        elif kind == 3:  # mrtparse reads an address of 4 or 16 bytes, and no next hop from other lengths
            if length == 4:
                next_hop = socket.inet_ntop(socket.AF_INET, data[position:stop])
            else:
                next_hop = socket.inet_ntop(socket.AF_INET6, data[position:stop]) if length == 16 else None
        elif kind in FIXED_LENGTHS:
            if length not in FIXED_LENGTHS[kind]:
                raise _Corrupt(f"path attribute {kind} of {length} bytes")
            if kind == 4:
                (med,) = U32.unpack_from(data, position)
            elif kind == 5:
                (local_pref,) = U32.unpack_from(data, position)
        elif kind == 14:
            value = data[position:stop]
            if not _sound_mp_reach(value, NEXT_HOP_SIZES[version]):
                raise _Corrupt("a malformed MP_REACH_NLRI attribute")
            if length == 1 + value[0]:  # RFC 6396's: the next hop alone (two of 16 bytes: the global one first)
                family, size = FAMILIES[version]
                mp_next_hop = socket.inet_ntop(family, value[1 : 1 + size])
            else:
                whole_mp_reach = True
        elif kind in LENGTH_MULTIPLES:
            if length % LENGTH_MULTIPLES[kind]:
                raise _Corrupt(f"path attribute {kind} of {length} bytes")
        elif kind == 17:  # AS4_PATH: merged into the 2-byte AS_PATH of TABLE_DUMP (by _route), unused in V2
            _as_path(data, position, stop, 4)
        elif kind == 26:  # AIGP: TLVs of at least their own 3-byte header
            tlv = position
            while tlv < stop:
                size = U16.unpack_from(data, tlv + 1)[0] if tlv + 3 <= stop else 0
                if size < 3 or tlv + size > stop:
                    raise _Corrupt("a malformed AIGP attribute")
                tlv += size
        elif kind == 128:  # ATTR_SET: an origin AS, then attributes of its own
            if length < 4 or depth > 4:
                raise _Corrupt("a malformed ATTR_SET attribute")
            _read_attributes(data, position + 4, stop, version, as_bytes, depth + 1)
        position = stop
    return None if whole_mp_reach else (path, med, local_pref, next_hop, mp_next_hop)


def _as_path(data: bytes, start: int, stop: int, as_bytes: int) -> _Path:
    """An AS_PATH value of ``as_bytes``-byte ASes, as Route holds it."""
    segments = AS4_SEGMENTS if as_bytes == 4 else AS2_SEGMENTS
    if start + 2 <= stop and data[start] == AS_SEQUENCE and 2 + data[start + 1] * as_bytes == stop - start:
        return segments[data[start + 1]].unpack_from(data, start + 2), False, 0  # one AS_SEQUENCE: most paths
    parsed = []
    position = start
    while position < stop:
        if position + 2 > stop or data[position] not in (AS_SET, AS_SEQUENCE, AS_CONFED_SEQUENCE, AS_CONFED_SET):
            raise _Corrupt("a malformed AS_PATH segment")
        kind, count = data[position], data[position + 1]
        if position + 2 + count * as_bytes > stop:
            raise _Corrupt("an AS_PATH whose segments overrun it")
        parsed.append((kind, segments[count].unpack_from(data, position + 2)))
        position += 2 + count * as_bytes
    return _path(parsed)


def _sound_mp_reach(value: bytes, next_hop_sizes: Mapping[int, set[int]]) -> bool:
    """A table dump's MP_REACH_NLRI holds only the next hop's length and address (RFC 6396 4.3.4); some dumpers
    wrote the whole attribute (AFI, SAFI, next hop, reserved, NLRI). mrtparse reads an address as long as the
    table's family has, whatever the length byte says, so only lengths that agree with it are sound."""
    if len(value) >= 1 and len(value) == 1 + value[0]:
        return value[0] in next_hop_sizes[0]
    if len(value) < 5:
        return False
    afi, size = value[0] << 8 | value[1], value[3]
    return afi in next_hop_sizes and size in next_hop_sizes[afi] and 5 + size <= len(value)


def _prefix(address: object, length: object) -> str:
    try:
        return str(ipaddress.ip_network(f"{address}/{length}"))
    except ValueError as error:
        raise _Corrupt(str(error)) from None


def _asn(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise _Corrupt(f"AS {value!r} is not a number") from None


def _route(
    prefix: str, attributes: Iterable[Mapping[str, Any]], peer_asn: int, version: int, *, as4_path: bool = True
) -> Route | None:
    segments: list[tuple[int, list[int]]] = []
    segments4: list[tuple[int, list[int]]] | None = None
    med = local_pref = None
    next_hop: str | None = None
    mp_next_hop: str | None = None
    for attribute in attributes:
        kind: int = next(iter(attribute["type"]))
        value: Any = attribute.get("value")
        if kind in (2, 17):
            parsed = [(next(iter(s["type"])), [_asn(a) for a in s["value"]]) for s in value]
            if kind == 2:
                segments = parsed
            else:
                segments4 = parsed
        elif kind == 3:
            next_hop = value
        elif kind == 4:
            med = value
        elif kind == 5:
            local_pref = value
        elif kind == 14 and value.get("next_hop"):
            mp_next_hop = value["next_hop"][0]
    if as4_path and segments4 is not None:
        segments = _merge_as4(segments, segments4)
    as_path, as_set, set_size = _path(segments)
    transit = peer_asn if peer_asn not in (0, AS_TRANS) else _first_as(as_path, set_size)
    if not transit:
        return None  # the dumping router's own route: no transit sent it
    hop = next_hop if version == 4 and next_hop else (mp_next_hop or next_hop)
    return Route(prefix, as_path, as_set, transit, med, local_pref, hop, set_size)


def _path(segments: Iterable[tuple[int, Sequence[int]]]) -> tuple[tuple[int, ...], bool, int]:
    """(as_path, as_set, as_set_size) from AS_PATH segments. Confederation segments are left out: they name the
    member ASes of the neighbour's confederation, which count for nothing outside it (RFC 5065 5.3)."""
    sequence: list[int] = []
    members: set[int] = set()
    has_set = False
    for kind, asns in segments:
        if kind == AS_SEQUENCE:
            sequence.extend(asns)
        elif kind == AS_SET:
            has_set = True
            members.update(asns)
    in_set = sorted(members)
    return (*sequence, *in_set), has_set, len(in_set)


def _first_as(as_path: tuple[int, ...], set_size: int) -> int:
    """The neighbour's AS: the first of the path's AS_SEQUENCE part; 0 when it has none."""
    return as_path[0] if len(as_path) > set_size else 0


def _merge_as4(path: list[tuple[int, list[int]]], path4: list[tuple[int, list[int]]]) -> list[tuple[int, list[int]]]:
    """The 4-byte path from a 2-byte AS_PATH and its AS4_PATH (RFC 6793 4.2.3): the AS4_PATH is ignored when it
    is the longer; otherwise the AS_PATH's leading ASes that a 2-byte speaker added go before it."""

    def count(segments: list[tuple[int, list[int]]]) -> int:
        return sum(len(a) if k == AS_SEQUENCE else 1 if k == AS_SET else 0 for k, a in segments)

    excess = count(path) - count(path4)
    if excess < 0:
        return path
    kept: list[tuple[int, list[int]]] = []
    for kind, asns in path:
        if excess <= 0:
            break
        if kind == AS_SEQUENCE:
            kept.append((kind, asns[:excess]))
            excess -= len(kept[-1][1])
        elif kind == AS_SET:
            kept.append((kind, asns))
            excess -= 1
    return kept + path4


# -- birdc text ------------------------------------------------------------------------------------
# "203.0.113.0/24       unicast [transit_a 12:00:00.000 from 192.0.2.1] * (100/10) [AS64511i]"; a route to the
# same prefix starts with spaces instead. BIRD 1 put "via GATEWAY on IFACE" where BIRD 2 puts the route type.
ROUTE_LINE = re.compile(
    r"(?P<prefix>\S+)?\s+[^\[\s][^\[]*\[(?P<protocol>[^\s\]]+)[^\]]*\](?:\s+[*!])?\s+\(\d+[^)]*\)(?:\s+\[[^\]]*\])?\s*"
)
ATTRIBUTE_LINE = re.compile(r"\s+(?P<name>BGP\.\w+):\s*(?P<value>.*)")
SKIPPED_LINES = re.compile(r"BIRD \S+ ready\.|Table \S+:|Network not found|\s*")


@dataclass
class _BirdRoute:
    prefix: str
    protocol: str
    line: int
    attributes: dict[str, tuple[str, int]]  # name -> (value, line number)


def read_birdc(text: str, *, source: str, protocol_asns: Mapping[str, int] | None = None) -> list[Route]:
    """The BGP routes in what `birdc show route all` printed (BIRD 2; BIRD 1's layout is read too). Each route's
    transit is its protocol's neighbour AS where ``protocol_asns`` names it, else the first AS of its path;
    routes that are not BGP (static, direct) and BGP routes with an empty path (our own, over iBGP) are left out.
    A line that is none of BIRD's raises RibError "source:line: …"."""
    found: list[_BirdRoute] = []
    prefix: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("\t"):
            attribute = ATTRIBUTE_LINE.fullmatch(line)
            if not found:
                raise RibError(f"{source}:{number}: an attribute line before any route: {_show(line)}")
            if attribute:
                found[-1].attributes[attribute["name"]] = (attribute["value"].strip(), number)
            continue  # "via …", "Type: …", wrapped community lists: nothing we read
        route = ROUTE_LINE.fullmatch(line)
        if route is None:
            if SKIPPED_LINES.fullmatch(line):
                continue
            raise RibError(f"{source}:{number}: not a line of `birdc show route all`: {_show(line)}")
        if route["prefix"]:
            try:
                prefix = str(ipaddress.ip_network(route["prefix"]))
            except ValueError:
                raise RibError(f"{source}:{number}: {route['prefix']!r} is not an IP prefix") from None
        elif prefix is None:
            raise RibError(f"{source}:{number}: a further route before any prefix: {_show(line)}")
        found.append(_BirdRoute(prefix, route["protocol"], number, {}))
    routes = [_bird_route(bird, source, protocol_asns or {}) for bird in found]
    return [route for route in routes if route is not None]


def _bird_route(bird: _BirdRoute, source: str, protocol_asns: Mapping[str, int]) -> Route | None:
    if "BGP.as_path" not in bird.attributes:
        return None
    text, number = bird.attributes["BGP.as_path"]
    as_path, as_set, set_size = _path(_bird_segments(text, f"{source}:{number}"))
    transit = protocol_asns.get(bird.protocol) or _first_as(as_path, set_size)
    if not transit:
        return None
    med = _bird_number(bird, "BGP.med", source)
    local_pref = _bird_number(bird, "BGP.local_pref", source)
    next_hop = None
    if "BGP.next_hop" in bird.attributes:
        text, number = bird.attributes["BGP.next_hop"]
        try:
            # "2001:db8::1 fe80::1": a global and a link-local address; the global one is the next hop
            next_hop = str(ipaddress.ip_address(text.split()[0])) if text.split() else None
        except ValueError:
            raise RibError(f"{source}:{number}: BGP.next_hop: {text!r} is not an address") from None
    return Route(bird.prefix, as_path, as_set, transit, med, local_pref, next_hop, set_size)


def _bird_segments(text: str, where: str) -> list[tuple[int, list[int]]]:
    """BIRD's path text: "64497 64511", "64497 {64509 64510}" (an AS_SET), "(64512 64513)" and "({…})" (the
    confederation segments), padded with spaces inside the braces by older versions."""
    segments: list[tuple[int, list[int]]] = []
    opened: list[str] = []  # "(" and "{" not closed yet
    for token in re.sub(r"([{}()])", r" \1 ", text).split():
        if token == "{" and opened in ([], ["("]):
            segments.append((AS_CONFED_SET if opened else AS_SET, []))
            opened.append(token)
        elif token == "(" and not opened:
            segments.append((AS_CONFED_SEQUENCE, []))
            opened.append(token)
        elif token in ("}", ")") and opened and opened[-1] == {"}": "{", ")": "("}[token]:
            opened.pop()
            if opened:  # back in the confederation sequence the set was in
                segments.append((AS_CONFED_SEQUENCE, []))
        elif token.isdigit() and int(token) <= ASN_MAX:
            if not opened and (not segments or segments[-1][0] != AS_SEQUENCE):
                segments.append((AS_SEQUENCE, []))
            segments[-1][1].append(int(token))
        elif token in ("{", "(", "}", ")"):
            raise RibError(f"{where}: BGP.as_path: unbalanced {token!r} in {text!r}")
        elif token.strip(".") == "":
            raise RibError(f"{where}: BGP.as_path: BIRD cut the path short ({text!r}); its origin is unknown")
        else:
            raise RibError(f"{where}: BGP.as_path: {token!r} is not an AS number")
    if opened:
        raise RibError(f"{where}: BGP.as_path: unbalanced {opened[-1]!r} in {text!r}")
    return segments


def _bird_number(bird: _BirdRoute, name: str, source: str) -> int | None:
    if name not in bird.attributes:
        return None
    text, number = bird.attributes[name]
    if not text.isdigit() or int(text) > ASN_MAX:
        raise RibError(f"{source}:{number}: {name}: {text!r} is not a number from 0 to {ASN_MAX}")
    return int(text)


def _show(line: str) -> str:
    return repr(line if len(line) <= 80 else line[:77] + "...")


# -- the speaker's received routes -----------------------------------------------------------------
Asn = Annotated[int, Field(ge=0, le=ASN_MAX)]


class _SpeakerRoute(pydantic.BaseModel):
    """One route of the speaker's rib-in file (`bgp run --rib-file`), as ``bgp.Route.to_json`` writes it."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    prefix: str
    # The speaker writes peer_asn; transit_asn is taken too, for the same routes passed on under our own name.
    transit_asn: Asn = Field(validation_alias=AliasChoices("transit_asn", "peer_asn"))
    as_path: list[Asn] = Field(default_factory=list)
    med: Asn | None = None
    local_pref: Asn | None = None
    next_hop: str | None = None

    @pydantic.field_validator("prefix")
    @classmethod
    def _network(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_network(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a prefix") from None

    @pydantic.field_validator("next_hop")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if not value:
            return None  # the speaker writes "" for a route without one
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an address") from None


class _SpeakerRib(pydantic.BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    routes: list[_SpeakerRoute]


def routes_from_speaker(body: object, *, source: str = "the speaker's routes") -> list[Route]:
    """The routes in the speaker's rib-in file (``{"pop", "written_at", "routes": [...]}``, each route as
    ``edgeplane.bgp.Route.to_json`` writes it, or a bare list of them). The speaker flattens AS_SETs into the
    path (ExaBGP hands it segments; it keeps only their ASes), so ``as_set`` is always false here. A route the
    speaker got with no neighbour AS falls back to its path's first AS; with neither it is refused."""
    if not isinstance(body, dict | list):
        raise RibError(f'{source}: expected {{"routes": [...]}} or a list of routes, not {type(body).__name__}')
    try:
        rib = _SpeakerRib.model_validate({"routes": body} if isinstance(body, list) else body)
    except pydantic.ValidationError as error:
        problem = error.errors(include_url=False, include_input=False)[0]
        raise RibError(f"{source}: {field_name(problem['loc'])}: {problem_message(problem)}") from None
    routes = []
    for index, entry in enumerate(rib.routes):
        transit = entry.transit_asn or (entry.as_path[0] if entry.as_path else 0)
        if not transit:
            raise RibError(f"{source}: routes[{index}]: no neighbour AS and an empty path; which transit sent it?")
        routes.append(
            Route(entry.prefix, tuple(entry.as_path), False, transit, entry.med, entry.local_pref, entry.next_hop)
        )
    return routes


# -- longest-prefix match as disjoint ranges --------------------------------------------------------
IPV4_MAPPED = 0xFFFF << 32  # ::ffff:0:0/96, where IPv4 lives in the one 128-bit space


def address_key(address: str) -> int:
    """An address as a point of the space disjoint_ranges works in: IPv6 as is, IPv4 as ::ffff:a.b.c.d."""
    parsed = ipaddress.ip_address(address)
    return int(parsed) | IPV4_MAPPED if parsed.version == 4 else int(parsed)


def prefix_span(prefix: str) -> tuple[int, int]:
    """The first and last address of a prefix in that same space (host bits set are masked; ValueError on a
    prefix that is not one)."""
    network = ipaddress.ip_network(prefix, strict=False)
    lo, bits = int(network.network_address), network.prefixlen
    if network.version == 4:
        lo, bits = lo | IPV4_MAPPED, bits + 96
    return lo, lo | ((1 << (128 - bits)) - 1)


def disjoint_ranges(prefixes: Sequence[str]) -> list[tuple[int, int, int]]:
    """Sorted, non-overlapping inclusive (lo, hi, index) ranges of one 128-bit space (IPv6 as is, IPv4
    a.b.c.d/n as ::ffff:a.b.c.d/(96+n)), such that an address in [lo, hi] has ``prefixes[index]`` as its longest
    matching prefix; addresses no prefix covers are in no range. A prefix given twice keeps its first index.
    O(n log n): a sort, then one sweep with a stack of the prefixes open at the cursor. ValueError on a prefix
    that is not one (host bits set are masked, as a router would)."""
    spans: dict[tuple[int, int], int] = {}
    for index, text in enumerate(prefixes):
        spans.setdefault(prefix_span(text), index)
    # Prefixes nest or are disjoint: sorted by start and widest first, each one's parent is on the stack.
    ordered = sorted(spans.items(), key=lambda item: (item[0][0], -item[0][1]))
    out: list[tuple[int, int, int]] = []
    stack: list[tuple[int, int]] = []  # (hi, index) of the prefixes covering the cursor, innermost last
    cursor = 0  # the first address not yet given to a range
    for (lo, hi), index in ordered:
        while stack and stack[-1][0] < lo:
            top_hi, top_index = stack.pop()
            if cursor <= top_hi:
                out.append((cursor, top_hi, top_index))
                cursor = top_hi + 1
        if stack and cursor < lo:
            out.append((cursor, lo - 1, stack[-1][1]))
        cursor = lo
        stack.append((hi, index))
    while stack:
        top_hi, top_index = stack.pop()
        if cursor <= top_hi:
            out.append((cursor, top_hi, top_index))
            cursor = top_hi + 1
    return out
