"""Routes our transits send us: MRT dumps written byte by byte, birdc text, the speaker's rib-in file, a real BIRD,
and the disjoint ranges of longest-prefix match checked against py-radix."""

from __future__ import annotations

import bisect
import bz2
import gc
import gzip
import ipaddress
import itertools
import struct
import time
from collections.abc import Callable
from pathlib import Path

import mrtparse
import pytest
import radix
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgeplane.bgp import Route as SpeakerRoute
from edgeplane.peering import _rib
from edgeplane.peering._rib import (
    RibError,
    Route,
    _route,
    address_key,
    disjoint_ranges,
    read_birdc,
    read_mrt,
    read_rib,
    routes_from_speaker,
)
from tests._time import wait_for
from tests.bgp._bird import Bird
from tests.conftest import free_port
from tests.peering._mrt import (
    AS_SEQUENCE,
    AS_SET,
    BGP4MP,
    as_path_value,
    attribute,
    path_attributes,
    peer_index_table,
    record,
    rib_record,
    table_dump,
    table_dump_v1,
    write_mrt,
)

ROUTES = [
    ("203.0.113.0/24", 64497, [64497, 64511], 10),
    ("203.0.113.0/24", 64498, [64498, 64500, 64511], None),
    ("198.51.100.0/25", 64498, [64498, 64499], 0),
    ("2001:db8:100::/48", 64497, [64497, 64501, 65551], None),
    ("2001:db8:100::/48", 64498, [64498, 65551], 20),
    ("192.0.2.0/24", 64497, [64497, *range(65536, 65536 + 300)], 7),  # 300 ASes: two segments on the wire
]
EXPECTED = [
    Route("203.0.113.0/24", (64497, 64511), False, 64497, 10, None, "192.0.2.1"),
    Route("203.0.113.0/24", (64498, 64500, 64511), False, 64498, None, None, "192.0.2.2"),
    Route("198.51.100.0/25", (64498, 64499), False, 64498, 0, None, "192.0.2.2"),
    Route("2001:db8:100::/48", (64497, 64501, 65551), False, 64497, None, None, "2001:db8::1"),
    Route("2001:db8:100::/48", (64498, 65551), False, 64498, 20, None, "2001:db8::2"),
    Route("192.0.2.0/24", (64497, *range(65536, 65536 + 300)), False, 64497, 7, None, "192.0.2.1"),
]


# -- MRT ------------------------------------------------------------------------------------------
def test_a_table_dump_v2_reads_back_as_written(tmp_path: Path) -> None:
    path = write_mrt(tmp_path / "rib.mrt", ROUTES)
    assert read_mrt(path) == EXPECTED
    assert read_rib(path) == EXPECTED
    assert [r.path_length() for r in EXPECTED] == [2, 3, 2, 3, 2, 301]


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress], ids=["gzip", "bzip2"])
def test_compressed_dumps_as_route_collectors_ship_them(tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "rib.mrt.z"
    path.write_bytes(compress(table_dump(ROUTES)))
    assert read_rib(path) == EXPECTED


def test_an_as_set_counts_as_one_and_its_members_come_last_sorted(tmp_path: Path) -> None:
    attributes = path_attributes([(AS_SEQUENCE, [64497, 64500]), (AS_SET, [64503, 64501, 64502])], next_hop="192.0.2.1")
    path = tmp_path / "rib.mrt"
    path.write_bytes(peer_index_table([(64497, "192.0.2.1")]) + rib_record("203.0.113.0/24", [(0, attributes)]))
    (route,) = read_mrt(path)
    assert route == Route(
        "203.0.113.0/24", (64497, 64500, 64501, 64502, 64503), True, 64497, None, None, "192.0.2.1", 3
    )
    assert route.path_length() == 3


def test_local_pref_and_confederation_segments(tmp_path: Path) -> None:
    # Confederation segments name ASes inside the neighbour's confederation: not part of the path (RFC 5065).
    attributes = path_attributes([(3, [65000, 65001]), (AS_SEQUENCE, [64497, 64511])], next_hop="192.0.2.1")
    attributes += attribute(0x40, 5, struct.pack("!I", 120))
    path = tmp_path / "rib.mrt"
    path.write_bytes(peer_index_table([(64497, "192.0.2.1")]) + rib_record("203.0.113.0/24", [(0, attributes)]))
    assert read_mrt(path) == [Route("203.0.113.0/24", (64497, 64511), False, 64497, None, 120, "192.0.2.1")]


def test_add_path_records_keep_every_path(tmp_path: Path) -> None:
    entries = [
        (0, path_attributes([(AS_SEQUENCE, [64497, 64511])], next_hop="2001:db8::1", med=1)),
        (0, path_attributes([(AS_SEQUENCE, [64497, 64500, 64511])], next_hop="2001:db8::2", med=2)),
    ]
    path = tmp_path / "rib.mrt"
    path.write_bytes(peer_index_table([(64497, "192.0.2.1")]) + rib_record("2001:db8::/32", entries, path_ids=[1, 2]))
    assert read_mrt(path) == [
        Route("2001:db8::/32", (64497, 64511), False, 64497, 1, None, "2001:db8::1"),
        Route("2001:db8::/32", (64497, 64500, 64511), False, 64497, 2, None, "2001:db8::2"),
    ]


def test_peer_indexes_refer_to_the_latest_peer_index_table(tmp_path: Path) -> None:
    # BIRD writes a PEER_INDEX_TABLE before each table it dumps, and numbers the peers afresh in each.
    attributes = path_attributes([(AS_SEQUENCE, [64498, 64511])], next_hop="192.0.2.2")
    six = path_attributes([(AS_SEQUENCE, [64497, 64511])], next_hop="2001:db8::1")
    path = tmp_path / "rib.mrt"
    path.write_bytes(
        peer_index_table([(64497, "192.0.2.1"), (64498, "192.0.2.2")])
        + rib_record("203.0.113.0/24", [(1, attributes)])
        + peer_index_table([(64497, "192.0.2.1")])
        + rib_record("2001:db8::/32", [(0, six)])
    )
    assert [(r.prefix, r.transit_asn) for r in read_mrt(path)] == [("203.0.113.0/24", 64498), ("2001:db8::/32", 64497)]


def test_a_peer_of_no_as_falls_back_to_the_path_and_our_own_routes_are_left_out(tmp_path: Path) -> None:
    # BIRD's peer 0 is itself (AS 0): its own routes have an empty path and came from no transit.
    path = tmp_path / "rib.mrt"
    path.write_bytes(
        peer_index_table([(0, "0.0.0.0"), (64497, "192.0.2.1")])
        + rib_record("198.51.100.0/24", [(0, path_attributes([], next_hop="192.0.2.254"))])
        + rib_record("203.0.113.0/24", [(0, path_attributes([(AS_SEQUENCE, [64499, 64511])], next_hop="192.0.2.9"))])
    )
    assert read_mrt(path) == [Route("203.0.113.0/24", (64499, 64511), False, 64499, None, None, "192.0.2.9")]


def test_table_dump_v1_with_as4_path_merged(tmp_path: Path) -> None:
    # A 2-byte speaker's path: AS_TRANS stands in for 65540, which AS4_PATH carries (RFC 6793 4.2.3).
    attributes = path_attributes(
        [(AS_SEQUENCE, [64497, 23456, 64511])],
        next_hop="192.0.2.1",
        med=3,
        as_bytes=2,
        as4_segments=[(AS_SEQUENCE, [65540, 64511])],
    )
    plain = path_attributes([(AS_SEQUENCE, [64498, 64511])], next_hop="192.0.2.2", as_bytes=2)
    path = tmp_path / "rib.mrt"
    path.write_bytes(
        table_dump_v1("203.0.113.0/24", "192.0.2.1", 64497, attributes)
        + table_dump_v1("2001:db8::/32", "192.0.2.2", 64498, plain, sequence=1)
    )
    assert read_mrt(path) == [
        Route("203.0.113.0/24", (64497, 65540, 64511), False, 64497, 3, None, "192.0.2.1"),
        Route("2001:db8::/32", (64498, 64511), False, 64498, None, None, "192.0.2.2"),
    ]


def test_other_records_are_skipped_but_a_file_of_no_table_is_refused(tmp_path: Path) -> None:
    update = record(BGP4MP, 4, b"\x00" * 40)  # a BGP4MP_MESSAGE_AS4: an update stream, not a table
    unknown = record(99, 1, b"anything")  # a type mrtparse has no name for (it raises KeyError on it)
    path = tmp_path / "mixed.mrt"
    path.write_bytes(update + unknown + table_dump(ROUTES[:1]) + update)
    assert read_mrt(path) == EXPECTED[:1]
    path.write_bytes(update + unknown)
    with pytest.raises(RibError, match=r"mixed\.mrt: no TABLE_DUMP or TABLE_DUMP_V2 records"):
        read_mrt(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (rib_record("203.0.113.0/24", [(0, b"")]), r"record 1 \(byte 0\): a RIB record before any PEER_INDEX_TABLE"),
        (
            peer_index_table([(64497, "192.0.2.1")]) + rib_record("203.0.113.0/24", [(3, b"")]),
            r"record 2 \(byte 39\): peer index 3, but the PEER_INDEX_TABLE has 1 peers",
        ),
        (table_dump(ROUTES)[:-5], r"cut short in the record at byte \d+: \d+ of its \d+ bytes"),
        (table_dump(ROUTES) + b"\x00" * 5, r"cut short at byte \d+, in a record's header \(5 of 12 bytes\)"),
        (
            peer_index_table([(64497, "192.0.2.1")])
            + rib_record("203.0.113.0/24", [(0, attribute(0x80, 26, b"\x01\x00\x00\x00"))]),
            "a malformed AIGP attribute",  # mrtparse would loop forever on it
        ),
        (
            peer_index_table([(64497, "192.0.2.1")]) + rib_record("203.0.113.0/24", [(0, attribute(0x40, 1, b"\0\0"))]),
            "path attribute 1 of 2 bytes",
        ),
    ],
    ids=["rib-first", "peer-index", "cut-body", "cut-header", "aigp-loop", "origin-length"],
)
def test_corrupt_dumps_are_refused_with_where(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.mrt"
    path.write_bytes(data)
    with pytest.raises(RibError, match=message) as caught:
        read_mrt(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_dump_cut_anywhere_is_refused_or_reads_its_whole_records(tmp_path: Path) -> None:
    data = table_dump(ROUTES)
    path = tmp_path / "cut.mrt"
    for end in range(len(data)):
        path.write_bytes(data[:end])
        try:
            routes = read_mrt(path)
        except RibError:
            continue
        assert routes == EXPECTED[: len(routes)]


def test_a_corrupt_archive_is_a_rib_error(tmp_path: Path) -> None:
    path = tmp_path / "rib.mrt.gz"
    path.write_bytes(gzip.compress(table_dump(ROUTES))[:-30])
    with pytest.raises(RibError, match=r"rib\.mrt\.gz: cannot read"):
        read_rib(path)


# What the decoder has branches for: AS_SET and confederation segments, a path long enough for an extended length,
# communities, AIGP, AS4_PATH, peers of no AS, IPv6 with add-path and an MP_REACH_NLRI next hop, written whole too.
RICH_DUMP = (
    peer_index_table([(64497, "192.0.2.1"), (0, "0.0.0.0"), (23456, "2001:db8::3")])
    + rib_record(
        "203.0.113.0/24",
        [
            (0, path_attributes([(AS_SEQUENCE, [64497, 64500]), (AS_SET, [64502, 64501])], next_hop="192.0.2.1",
                                med=5, local_pref=100, extra=attribute(0xC0, 8, bytes(8)))),
            (1, path_attributes([(AS_SEQUENCE, [64499] * 70)], next_hop="192.0.2.9",
                                extra=attribute(0x80, 26, b"\x01\x00\x0b" + bytes(8)))),
        ],
    )
    + rib_record(
        "2001:db8::/32",
        [
            (2, path_attributes([(3, [65000]), (AS_SEQUENCE, [64498, 64511])], next_hop="2001:db8::2",
                                as4_segments=[(AS_SEQUENCE, [64498])])),
            (0, path_attributes([(AS_SEQUENCE, [64497])], next_hop="2001:db8::1")),
        ],
        sequence=1,
        path_ids=[7, 8],
    )
    + rib_record(
        "2001:db8:100::/48",
        [(0, path_attributes([(AS_SEQUENCE, [64497])], extra=attribute(0x80, 14, struct.pack("!HBB", 2, 1, 16)
                                                                       + bytes(16) + b"\x00")))],
        sequence=2,
    )
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["set", "insert", "delete"]), st.integers(0, 10_000), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    ),
    cut=st.one_of(st.none(), st.integers(0, 10_000)),
)
@pytest.mark.parametrize("dump", [table_dump(ROUTES[:5]), RICH_DUMP], ids=["plain", "rich"])
def test_mutated_dumps_raise_rib_error_and_nothing_else(
    tmp_path: Path, dump: bytes, edits: list[tuple[str, int, int]], cut: int | None
) -> None:
    data = bytearray(dump)
    for action, position, value in edits:
        position %= len(data) + 1
        if action == "insert":
            data.insert(position, value)
        elif data and position < len(data):
            if action == "set":
                data[position] = value
            else:
                del data[position]
    if cut is not None:
        del data[cut:]
    path = tmp_path / "fuzz.mrt"
    path.write_bytes(bytes(data))
    for reader in (read_mrt, read_rib):
        try:
            routes = reader(path)
        except RibError:
            continue
        assert all(isinstance(r, Route) for r in routes)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes_raise_rib_error_and_nothing_else(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "noise"
    path.write_bytes(data)
    try:
        read_rib(path)
    except RibError:
        pass


def test_an_unreadable_file_is_a_rib_error(tmp_path: Path) -> None:
    with pytest.raises(RibError, match="cannot read"):
        read_rib(tmp_path / "absent.mrt")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(RibError, match="the file is empty"):
        read_rib(tmp_path / "empty")


def test_a_dump_without_routes_or_of_another_mrt_type_says_so(tmp_path: Path) -> None:
    """A birdc dump of an empty table (a session down, the wrong table) would make every report empty: refused.
    A binary file whose first MRT record is not a table dump is named by its type, not called unknown."""
    (tmp_path / "bird.txt").write_text("BIRD 2.0.12 ready.\nTable master4:\n")
    with pytest.raises(RibError, match=r"bird\.txt: no routes in it"):
        read_rib(tmp_path / "bird.txt")
    record = struct.pack("!IHHI", 1_700_000_000, 99, 0, 4) + bytes([0xFF, 0xFE, 0x80, 0x81])
    (tmp_path / "other.mrt").write_bytes(record)
    with pytest.raises(RibError, match=r"other\.mrt: its first record's MRT type is 99, not a table dump"):
        read_rib(tmp_path / "other.mrt")
    (tmp_path / "zeros").write_bytes(bytes(100))
    with pytest.raises(RibError, match=r"zeros: its first record's MRT type is 0, not a table dump"):
        read_rib(tmp_path / "zeros")
    updates = struct.pack("!IHHI", 1_700_000_000, 16, 4, 40) + bytes(40)  # BGP4MP: updates, not a table
    (tmp_path / "updates.mrt").write_bytes(updates)
    with pytest.raises(
        RibError, match=r"no TABLE_DUMP or TABLE_DUMP_V2 records \(its MRT record types: BGP4MP \(16\)\)"
    ):
        read_rib(tmp_path / "updates.mrt")


# -- our decoder against mrtparse ---------------------------------------------------------------------
def mrtparse_routes(path: Path) -> list[Route]:
    """The routes as mrtparse decodes the file, each made a Route as read_mrt always made mrtparse's (by _route):
    the reference our own TABLE_DUMP_V2 decoder is held to."""
    peers: list[int] = []
    routes: list[Route] = []
    with path.open("rb") as stream:
        for entry in mrtparse.Reader(stream):
            assert not entry.err, entry.err_msg
            data = entry.data
            subtype = next(iter(data["subtype"]))
            if subtype == 1:
                peers = [int(peer["peer_as"]) for peer in data["peer_entries"]]
                continue
            version = 4 if subtype in (2, 8) else 6
            prefix = str(ipaddress.ip_network(f"{data['prefix']}/{data['length']}"))
            for rib in data["rib_entries"]:
                route = _route(prefix, rib["path_attributes"], peers[rib["peer_index"]], version, as4_path=False)
                if route is not None:
                    routes.append(route)
    return routes


# Addresses where text is easy to get wrong: IPv4-mapped and -compatible IPv6, runs of zeros of equal length.
ODD_ADDRESSES = [
    0,
    1,
    0xFFFF << 32,
    (0xFFFF << 32) | 0xC0000201,
    0xC0000201,
    0x20010DB8 << 96 | 1 << 48 | 1,
    2**128 - 1,
]
ASNS = st.one_of(st.integers(1, 2**32 - 1), st.sampled_from([0, 23456, 64497, 65535, 65536, 4_200_000_000]))


@st.composite
def addresses(draw: st.DrawFn, version: int) -> str:
    if version == 4:
        return str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1))))
    base = draw(st.sampled_from(ODD_ADDRESSES) | st.integers(0, 2**128 - 1))
    return str(ipaddress.IPv6Address(base ^ draw(st.sampled_from([0, 1, 0xFFFF << 16]))))


@st.composite
def prefixes(draw: st.DrawFn, version: int) -> str:
    length = draw(st.integers(0, 32 if version == 4 else 128))
    return str(ipaddress.ip_network(f"{draw(addresses(version))}/{length}", strict=False))


@st.composite
def attribute_blocks(draw: st.DrawFn, version: int) -> bytes:
    """A valid block of path attributes for a table of ``version``, in the shapes dumpers write and odd ones."""
    segments = draw(
        st.lists(st.tuples(st.sampled_from([AS_SEQUENCE, AS_SEQUENCE, AS_SET, 3, 4]), st.lists(ASNS, max_size=6)))
        | st.lists(ASNS, min_size=60, max_size=300).map(
            lambda path: [(AS_SEQUENCE, path)]
        )  # long: extended length, 2 segments
    )
    hop = draw(st.none() | addresses(4) | (addresses(6) if version == 6 else st.nothing()))
    med, local_pref = draw(st.none() | st.integers(0, 2**32 - 1)), draw(st.none() | st.integers(0, 2**32 - 1))
    extras = [
        attribute(0xC0, 8, struct.pack("!2I", 64497 << 16 | 1, 64497 << 16 | 2)),  # communities
        attribute(0xC0, 32, struct.pack("!3I", 64497, 1, 2)),  # large communities
        attribute(0xC0, 99, draw(st.binary(max_size=8))),  # a type mrtparse has no name for
        attribute(0xC0, 17, as_path_value([(AS_SEQUENCE, draw(st.lists(ASNS, max_size=3)))])),  # AS4_PATH
        attribute(0x80, 26, b"\x01\x00\x0b" + struct.pack("!Q", 7)),  # AIGP
        attribute(0x80, 4, struct.pack("!I", 5)),  # a second MED: the last one counts
        attribute(0x40, 3, ipaddress.IPv6Address(draw(addresses(6))).packed),  # NEXT_HOP of an IPv6 address
        attribute(0x40, 2, as_path_value([(AS_SEQUENCE, draw(st.lists(ASNS, max_size=3)))])),  # a second AS_PATH
    ]
    family = 16 if version == 6 else 4
    if version == 6:  # the global and the link-local next hop (RFC 2545)
        extras.append(
            attribute(0x80, 14, b"\x20" + ipaddress.IPv6Address(draw(addresses(6))).packed + b"\xfe\x80" + bytes(14))
        )
    afi = 2 if version == 6 else 1
    whole = struct.pack("!HBB", afi, 1, family) + ipaddress.ip_address(draw(addresses(version))).packed + b"\x00"
    extras.append(attribute(0x80, 14, whole))  # a whole MP_REACH_NLRI, as some old dumpers wrote it
    block = path_attributes(segments, next_hop=hop, med=med, local_pref=local_pref)
    chosen = draw(st.lists(st.sampled_from(extras), max_size=3))
    if draw(st.booleans()):
        return block + b"".join(chosen)
    # ORIGIN and AS_PATH not first: dumpers order attributes by type, a fuzzed file need not
    return b"".join(chosen) + block


@st.composite
def table_dumps(draw: st.DrawFn) -> bytes:
    """A valid TABLE_DUMP_V2 file: one or two PEER_INDEX_TABLEs, each with RIB records (IPv4 and IPv6, with and
    without add-path) of entries that share attribute blocks, as a real table's entries do."""
    out = b""
    for _ in range(draw(st.integers(1, 2))):
        peers = draw(st.lists(st.tuples(ASNS, addresses(4) | addresses(6)), min_size=1, max_size=4))
        out += peer_index_table(peers)
        pools = {v: draw(st.lists(attribute_blocks(v), min_size=1, max_size=4)) for v in (4, 6)}
        for sequence in range(draw(st.integers(0, 6))):
            version = draw(st.sampled_from([4, 6]))
            count = draw(st.integers(0, 4))
            entries = [
                (draw(st.integers(0, len(peers) - 1)), draw(st.sampled_from(pools[version]))) for _ in range(count)
            ]
            path_ids = draw(st.none() | st.just(list(range(1, count + 1))))
            out += rib_record(draw(prefixes(version)), entries, sequence=sequence, path_ids=path_ids)
    return out


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=table_dumps())
def test_the_fast_decoder_agrees_with_mrtparse(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "table.mrt"
    path.write_bytes(data)
    assert read_mrt(path) == mrtparse_routes(path)  # every field compared: one the decoder left unset would raise


def test_an_attribute_block_is_judged_per_ip_version(tmp_path: Path) -> None:
    # An MP_REACH_NLRI of an IPv4 next hop is sound in an IPv4 table, not in an IPv6 one: decoded once for the
    # first, the same bytes are still refused in the second.
    block = path_attributes([(AS_SEQUENCE, [64497, 64511])]) + attribute(0x80, 14, b"\x04\xc0\x00\x02\x01")
    path = tmp_path / "rib.mrt"
    path.write_bytes(
        peer_index_table([(64497, "192.0.2.1")])
        + rib_record("203.0.113.0/24", [(0, block)])
        + rib_record("198.51.100.0/24", [(0, block)], sequence=1)
    )
    assert read_mrt(path) == [
        Route("203.0.113.0/24", (64497, 64511), False, 64497, None, None, "192.0.2.1"),
        Route("198.51.100.0/24", (64497, 64511), False, 64497, None, None, "192.0.2.1"),
    ]
    path.write_bytes(path.read_bytes() + rib_record("2001:db8::/32", [(0, block)], sequence=2))
    with pytest.raises(RibError, match=r"record 4 \(byte \d+\): a malformed MP_REACH_NLRI attribute"):
        read_mrt(path)


def test_a_whole_mp_reach_nlri_as_old_dumpers_wrote_it_still_gives_the_next_hop(tmp_path: Path) -> None:
    whole = struct.pack("!HBB", 2, 1, 16) + ipaddress.IPv6Address("2001:db8::9").packed + b"\x00"
    block = path_attributes([(AS_SEQUENCE, [64497, 64511])]) + attribute(0x80, 14, whole)
    path = tmp_path / "rib.mrt"
    path.write_bytes(peer_index_table([(64497, "192.0.2.1")]) + rib_record("2001:db8:100::/48", [(0, block)]))
    assert read_mrt(path) == [Route("2001:db8:100::/48", (64497, 64511), False, 64497, None, None, "2001:db8::9")]


@pytest.mark.parametrize("chunk", [1, 5, 12, 13, 100])
def test_records_are_framed_across_the_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    # The file is read a megabyte at a time; here a few bytes, so records and headers straddle the reads.
    monkeypatch.setattr(_rib, "READ_CHUNK_BYTES", chunk)
    path = write_mrt(tmp_path / "rib.mrt", ROUTES)
    assert read_mrt(path) == EXPECTED
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(RibError, match=r"cut short in the record at byte \d+: \d+ of its \d+ bytes"):
        read_mrt(path)


def test_reading_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    path = write_mrt(tmp_path / "rib.mrt", ROUTES)
    assert gc.isenabled()
    read_mrt(path)
    assert gc.isenabled()
    with pytest.raises(RibError):
        read_mrt(tmp_path / "absent.mrt")
    assert gc.isenabled()
    gc.disable()
    try:
        read_mrt(path)
        assert not gc.isenabled()
    finally:
        gc.enable()


# -- birdc ------------------------------------------------------------------------------------------
# The shape of `birdc show route all` from BIRD 2.0.12 (see test_a_real_bird_agrees_with_itself), with what
# real tables add: gateways, an AS_SET, a confederation, a route of no BGP, a global and link-local next hop.
BIRDC = """\
BIRD 2.0.12 ready.
Table master4:
203.0.113.0/24       unicast [transit_a 12:00:00.000] * (100) [AS64511i]
\tvia 192.0.2.1 on eth0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64497 64511
\tBGP.next_hop: 192.0.2.1
\tBGP.med: 10
\tBGP.local_pref: 100
\tBGP.community: (64497,1) (64497,2)
                     unicast [transit_b 12:00:01.000 from 198.51.100.1] (100/20) [AS64511i]
\tvia 198.51.100.1 on eth1
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64498 64500 64511
\tBGP.next_hop: 198.51.100.1
\tBGP.local_pref: 90
198.51.100.0/24      unicast [transit_a 12:00:00.000] * (100) [AS64502i]
\tvia 192.0.2.1 on eth0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64497 (65000 65001) 64501 {64503 64502}
\tBGP.next_hop: 192.0.2.1
\tBGP.local_pref: 100
192.0.2.0/24         unicast [direct1 11:59:00.000] * (240)
\tdev eth0
\tType: device univ

Table master6:
2001:db8:100::/48    unicast [transit_b 12:00:01.000] * (100) [AS65551i]
\tvia 2001:db8::2 on eth1
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64498 65551
\tBGP.next_hop: 2001:db8::2 fe80::2
\tBGP.med: 0
\tBGP.local_pref: 100
2001:db8:200::/48    unicast [ibgp_core 12:00:02.000 from 2001:db8::ff] * (100) [i]
\tvia 2001:db8::ff on eth2
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path:\x20
\tBGP.next_hop: 2001:db8::ff
\tBGP.local_pref: 100
"""
BIRDC_ROUTES = [
    Route("203.0.113.0/24", (64497, 64511), False, 64497, 10, 100, "192.0.2.1"),
    Route("203.0.113.0/24", (64498, 64500, 64511), False, 64498, None, 90, "198.51.100.1"),
    Route("198.51.100.0/24", (64497, 64501, 64502, 64503), True, 64497, None, 100, "192.0.2.1", 2),
    Route("2001:db8:100::/48", (64498, 65551), False, 64498, 0, 100, "2001:db8::2"),
]


def test_birdc_text_reads_every_bgp_route_from_a_transit(tmp_path: Path) -> None:
    assert read_birdc(BIRDC, source="show.txt") == BIRDC_ROUTES
    assert BIRDC_ROUTES[2].path_length() == 3
    (tmp_path / "show.txt").write_text(BIRDC)
    assert read_rib(tmp_path / "show.txt") == BIRDC_ROUTES


def test_birdc_takes_the_protocols_neighbour_as_where_given() -> None:
    routes = read_birdc(BIRDC, source="show.txt", protocol_asns={"transit_a": 64510, "ibgp_core": 64496})
    assert [(r.prefix, r.transit_asn) for r in routes] == [
        ("203.0.113.0/24", 64510),
        ("203.0.113.0/24", 64498),
        ("198.51.100.0/24", 64510),
        ("2001:db8:100::/48", 64498),
        ("2001:db8:200::/48", 64496),
    ]


def test_birdc_older_layouts() -> None:
    # BIRD 1 put the gateway where BIRD 2 puts the route type; older BIRD 2 padded AS_SETs with a space.
    text = (
        "203.0.113.0/24     via 192.0.2.1 on eth0 [transit_a 2024-01-01 12:00:00] * (100) [AS64511i]\n"
        "\tType: BGP unicast univ\n"
        "\tBGP.as_path: 64497 {64511 64510 }\n"
        "\tBGP.next_hop: 192.0.2.1\n"
    )
    assert read_birdc(text, source="bird1") == [
        Route("203.0.113.0/24", (64497, 64510, 64511), True, 64497, None, None, "192.0.2.1", 2)
    ]
    assert read_birdc("BIRD 2.0.12 ready.\nNetwork not found\n", source="none") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BIRD 2.0.12 ready.\nsomething else\n", r"show\.txt:2: not a line of `birdc show route all`: 'something"),
        ("not-a-prefix  unicast [t 12:00] * (100)\n", r"show\.txt:1: 'not-a-prefix' is not an IP prefix"),
        ("Table master4:\n                     unicast [t 12:00] (100)\n", r"show\.txt:2: a further route before any"),
        ("\tBGP.as_path: 64497\n", r"show\.txt:1: an attribute line before any route"),
        (BIRDC.replace("BGP.med: 10", "BGP.med: ten"), r"show\.txt:9: BGP.med: 'ten' is not a number"),
        (BIRDC.replace("64497 64511", "64497 AS64511"), r"show\.txt:7: BGP.as_path: 'AS64511' is not an AS number"),
        (BIRDC.replace("64497 64511", "64497 64511 ..."), r"show\.txt:7: BGP.as_path: BIRD cut the path short"),
        (BIRDC.replace("{64503 64502}", "{64503 64502"), r"show\.txt:23: BGP.as_path: unbalanced '\{'"),
        (BIRDC.replace("64501 {", "64501 }{"), r"show\.txt:23: BGP.as_path: unbalanced '\}'"),
        (BIRDC.replace("BGP.next_hop: 192.0.2.1", "BGP.next_hop: nowhere"), r"show\.txt:8: BGP.next_hop: 'nowhere'"),
        (BIRDC.replace("BGP.local_pref: 90", "BGP.local_pref: 4294967296"), r"show\.txt:18: BGP.local_pref"),
    ],
    ids=["garbage", "prefix", "orphan-route", "orphan-attribute", "med", "as", "cut-path", "open-set", "close-set",
         "next-hop", "local-pref-range"],
)  # fmt: skip
def test_bad_birdc_lines_are_refused_with_source_and_line(text: str, message: str) -> None:
    with pytest.raises(RibError, match=message):
        read_birdc(text, source="show.txt")


# -- a real BIRD -------------------------------------------------------------------------------------
TRANSIT = """
protocol static s4 {{ ipv4; route 203.0.113.0/24 blackhole; route {own} blackhole; }}
protocol static s6 {{ ipv6; route 2001:db8:100::/48 blackhole; }}
protocol bgp ours {{
  local {address} port {port} as {asn}; neighbor 127.0.0.61 port {our_port} as 64496;
  multihop; strict bind on; connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv4 {{ import none; export filter {{ if source != RTS_STATIC then reject;
    bgp_path.prepend(64511); bgp_path.prepend({middle}); bgp_med = {med}; accept; }}; }};
  ipv6 {{ import none; export filter {{ if source != RTS_STATIC then reject; bgp_path.prepend(64511); accept; }};
    next hop address 2001:db8::{asn_hex}; }};
}}
"""
OURS = """
protocol bgp {name} {{
  local 127.0.0.61 port {our_port} as 64496; neighbor {address} port {port} as {asn};
  multihop; strict bind on; connect delay time 1; connect retry time 1; error wait time 1, 2;
  ipv4 {{ import all; export none; }}; ipv6 {{ import all; export none; }};
}}
"""


def test_a_real_bird_agrees_with_itself(tmp_path: Path) -> None:
    """BIRD's own MRT dump (`mrt dump`) and its `show route all` of the same table read to the same routes."""
    our_port = free_port()
    transits = [("transit_a", "127.0.0.62", 64497, 64499, 10, "198.51.100.0/25"),
                ("transit_b", "127.0.0.63", 64498, 64500, 20, "198.51.100.128/25")]  # fmt: skip
    birds, ours = [], ""
    for name, address, asn, middle, med, own in transits:
        port = free_port()
        values = {"address": address, "port": port, "asn": asn, "asn_hex": f"{asn:x}", "middle": middle, "med": med}
        config = TRANSIT.format(our_port=our_port, own=own, **values)
        birds.append(Bird(tmp_path, name, address, config))
        ours += OURS.format(name=name, our_port=our_port, address=address, port=port, asn=asn)
    birds.append(Bird(tmp_path, "ours", "127.0.0.61", ours))
    try:
        for bird in birds:
            bird.start()
        wait_for("6 routes at our BIRD", lambda: len(birds[-1].routes()) == 6, timeout_seconds=60)
        text = birds[-1].birdc("show", "route", "all")
        dump = tmp_path / "table.mrt"
        birds[-1].birdc("mrt", "dump", "table", '"master*"', "to", f'"{dump}"')
        wait_for("the MRT dump", lambda: dump.exists() and len(read_mrt(dump)) == 6, timeout_seconds=10)
    finally:
        for bird in birds:
            bird.stop()
    from_text, from_mrt = read_birdc(text, source="birdc"), read_mrt(dump)
    assert sorted(from_text, key=repr) == sorted(from_mrt, key=repr)
    assert Route("203.0.113.0/24", (64498, 64500, 64511), False, 64498, 20, 100, "127.0.0.63") in from_mrt
    assert Route("2001:db8:100::/48", (64497, 64511), False, 64497, None, 100, "2001:db8::fbf1") in from_mrt


# -- the speaker's rib-in file ------------------------------------------------------------------------
def test_routes_from_the_speakers_rib_in_file() -> None:
    body = {
        "pop": "nyc1",
        "written_at": time.time(),
        "routes": [
            SpeakerRoute("203.0.113.0/24", "192.0.2.1", 64497, "192.0.2.1", (64497, 64511), med=10).to_json(),
            SpeakerRoute("2001:db8::/32", "2001:db8::2", 64498, "", (64498, 65551), local_pref=90).to_json(),
            SpeakerRoute("198.51.100.0/24", "192.0.2.3", 0, "192.0.2.3", (64499,)).to_json(),
        ],
    }
    expected = [
        Route("203.0.113.0/24", (64497, 64511), False, 64497, 10, None, "192.0.2.1"),
        Route("2001:db8::/32", (64498, 65551), False, 64498, None, 90, None),
        Route("198.51.100.0/24", (64499,), False, 64499, None, None, "192.0.2.3"),  # no neighbour AS: the path's
    ]
    assert routes_from_speaker(body) == expected
    assert routes_from_speaker(body["routes"]) == expected
    renamed = [{"prefix": "203.0.113.0/24", "transit_asn": 64497, "as_path": [64497], "next_hop": None}]
    assert routes_from_speaker({"routes": renamed}) == [Route("203.0.113.0/24", (64497,), False, 64497)]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"pop": "nyc1"}, "rib-in.json: routes: missing"),
        ({"routes": [{"prefix": "203.0.113.0/24", "peer_asn": 1, "as_path": [1, "2"]}]}, r"routes\[0\]\.as_path\[1\]"),
        ({"routes": [{"prefix": "203.0.113.7/24", "peer_asn": 1}]}, r"routes\[0\]\.prefix: '203.0.113.7/24' is not"),
        ({"routes": [{"prefix": "203.0.113.0/24", "peer_asn": 1, "med": -1}]}, r"routes\[0\]\.med"),
        ({"routes": [{"prefix": "203.0.113.0/24", "peer_asn": 1, "next_hop": "x"}]}, r"routes\[0\]\.next_hop"),
        ({"routes": [{"prefix": "203.0.113.0/24", "peer_asn": 0}]}, r"routes\[0\]: no neighbour AS"),
        ("text", r"rib-in\.json: expected \{\"routes\": \[...\]\} or a list of routes, not str"),
    ],
)
def test_bad_speaker_routes_name_the_field(body: object, message: str) -> None:
    with pytest.raises(RibError, match=message):
        routes_from_speaker(body, source="rib-in.json")


# -- disjoint ranges ----------------------------------------------------------------------------------
def key(address: str) -> int:
    return address_key(address)


def test_disjoint_ranges_nested_duplicates_and_edges() -> None:
    prefixes = ["10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8", "10.1.2.3/32", "10.255.0.0/16"]
    assert disjoint_ranges(prefixes) == [
        (key("10.0.0.0"), key("10.0.255.255"), 0),
        (key("10.1.0.0"), key("10.1.2.2"), 1),
        (key("10.1.2.3"), key("10.1.2.3"), 3),
        (key("10.1.2.4"), key("10.1.255.255"), 1),
        (key("10.2.0.0"), key("10.254.255.255"), 0),
        (key("10.255.0.0"), key("10.255.255.255"), 4),
    ]
    assert disjoint_ranges(["::/0", "2001:db8::1/128"]) == [
        (0, key("2001:db8::"), 0),
        (key("2001:db8::1"), key("2001:db8::1"), 1),
        (key("2001:db8::2"), 2**128 - 1, 0),
    ]
    # IPv4 lives at ::ffff:0:0/96, so 0.0.0.0/0 is that /96 and an IPv6 default covers what it leaves.
    assert disjoint_ranges(["0.0.0.0/0"]) == [(0xFFFF << 32, (0xFFFF << 32) | 0xFFFFFFFF, 0)]
    assert disjoint_ranges([]) == []
    with pytest.raises(ValueError):
        disjoint_ranges(["203.0.113.0/33"])


HOT = [int(ipaddress.ip_address(a)) for a in ("2001:db8::", "2001:db8:1::", "::ffff:203.0.113.0", "::", "ff00::")]


@st.composite
def prefix_sets(draw: st.DrawFn) -> list[str]:
    """Prefixes crowded around a few addresses, so most nest in others or repeat."""
    out = []
    for _ in range(draw(st.integers(0, 40))):
        base = draw(st.sampled_from(HOT)) ^ draw(st.integers(0, 2**20 - 1)) << draw(st.integers(0, 108))
        length = draw(st.integers(0, 128))
        network = ipaddress.IPv6Network((base % 2**128, length), strict=False)
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and length >= 96 and draw(st.booleans()):
            out.append(f"{mapped}/{length - 96}")  # the same prefix written as IPv4
        else:
            out.append(str(network))
    return out


def lookup(ranges: list[tuple[int, int, int]], address: int) -> int | None:
    at = bisect.bisect_right(ranges, (address, 2**129, 0)) - 1
    return ranges[at][2] if at >= 0 and ranges[at][0] <= address <= ranges[at][1] else None


@settings(max_examples=300, deadline=None)
@given(prefixes=prefix_sets(), probes=st.lists(st.integers(0, 2**128 - 1), max_size=20))
def test_disjoint_ranges_match_radix_longest_prefix(prefixes: list[str], probes: list[int]) -> None:
    ranges = disjoint_ranges(prefixes)
    assert all(lo <= hi for lo, hi, _ in ranges)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(ranges))
    assert len(ranges) <= 2 * len(prefixes)
    tree = radix.Radix()
    first: dict[str, int] = {}
    for index, text in enumerate(prefixes):
        network = ipaddress.ip_network(text)
        if network.version == 4:  # where disjoint_ranges puts it: radix keeps IPv4 apart, so map it here
            network = ipaddress.IPv6Network(((0xFFFF << 32) | int(network.network_address), network.prefixlen + 96))
        node = tree.search_exact(str(network)) or tree.add(str(network))
        first.setdefault(node.prefix, index)
    edges = [b for lo, hi, _ in ranges for b in (lo, hi, max(lo - 1, 0), min(hi + 1, 2**128 - 1))]
    for address in [*probes, *edges, *HOT]:
        node = tree.search_best(str(ipaddress.IPv6Address(address)))
        assert lookup(ranges, address) == (None if node is None else first[node.prefix]), hex(address)


@settings(max_examples=100, deadline=None)
@given(prefixes=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)), max_size=30), probe=st.integers())
def test_ipv4_prefixes_match_radix_on_ipv4_addresses(prefixes: list[tuple[int, int]], probe: int) -> None:
    texts = [str(ipaddress.IPv4Network((a, n), strict=False)) for a, n in prefixes]
    assume(texts)
    tree = radix.Radix()
    first: dict[str, int] = {}
    for index, text in enumerate(texts):
        first.setdefault((tree.search_exact(text) or tree.add(text)).prefix, index)
    ranges = disjoint_ranges(texts)
    for address in [probe % 2**32, *(a for a, _ in prefixes)]:
        text = str(ipaddress.IPv4Address(address))
        node = tree.search_best(text)
        assert lookup(ranges, address_key(text)) == (None if node is None else first[node.prefix])


def test_address_key_maps_ipv4_into_the_ipv6_space() -> None:
    assert address_key("203.0.113.5") == int(ipaddress.ip_address("::ffff:203.0.113.5"))
    assert address_key("2001:db8::5") == int(ipaddress.ip_address("2001:db8::5"))
