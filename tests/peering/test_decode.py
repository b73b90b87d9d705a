"""The NetFlow v5 / v9 / IPFIX decoder: a real softflowd, hand-built packets, the netflow package as a second
opinion, and hostile datagrams that must never make it raise."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import shutil
import socket
import struct
import subprocess
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import netflow
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.netflow import (
    NetflowDataflowsetV9,
    NetflowFlowsetV9,
    NetflowHeader,
    NetflowHeaderV5,
    NetflowHeaderV9,
    NetflowHeaderV10,
    NetflowRecordV5,
    NetflowRecordV9,
    NetflowTemplateFieldV9,
    NetflowTemplateV9,
)
from scapy.packet import Raw
from scapy.utils import wrpcap

from edgeplane.peering._decode import Decoder, FlowColumns
from tests._time import wait_for

REASONS = {
    "short",
    "version",
    "length",
    "malformed_set",
    "malformed_template",
    "unknown_template",
    "no_addresses",
    "too_many_templates",
    "too_many_exporters",
    "implausible_counter",
    "bad_time",
}
EXPORT_S = 1_790_000_000
EXPORT_MS = EXPORT_S * 1000
NTP_OFFSET_S = 2_208_988_800
VARIABLE = 65535
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))

# A field as a template declares it: (IE, length) or (IE, length, enterprise number).
Field = tuple[int, ...]
V4_FIELDS: list[Field] = [(8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4), (4, 1), (7, 2), (11, 2)]
V6_FIELDS: list[Field] = [(27, 16), (28, 16), (22, 4), (21, 4), (1, 4), (2, 4), (4, 1), (7, 2), (11, 2)]


# Packets, built with scapy where it builds them right and by hand where it does not (IPFIX options
# templates, variable-length values).


def v9(sets: Sequence[bytes], *, uptime_ms: int = 600_000, secs: int = EXPORT_S, source_id: int = 0) -> bytes:
    header = NetflowHeader(version=9) / NetflowHeaderV9(
        count=len(sets), sysUptime=uptime_ms, unixSecs=secs, SourceID=source_id
    )
    return bytes(header) + b"".join(sets)


def ipfix(sets: Sequence[bytes], *, secs: int = EXPORT_S, domain: int = 0) -> bytes:
    body = b"".join(sets)
    # scapy's own length would leave out the 2 bytes of the version field
    header = NetflowHeader(version=10) / NetflowHeaderV10(
        length=16 + len(body), ExportTime=secs, ObservationDomainID=domain
    )
    return bytes(header / Raw(body))


def v5(records: Sequence[dict[str, Any]], **header: Any) -> bytes:
    packet = NetflowHeader(version=5) / NetflowHeaderV5(**header)
    for record in records:
        packet = packet / NetflowRecordV5(**record)
    return bytes(packet)


def _field(spec: Field) -> NetflowTemplateFieldV9:
    if len(spec) == 3:
        return NetflowTemplateFieldV9(enterpriseBit=1, fieldType=spec[0], fieldLength=spec[1], enterpriseNumber=spec[2])
    return NetflowTemplateFieldV9(fieldType=spec[0], fieldLength=spec[1])


def template_set(templates: dict[int, Sequence[Field]], *, version: int = 9) -> bytes:
    records = [
        NetflowTemplateV9(templateID=tid, template_fields=[_field(f) for f in fs]) for tid, fs in templates.items()
    ]
    return bytes(NetflowFlowsetV9(flowSetID=0 if version == 9 else 2, templates=records))


def _specifiers(fields: Sequence[Field]) -> bytes:
    out = b""
    for spec in fields:
        out += struct.pack("!HH", spec[0] | (0x8000 if len(spec) == 3 else 0), spec[1])
        out += struct.pack("!I", spec[2]) if len(spec) == 3 else b""
    return out


def _set(set_id: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def v9_options_template(template_id: int, scopes: Sequence[Field], options: Sequence[Field]) -> bytes:
    head = struct.pack("!HHH", template_id, 4 * len(scopes), 4 * len(options))
    return _set(1, head + _specifiers(scopes) + _specifiers(options))


def ipfix_options_template(template_id: int, scopes: Sequence[Field], options: Sequence[Field]) -> bytes:
    head = struct.pack("!HHH", template_id, len(scopes) + len(options), len(scopes))
    return _set(3, head + _specifiers(scopes) + _specifiers(options))


def record(fields: Sequence[Field], values: Mapping[int, int | bytes]) -> bytes:
    """One data record; enterprise fields and fields not named get zeros (or, variable, 3 bytes)."""
    out = b""
    for spec in fields:
        ie, length = spec[0], spec[1]
        value = values.get(ie, 0) if len(spec) == 2 else 0
        if length == VARIABLE:
            raw = value if isinstance(value, bytes) else b"abc"
            out += (bytes([len(raw)]) if len(raw) < 255 else b"\xff" + struct.pack("!H", len(raw))) + raw
        else:
            out += value if isinstance(value, bytes) else value.to_bytes(length, "big")
    return out


def data_set(template_id: int, records: Sequence[bytes]) -> bytes:
    return bytes(NetflowDataflowsetV9(templateID=template_id, records=[NetflowRecordV9(fieldValue=r) for r in records]))


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def address(hi: Any, lo: Any) -> str:
    parsed = ipaddress.IPv6Address(int(hi) << 64 | int(lo))
    return str(parsed.ipv4_mapped or parsed)


def rows(columns: FlowColumns) -> list[dict[str, Any]]:
    return [
        {
            "src": address(columns.src_hi[i], columns.src_lo[i]),
            "dst": address(columns.dst_hi[i], columns.dst_lo[i]),
            "bytes": int(columns.bytes[i]),
            "packets": int(columns.packets[i]),
            "protocol": int(columns.protocol[i]),
            "src_port": int(columns.src_port[i]),
            "dst_port": int(columns.dst_port[i]),
            "start_ms": int(columns.start_ms[i]),
            "end_ms": int(columns.end_ms[i]),
            "sampling": int(columns.sampling[i]),
            "exporter": int(columns.exporter[i]),
            "domain": int(columns.domain[i]),
        }
        for i in range(len(columns))
    ]


def decoded(*datagrams: bytes, decoder: Decoder | None = None, exporter: str = "192.0.2.1") -> list[dict[str, Any]]:
    decoder = decoder if decoder is not None else Decoder()
    for datagram in datagrams:
        decoder.decode(datagram, exporter, 0)
    return rows(decoder.take())


def drops(decoder: Decoder) -> dict[str, int]:
    return {reason: n for reason, n in decoder.dropped.items() if n}


# A real exporter: softflowd reads a capture and exports it as v9 and as IPFIX.


def _capture(path: Path, now: float) -> dict[tuple[str, str, int, int, int], tuple[int, int, float, float]]:
    """An Ethernet capture of a few one-way flows; per flow (src, dst, protocol, sport, dport): the bytes and
    packets softflowd should count (IP lengths) and the first and last packet's time."""
    flows: list[tuple[Any, int, int, list[int]]] = [
        (IP(src="192.0.2.10", dst="198.51.100.7") / TCP(sport=40000, dport=443, flags="A"), 40000, 443, [100, 1400, 0]),
        (IP(src="192.0.2.10", dst="198.51.100.8") / UDP(sport=5000, dport=53), 5000, 53, [30, 31, 32, 33]),
        (IP(src="203.0.113.5", dst="192.0.2.10") / ICMP(type=8, code=0), 0, 8 << 8, [56, 56]),
        (IPv6(src="2001:db8::1", dst="2001:db8:1::2") / TCP(sport=443, dport=50000, flags="A"), 443, 50000, [1200, 12]),
        (IPv6(src="2001:db8::5", dst="2001:db8:1::6") / UDP(sport=123, dport=123), 123, 123, [48]),
    ]
    packets = []
    expected: dict[tuple[str, str, int, int, int], tuple[int, int, float, float]] = {}
    at = now - 20.0
    for layer, sport, dport, sizes in flows:
        ip = layer.getlayer(IP) or layer.getlayer(IPv6)
        protocol = ip.proto if ip.version == 4 else ip.nh
        key = (ip.src, ip.dst, protocol, sport, dport)
        for size in sizes:
            frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / (layer / (b"x" * size))
            frame.time = at
            packets.append(frame)
            octets, count, first, _ = expected.get(key, (0, 0, at, at))
            expected[key] = (octets + len(frame.payload), count + 1, first, at)
            at += 0.25
    wrpcap(str(path), packets)
    return expected


def _softflowd(tmp_path: Path, capture: Path, version: int, flows: int) -> list[bytes]:
    """The datagrams softflowd sends for the capture: once it holds every flow, expire them all, then stop it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        control = tmp_path / f"sf{version}.ctl"
        process = subprocess.Popen(
            ["softflowd", "-d", "-r", str(capture), "-n", f"127.0.0.1:{port}", "-v", str(version),
             "-p", str(tmp_path / f"sf{version}.pid"), "-c", str(control)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def ctl(command: str) -> str:
            done = subprocess.run(["softflowctl", "-c", str(control), command], capture_output=True, text=True)
            return done.stdout

        try:
            wait_for(
                "softflowd holds every flow", lambda: control.exists() and ctl("dump-flows").count("ACTIVE") == flows
            )
            ctl("expire-all")
            ctl("shutdown")
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        # softflowd has exited: everything it sent over loopback is already queued on our socket.
        sock.setblocking(False)
        datagrams = []
        while True:
            try:
                datagrams.append(sock.recv(65535))
            except BlockingIOError:
                return datagrams


@pytest.mark.parametrize("version", [9, 10])
def test_softflowd_exports_decode_to_the_captured_flows(tmp_path: Path, version: int) -> None:
    if shutil.which("softflowd") is None:
        pytest.skip("softflowd is not installed")
    expected = _capture(tmp_path / "cap.pcap", time.time())
    datagrams = _softflowd(tmp_path, tmp_path / "cap.pcap", version, len(expected))
    assert datagrams
    assert all(d[:2] == struct.pack("!H", version) for d in datagrams)

    decoder = Decoder()
    for datagram in datagrams:
        decoder.decode(datagram, "127.0.0.1", 0)
    got = {(r["src"], r["dst"], r["protocol"], r["src_port"], r["dst_port"]): r for r in rows(decoder.take())}

    assert drops(decoder) == {}
    assert decoder.exporters == ["127.0.0.1"]
    assert decoder.templates() == 4  # IPv4 and IPv6, each with ports or with ICMP type
    assert decoder.records == len(expected)
    assert got.keys() == expected.keys()
    for key, (octets, packets, first, last) in expected.items():
        flow = got[key]
        assert (flow["bytes"], flow["packets"], flow["sampling"]) == (octets, packets, 1), key
        # The headers give whole export seconds only, so a time can be off by up to one second.
        assert abs(flow["start_ms"] - first * 1000) < 1100, key
        assert abs(flow["end_ms"] - last * 1000) < 1100, key


# NetFlow v5, built by hand.


def test_v5_records_with_times_engine_and_sampling() -> None:
    records = [
        {"src": "10.1.2.3", "dst": "10.9.8.7", "dpkts": 3, "dOctets": 4500, "first": 1000, "last": 9000,
         "srcport": 1234, "dstport": 80, "prot": 6},
        # switched "after" the header's uptime: the uptime wrapped past 2**32 ms since, the flow is 75 s old
        {"src": "172.16.0.1", "dst": "172.16.0.2", "dpkts": 1, "dOctets": 60, "first": 0xFFFF0000, "last": 0xFFFFFF00,
         "srcport": 53, "dstport": 5353, "prot": 17},
    ]  # fmt: skip
    datagram = v5(
        records,
        sysUptime=10_000,
        unixSecs=EXPORT_S,
        unixNanoSeconds=250_000_000,
        engineType=3,
        engineID=7,
        samplingInterval=0x4000 | 10,  # mode bits above the 14-bit interval
    )
    decoder = Decoder()
    got = decoded(datagram, decoder=decoder)
    export = EXPORT_MS + 250
    assert got == [
        {"src": "10.1.2.3", "dst": "10.9.8.7", "bytes": 45000, "packets": 30, "protocol": 6, "src_port": 1234,
         "dst_port": 80, "start_ms": export - 9000, "end_ms": export - 1000, "sampling": 10, "exporter": 0,
         "domain": 3 << 8 | 7},
        {"src": "172.16.0.1", "dst": "172.16.0.2", "bytes": 600, "packets": 10, "protocol": 17, "src_port": 53,
         "dst_port": 5353, "start_ms": export - (10_000 + 0x10000), "end_ms": export - (10_000 + 0x100),
         "sampling": 10, "exporter": 0, "domain": 3 << 8 | 7},
    ]  # fmt: skip
    assert decoder.records == 2
    assert decoder.datagrams == 1


def test_v5_without_sampling_and_wrong_counts() -> None:
    one = {"src": "10.0.0.1", "dst": "10.0.0.2", "dpkts": 2, "dOctets": 100}
    decoder = Decoder()
    good = v5([one], unixSecs=EXPORT_S)
    assert [(r["bytes"], r["sampling"]) for r in decoded(good, decoder=decoder)] == [(100, 1)]
    decoder.decode(v5([one, one], count=3, unixSecs=EXPORT_S), "192.0.2.1", 0)  # count says more than it holds
    decoder.decode(good + b"\0" * 4, "192.0.2.1", 0)  # trailing bytes the count does not cover
    decoder.decode(good[:20], "192.0.2.1", 0)
    assert len(decoder.take()) == 0
    assert drops(decoder) == {"length": 2, "short": 1}
    assert decoder.exporters == ["192.0.2.1"]


# v9 and IPFIX templates.


def test_v9_ipv4_and_ipv6_with_uptime_times() -> None:
    values4 = {8: v4("192.0.2.1"), 12: v4("198.51.100.2"), 22: 400_000, 21: 500_000, 1: 1500, 2: 3, 4: 6, 7: 443, 11: 5}
    values6: dict[int, int | bytes] = {
        27: v6("2001:db8::1"),
        28: v6("2001:db8::2"),
        22: 100,
        21: 200,
        1: 80,
        2: 1,
        4: 17,
        7: 53,
        11: 53,
    }
    datagram = v9(
        [
            template_set({300: V4_FIELDS, 301: V6_FIELDS}),
            data_set(300, [record(V4_FIELDS, values4)]),
            data_set(301, [record(V6_FIELDS, values6)]),
        ],
        uptime_ms=600_000,
        source_id=42,
    )
    decoder = Decoder()
    got = decoded(datagram, decoder=decoder)
    assert got == [
        {"src": "192.0.2.1", "dst": "198.51.100.2", "bytes": 1500, "packets": 3, "protocol": 6, "src_port": 443,
         "dst_port": 5, "start_ms": EXPORT_MS - 200_000, "end_ms": EXPORT_MS - 100_000, "sampling": 1,
         "exporter": 0, "domain": 42},
        {"src": "2001:db8::1", "dst": "2001:db8::2", "bytes": 80, "packets": 1, "protocol": 17, "src_port": 53,
         "dst_port": 53, "start_ms": EXPORT_MS - 599_900, "end_ms": EXPORT_MS - 599_800, "sampling": 1,
         "exporter": 0, "domain": 42},
    ]  # fmt: skip
    assert decoder.templates() == 2
    assert drops(decoder) == {}


def test_data_before_its_template_is_unknown_and_later_data_decodes() -> None:
    values = {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 100, 2: 1}
    decoder = Decoder()
    early = v9([data_set(300, [record(V4_FIELDS, values)]), template_set({300: V4_FIELDS})])
    later = v9([data_set(300, [record(V4_FIELDS, values)] * 2)])
    assert len(decoded(early, later, decoder=decoder)) == 2
    assert drops(decoder) == {"unknown_template": 1}
    # Templates belong to their exporter and domain: the same data from elsewhere is unknown.
    decoder.decode(later, "192.0.2.99", 0)
    decoder.decode(v9([data_set(300, [record(V4_FIELDS, values)])], source_id=5), "192.0.2.1", 0)
    assert len(decoder.take()) == 0
    assert drops(decoder) == {"unknown_template": 3}


def test_a_template_replaced_mid_batch_decodes_each_set_with_its_own_layout() -> None:
    old: list[Field] = [(8, 4), (12, 4), (1, 4), (2, 4)]
    new: list[Field] = [(2, 8), (1, 8), (12, 4), (8, 4), (7, 2), (11, 2)]
    decoder = Decoder()
    for datagram in (
        v9(
            [
                template_set({300: old}),
                data_set(300, [record(old, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 10, 2: 1})]),
            ]
        ),
        v9(
            [
                template_set({300: new}),
                data_set(300, [record(new, {8: v4("10.0.0.3"), 12: v4("10.0.0.4"), 1: 20, 2: 2, 7: 9})]),
            ]
        ),
        v9([data_set(300, [record(new, {8: v4("10.0.0.5"), 12: v4("10.0.0.6"), 1: 30, 2: 3, 11: 8})])]),
        v9([template_set({300: old})]),  # and changed back: still one template
    ):
        decoder.decode(datagram, "192.0.2.1", 0)
    got = sorted(
        (r["src"], r["dst"], r["bytes"], r["packets"], r["src_port"], r["dst_port"]) for r in rows(decoder.take())
    )
    assert got == [
        ("10.0.0.1", "10.0.0.2", 10, 1, 0, 0),
        ("10.0.0.3", "10.0.0.4", 20, 2, 9, 0),
        ("10.0.0.5", "10.0.0.6", 30, 3, 0, 8),
    ]
    assert decoder.templates() == 1
    assert drops(decoder) == {}


def test_ipfix_template_withdrawal() -> None:
    fields: list[Field] = [(8, 4), (12, 4), (1, 8), (2, 8)]
    data = data_set(400, [record(fields, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 5, 2: 1})])
    decoder = Decoder()
    decoder.decode(ipfix([template_set({400: fields, 401: fields, 402: fields}, version=10), data]), "192.0.2.1", 0)
    assert decoder.templates() == 3
    # Withdrawn after its data in the same message: the data already buffered still decodes.
    decoder.decode(ipfix([data, template_set({400: []}, version=10), data]), "192.0.2.1", 0)
    assert decoder.templates() == 2
    assert len(decoder.take()) == 2
    assert drops(decoder) == {"unknown_template": 1}
    decoder.decode(ipfix([template_set({2: []}, version=10)]), "192.0.2.1", 0)  # id 2: all data templates
    assert decoder.templates() == 0


def test_sampling_from_options_data_per_record_and_by_sampler() -> None:
    fields: list[Field] = [(8, 4), (12, 4), (1, 4), (2, 4)]
    with_rate: list[Field] = [*fields, (34, 4)]
    with_sampler: list[Field] = [*fields, (48, 1)]
    flow = {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 100, 2: 2}
    decoder = Decoder()
    options = v9([
        template_set({300: fields, 301: with_rate, 302: with_sampler}),
        v9_options_template(256, [(2, 4)], [(34, 4), (35, 1)]),  # softflowd's: a rate for the whole exporter
        v9_options_template(257, [(1, 4)], [(48, 1), (49, 1), (50, 4)]),  # Cisco's: a rate per sampler id
        data_set(256, [record([(2, 4), (34, 4), (35, 1)], {34: 100})]),
        data_set(257, [record([(1, 4), (48, 1), (49, 1), (50, 4)], {48: 7, 50: 1000})]),
    ])  # fmt: skip
    flows = v9([
        data_set(300, [record(fields, flow)]),
        data_set(301, [record(with_rate, {**flow, 34: 5}), record(with_rate, {**flow, 34: 0})]),
        data_set(302, [record(with_sampler, {**flow, 48: 7}), record(with_sampler, {**flow, 48: 9})]),
    ])  # fmt: skip
    got = [(r["sampling"], r["bytes"], r["packets"]) for r in decoded(options, flows, decoder=decoder)]
    assert got == [(100, 10_000, 200), (5, 500, 10), (100, 10_000, 200), (1000, 100_000, 2000), (100, 10_000, 200)]
    assert decoder.templates() == 3  # options templates are not data templates
    assert drops(decoder) == {}


def test_ipfix_packet_sampling_and_init_time_from_options_data() -> None:
    fields: list[Field] = [(8, 4), (12, 4), (22, 4), (21, 4), (1, 4), (2, 4)]
    # softflowd's IPFIX options: scope meteringProcessId; init time, packet interval and space, algorithm, name.
    option_fields: list[Field] = [(160, 8), (305, 4), (306, 4), (304, 2), (82, 16)]
    init_ms = EXPORT_MS - 3_600_000  # up for an hour
    options: dict[int, int | bytes] = {160: init_ms, 305: 1, 306: 9, 82: b"eth0".ljust(16, b"\0")}  # 1 packet in 10
    decoder = Decoder()
    datagram = ipfix([
        template_set({256: fields}, version=10),
        ipfix_options_template(257, [(143, 4)], option_fields),
        data_set(257, [record([(143, 4), *option_fields], options)]),
        data_set(256, [record(fields, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 22: 1_000, 21: 3_000, 1: 70, 2: 1})]),
    ], domain=3)  # fmt: skip
    [flow] = decoded(datagram, decoder=decoder)
    assert (flow["sampling"], flow["bytes"], flow["packets"], flow["domain"]) == (10, 700, 10, 3)
    assert (flow["start_ms"], flow["end_ms"]) == (init_ms + 1_000, init_ms + 3_000)

    # Without an init time an exporter's uptime is unknown: such flows take the export time.
    [flow] = decoded(ipfix([template_set({256: fields}, version=10), data_set(256, [record(fields, {8: 1, 12: 2})])]))
    assert (flow["start_ms"], flow["end_ms"]) == (EXPORT_MS, EXPORT_MS)


def test_ipfix_selector_rates_with_variable_length_options_and_options_withdrawal() -> None:
    fields: list[Field] = [(8, 4), (12, 4), (1, 4), (2, 4), (302, 8)]
    # A selector report: the selector id as scope, a name of variable length, then the random interval.
    scopes: list[Field] = [(302, 8)]
    options: list[Field] = [(335, VARIABLE), (50, 4)]
    decoder = Decoder(max_templates=2)  # also the most samplers a domain keeps
    reports = [record([*scopes, *options], {302: n, 335: b"x" * (n * 200), 50: 10 * n}) for n in (1, 2, 3)]
    flows = [record(fields, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 10, 2: 1, 302: n}) for n in (1, 2, 3)]
    datagram = ipfix([
        template_set({256: fields}, version=10),
        ipfix_options_template(257, scopes, options),
        data_set(257, reports),
        data_set(256, flows),
    ])  # fmt: skip
    # Three selectors, room for two: the oldest is forgotten.
    assert [(r["sampling"], r["bytes"]) for r in decoded(datagram, decoder=decoder)] == [(1, 10), (20, 200), (30, 300)]

    withdraw_one = ipfix([_set(3, struct.pack("!HH", 257, 0)), data_set(257, reports)])
    assert decoded(withdraw_one, decoder=decoder) == []
    assert drops(decoder) == {"unknown_template": 1}
    decoder.decode(ipfix([ipfix_options_template(257, scopes, options)]), "192.0.2.1", 0)
    decoder.decode(ipfix([_set(3, struct.pack("!HH", 3, 0)), data_set(257, reports)]), "192.0.2.1", 0)  # all
    assert drops(decoder) == {"unknown_template": 2}
    assert decoder.templates() == 1


def test_ipfix_absolute_time_fields() -> None:
    base: list[Field] = [(8, 4), (12, 4)]
    flow = {8: v4("10.0.0.1"), 12: v4("10.0.0.2")}
    start, end = EXPORT_MS - 5_250, EXPORT_MS - 750
    cases: list[tuple[list[Field], dict[int, int | bytes], tuple[int, int]]] = [
        ([(152, 8), (153, 8)], {152: start, 153: end}, (start, end)),
        ([(150, 4), (151, 4)], {150: start // 1000, 151: end // 1000}, (start // 1000 * 1000, end // 1000 * 1000)),
        ([(154, 8), (155, 8)], {154: ntp(start), 155: ntp(end)}, (start, end)),
        ([(156, 8), (157, 8)], {156: ntp(start), 157: ntp(end)}, (start, end)),
        ([(158, 4), (159, 4)], {158: 5_250_000, 159: 750_000}, (start, end)),
        ([(153, 8)], {153: end}, (end, end)),  # only an end: the flow is an instant
        ([], {}, (EXPORT_MS, EXPORT_MS)),
    ]
    for extra, times, want in cases:
        fields = base + extra
        datagram = ipfix([template_set({256: fields}, version=10), data_set(256, [record(fields, {**flow, **times})])])
        [got] = decoded(datagram)
        assert (got["start_ms"], got["end_ms"]) == want, extra


def ntp(unix_ms: int) -> int:
    seconds, ms = divmod(unix_ms, 1000)
    return (seconds + NTP_OFFSET_S) << 32 | ((ms << 32) + 999) // 1000  # round up so truncation gives ms back


def test_ipfix_enterprise_fields_are_skipped_and_never_read_as_iana_ones() -> None:
    fields: list[Field] = [
        (8, 4, 9),  # Cisco's element number 8, not sourceIPv4Address
        (1, 8, 29305),  # an enterprise counter numbered like octetDeltaCount
        (8, 4),
        (12, 4),
        (1, 8),
        (2, 4),
        (100, 6, 2636),
    ]
    values = {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 1234, 2: 5}
    raw = record(fields, values)
    raw = b"\xff" * 12 + raw[12:-6] + b"\xee" * 6  # the enterprise values are junk we must not read
    [flow] = decoded(ipfix([template_set({256: fields}, version=10), data_set(256, [raw])]))
    assert (flow["src"], flow["dst"], flow["bytes"], flow["packets"]) == ("10.0.0.1", "10.0.0.2", 1234, 5)


def test_ipfix_variable_length_fields() -> None:
    fields: list[Field] = [(8, 4), (82, VARIABLE), (12, 4), (96, VARIABLE), (1, 8), (2, 4), (7, 2), (11, 2)]
    decoder = Decoder()
    records = [
        record(fields, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 82: b"ge-0/0/1", 96: b"", 1: 10, 2: 1, 7: 1, 11: 2}),
        record(fields, {8: v4("10.0.0.3"), 12: v4("10.0.0.4"), 82: b"x" * 300, 96: b"http", 1: 20, 2: 2, 7: 3, 11: 4}),
    ]
    got = decoded(ipfix([template_set({256: fields}, version=10), data_set(256, records)]), decoder=decoder)
    assert [(r["src"], r["dst"], r["bytes"], r["packets"], r["src_port"], r["dst_port"]) for r in got] == [
        ("10.0.0.1", "10.0.0.2", 10, 1, 1, 2),
        ("10.0.0.3", "10.0.0.4", 20, 2, 3, 4),
    ]
    assert drops(decoder) == {}


def test_reduced_size_counters_and_mixed_address_families() -> None:
    fields: list[Field] = [(8, 4), (12, 4), (27, 16), (28, 16), (1, 3), (2, 5), (4, 2)]
    records = [
        record(fields, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 0xABCDEF, 2: 0x0102030405, 4: 6}),
        record(fields, {27: v6("2001:db8::7"), 28: v6("::1"), 1: 7, 2: 1, 4: 58}),
    ]
    got = decoded(v9([template_set({300: fields}), data_set(300, records)]))
    assert [(r["src"], r["dst"], r["bytes"], r["packets"], r["protocol"]) for r in got] == [
        ("10.0.0.1", "10.0.0.2", 0xABCDEF, 0x0102030405, 6),
        ("2001:db8::7", "::1", 7, 1, 58),
    ]


def test_templates_without_addresses_are_counted_once_per_data_set() -> None:
    fields: list[Field] = [(1, 4), (2, 4), (27, 20), (8, 3)]  # addresses at lengths no address has
    decoder = Decoder()
    datagram = v9([template_set({300: fields}), data_set(300, [record(fields, {1: 1, 2: 1})] * 5)])
    assert decoded(datagram, datagram, decoder=decoder) == []
    assert drops(decoder) == {"no_addresses": 2}
    assert decoder.templates() == 1


def test_limits_on_templates_domains_and_exporters() -> None:
    decoder = Decoder(max_exporters=3, max_templates=1024)
    fields: list[Field] = [(8, 4), (12, 4)]
    for first in range(256, 10_256, 500):  # 10,000 templates, 500 a message (by hand: scapy takes seconds)
        body = b"".join(struct.pack("!HH", tid, len(fields)) + _specifiers(fields) for tid in range(first, first + 500))
        decoder.decode(ipfix([_set(2, body)]), "192.0.2.1", 0)
    assert decoder.templates() == 1024
    assert decoder.dropped["too_many_templates"] == 10_000 - 1024
    # A template already held may still change.
    decoder.decode(ipfix([template_set({256: [(27, 16), (28, 16)]}, version=10)]), "192.0.2.1", 0)
    assert decoder.dropped["too_many_templates"] == 10_000 - 1024

    for domain in range(100):
        decoder.decode(v9([template_set({300: fields})], source_id=domain), "192.0.2.2", 0)
    assert decoder.templates() == 1024 + 64  # 64 domains per exporter at most
    assert decoder.dropped["too_many_templates"] == 10_000 - 1024 + 36

    for n in range(10):
        decoder.decode(v9([template_set({300: fields})]), f"198.51.100.{n}", 0)
    assert decoder.exporters == ["192.0.2.1", "192.0.2.2", "198.51.100.0"]
    assert decoder.dropped["too_many_exporters"] == 9


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "short"),
        (b"\x00", "short"),
        (b"\x00\x09" + bytes(17), "short"),
        (b"\x00\x0a" + bytes(10), "short"),
        (b"\x00\x05" + bytes(10), "short"),
        (b"\x00\x07" + bytes(40), "version"),
        (b"\xff\xff", "version"),
        (struct.pack("!HHIII", 10, 100, EXPORT_S, 0, 0), "length"),  # says 100 bytes, holds 16
        (v9([]) + struct.pack("!HH", 300, 0), "malformed_set"),
        (v9([]) + struct.pack("!HH", 300, 3), "malformed_set"),
        (v9([]) + struct.pack("!HH", 300, 64) + bytes(8), "malformed_set"),
        (v9([]) + struct.pack("!HH", 7, 4), "malformed_set"),  # a reserved set id
        (v9([]) + b"\x01\x02", "malformed_set"),  # junk after the last set
        (v9([struct.pack("!HHHH", 0, 12, 300, 9) + bytes(4)]), "malformed_template"),  # 9 fields in 4 bytes
        (v9([struct.pack("!HHHHHH", 0, 12, 300, 1, 8, 0)]), "malformed_template"),  # a record of 0 bytes
        (v9([struct.pack("!HHHHHH", 0, 12, 5, 1, 8, 4)]), "malformed_template"),  # a template id under 256
        (v9([struct.pack("!HHHH", 0, 8, 300, 0)]), "malformed_template"),  # v9 has no withdrawals
        (ipfix([struct.pack("!HHHHHH", 2, 12, 300, 1, 0x8008, 4)]), "malformed_template"),  # no room for its PEN
        (ipfix([_set(3, struct.pack("!HHHHH", 300, 1, 0, 8, 4))]), "malformed_template"),  # no scope field
        (v9([_set(1, struct.pack("!HHH", 300, 2, 4) + bytes(6))]), "malformed_template"),  # lengths not x4
        (v9([_set(1, struct.pack("!HHHHH", 300, 0, 4, 34, 0))]), "malformed_template"),  # options of 0 bytes
    ],
)
def test_malformed_datagrams_are_counted(datagram: bytes, reason: str) -> None:
    decoder = Decoder()
    decoder.decode(datagram, "192.0.2.1", 0)
    assert len(decoder.take()) == 0
    assert drops(decoder) == {reason: 1}


def test_zero_length_fields_and_padding_are_harmless() -> None:
    fields: list[Field] = [(8, 4), (99, 0), (12, 4), (1, 4)]
    padded_templates = _set(0, struct.pack("!HH", 300, len(fields)) + _specifiers(fields) + bytes(4))
    data = data_set(300, [record(fields, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 9})] * 3)
    decoder = Decoder()
    got = decoded(v9([padded_templates, data]) + bytes(3), decoder=decoder)  # padding in a set and after the last
    assert [(r["src"], r["bytes"]) for r in got] == [("10.0.0.1", 9)] * 3
    assert drops(decoder) == {}


def test_flow_columns_empty_and_concat() -> None:
    empty = FlowColumns.empty()
    assert len(empty) == 0
    assert empty.src_hi.dtype == np.uint64 and empty.protocol.dtype == np.uint8 and empty.start_ms.dtype == np.int64
    fields: list[Field] = [(8, 4), (12, 4), (1, 4)]
    decoder = Decoder()
    decoder.decode(v9([template_set({300: fields}), data_set(300, [record(fields, {1: 5})] * 2)]), "192.0.2.1", 0)
    part = decoder.take()
    joined = FlowColumns.concat([part, empty, part])
    assert len(joined) == 4
    assert joined.bytes.tolist() == [5] * 4
    assert len(FlowColumns.concat([])) == 0
    assert len(decoder.take()) == 0  # take() empties the buffer
    assert decoder.records == 2


def test_a_flood_of_junk_from_many_exporters_stays_bounded() -> None:
    rng = random.Random(7)
    decoder = Decoder(max_exporters=50, max_templates=16)
    for n in range(20_000):
        size = rng.choice([0, 1, 2, 20, 24, 100, 1400])
        junk = rng.randbytes(size)
        if size >= 2 and n % 2:
            junk = struct.pack("!H", rng.choice([5, 9, 10])) + junk[2:]
        if n % 7 == 0:  # junk hardly ever takes an exporter slot: a template does
            header = struct.pack("!HHIIII", 9, 1, 600_000, EXPORT_S, n, rng.randrange(100))
            body = struct.pack("!HH", rng.randrange(256, 65536), len(V4_FIELDS)) + _specifiers(V4_FIELDS)
            junk = header + _set(0, body) + junk
        decoder.decode(junk, f"10.{n % 256}.{n // 256 % 256}.1", 0)
        if n % 1000 == 0:
            decoder.take()
    decoder.take()
    assert len(decoder.exporters) == 50
    assert decoder.datagrams == 20_000
    assert decoder.templates() <= 50 * 64 * 16
    assert decoder.dropped["too_many_exporters"] > 0
    assert set(decoder.dropped) == REASONS


# Exporter slots: only state takes one, and the fleet's own exporters always get theirs.

EMPTY_V9 = struct.pack("!HHIIII", 9, 0, 600_000, EXPORT_S, 0, 0)  # a header, no sets: 20 bytes
EMPTY_IPFIX = struct.pack("!HHIII", 10, 16, EXPORT_S, 0, 0)
V4_TEMPLATE = v9([template_set({300: V4_FIELDS})])
V4_DATA = v9([data_set(300, [record(V4_FIELDS, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 100, 2: 1})])])


def test_datagrams_that_carry_nothing_take_no_exporter_slot() -> None:
    decoder = Decoder(max_exporters=2)
    nothing = [
        EMPTY_V9,
        EMPTY_V9 + bytes(3),  # and padding
        EMPTY_IPFIX,
        v5([], unixSecs=EXPORT_S),  # no records
        ipfix([template_set({400: []}, version=10)]),  # withdrawing what it never sent
        v9([struct.pack("!HHHH", 0, 8, 300, 0)]),  # a malformed template
        V4_DATA,  # data for a template never sent
    ]
    for n in range(5000):
        decoder.decode(nothing[n % len(nothing)], f"10.{n // 256}.{n % 256}.9", 0)
    assert decoder.exporters == []
    assert drops(decoder) == {"unknown_template": 714, "malformed_template": 714}
    # The table is still empty: real exporters heard for the first time are admitted.
    for exporter in ("192.0.2.1", "192.0.2.2"):
        assert len(decoded(V4_TEMPLATE, V4_DATA, decoder=decoder, exporter=exporter)) == 1
    assert decoder.exporters == ["192.0.2.1", "192.0.2.2"]
    # Once full, a source that sends nothing is not even counted; one that needs state is refused, data or not.
    decoder.decode(EMPTY_V9, "198.51.100.1", 0)
    assert "too_many_exporters" not in drops(decoder)
    for datagram in (V4_TEMPLATE, V4_DATA, v5([{"src": "10.0.0.1", "dst": "10.0.0.2"}], unixSecs=EXPORT_S)):
        decoder.decode(datagram, "198.51.100.1", 0)
    assert decoder.dropped["too_many_exporters"] == 3
    assert decoder.exporters == ["192.0.2.1", "192.0.2.2"]


def test_reserved_exporters_are_always_admitted_and_never_counted() -> None:
    fleet = ["192.0.2.10", "2001:db8::10", "192.0.2.11"]
    decoder = Decoder(max_exporters=2, reserved=fleet)
    for n in range(10):  # spoofed sources that each send a real template fill the table
        decoder.decode(V4_TEMPLATE, f"198.51.100.{n}", 0)
    assert decoder.exporters == ["198.51.100.0", "198.51.100.1"]
    assert decoder.dropped["too_many_exporters"] == 8
    for exporter in fleet:
        [flow] = decoded(V4_TEMPLATE, V4_DATA, decoder=decoder, exporter=exporter)
        assert decoder.exporters[flow["exporter"]] == exporter
    # The fleet's exporters took no slot of the two: the table is still full for anyone else.
    decoder.decode(V4_TEMPLATE, "198.51.100.99", 0)
    assert decoder.dropped["too_many_exporters"] == 9
    assert decoder.exporters == ["198.51.100.0", "198.51.100.1", *fleet]


_SENDS = {
    "empty": EMPTY_V9,
    "template": V4_TEMPLATE,
    "data": V4_DATA,
    "v5": v5([{"src": "10.0.0.1", "dst": "10.0.0.2"}], unixSecs=EXPORT_S),
    "v5-empty": v5([], unixSecs=EXPORT_S),
}


@FUZZ
@given(
    st.integers(0, 4),
    st.lists(st.tuples(st.integers(0, 9), st.sampled_from(sorted(_SENDS))), max_size=60),
)
def test_exporter_slots_follow_state(max_exporters: int, sends: list[tuple[int, str]]) -> None:
    reserved = {f"192.0.2.{n}" for n in range(3)}
    decoder = Decoder(max_exporters=max_exporters, reserved=reserved)
    admitted: list[str] = []
    for source, kind in sends:
        exporter = f"192.0.2.{source}"
        decoder.decode(_SENDS[kind], exporter, 0)
        needs_state = kind in ("template", "v5")
        counted = sum(e not in reserved for e in admitted)
        if needs_state and exporter not in admitted and (exporter in reserved or counted < max_exporters):
            admitted.append(exporter)
    assert decoder.exporters == admitted
    decoder.take()


# Bounded template memory.


def _template_datagram(template_id: int, fields: Sequence[Field], *, domain: int = 0, options: bool = False) -> bytes:
    if options:
        return ipfix([ipfix_options_template(template_id, fields[:1], fields[1:])], domain=domain)
    return ipfix([_set(2, struct.pack("!HH", template_id, len(fields)) + _specifiers(fields))], domain=domain)


@pytest.mark.parametrize("version", [9, 10])
def test_templates_of_more_than_256_fields_are_malformed(version: int) -> None:
    fields: list[Field] = [(8, 4), (12, 4), (1, 4), *[(99, 2)] * 253]
    values = {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 7}

    def export(sets: list[bytes]) -> bytes:
        return v9(sets) if version == 9 else ipfix(sets)

    decoder = Decoder()
    sets = [_set(2 if version == 10 else 0, struct.pack("!HH", 300, 256) + _specifiers(fields))]
    [flow] = decoded(export([*sets, data_set(300, [record(fields, values)])]), decoder=decoder)
    assert flow["bytes"] == 7
    long = [*fields, (99, 2)]
    sets = [_set(2 if version == 10 else 0, struct.pack("!HH", 301, 257) + _specifiers(long))]
    assert decoded(export([*sets, data_set(301, [record(long, values)])]), decoder=decoder) == []
    options = v9_options_template if version == 9 else ipfix_options_template
    decoder.decode(export([options(302, [(1, 4)], [(34, 4)] * 256)]), "192.0.2.1", 0)  # 257 with its scope
    assert drops(decoder) == {"malformed_template": 2, "unknown_template": 1}
    assert decoder.templates() == 1


def test_templates_held_over_all_exporters_are_capped_and_the_fleets_are_not() -> None:
    fields: list[Field] = [(8, 4), (12, 4)]
    decoder = Decoder(reserved=["192.0.2.1"])
    many = b"".join(struct.pack("!HH", tid, 2) + _specifiers(fields) for tid in range(256, 256 + 1024))
    for n in range(40):  # 1,024 templates each (the most an exporter holds): 32 fill the 32,768
        decoder.decode(ipfix([_set(2, many)]), f"198.51.{n}.1", 0)
    assert decoder.templates() == 32_768
    assert decoder.dropped["too_many_templates"] == 8 * 1024
    assert len(decoder.exporters) == 32  # refused templates took no slot either
    # The fleet's exporter still holds its own 1,024 (and no more).
    decoder.decode(ipfix([_set(2, many)]), "192.0.2.1", 0)
    decoder.decode(_template_datagram(5000, fields, domain=1), "192.0.2.1", 0)
    assert decoder.templates() == 32_768 + 1024
    assert decoder.dropped["too_many_templates"] == 8 * 1024 + 1
    # Withdrawn templates make room again.
    decoder.decode(ipfix([template_set({256: [], 257: []}, version=10)]), "198.51.0.1", 0)
    for n in range(3):
        decoder.decode(_template_datagram(256, fields), f"203.0.113.{n}", 0)
    assert decoder.templates() == 32_768 + 1024
    assert decoder.dropped["too_many_templates"] == 8 * 1024 + 2
    assert decoder.exporters[-2:] == ["203.0.113.0", "203.0.113.1"]


def test_an_exporters_templates_are_capped_over_all_its_domains_and_withdrawn_domains_are_forgotten() -> None:
    fields: list[Field] = [(8, 4), (12, 4)]
    decoder = Decoder(max_templates=10)
    for domain in range(20):
        decoder.decode(_template_datagram(256, fields, domain=domain), "192.0.2.1", 0)
    assert decoder.templates() == 10
    assert drops(decoder) == {"too_many_templates": 10}
    decoder = Decoder()
    for cycle in range(5):  # 5 x 64 domains, each withdrawn whole before the next: never more than 64 held
        for domain in range(64):
            withdraw = template_set({2: []}, version=10)
            decoder.decode(_template_datagram(256, fields, domain=cycle * 64 + domain), "192.0.2.1", 0)
            decoder.decode(ipfix([withdraw], domain=cycle * 64 + domain), "192.0.2.1", 0)
    assert drops(decoder) == {}
    assert decoder.templates() == 0


def _worst_templates(count: int, *, options: bool) -> list[bytes]:
    """Templates as costly to hold as any: 256 fields, alternately of variable length, every readable IE at a
    length it can be read at, each alone in its domain (64 an exporter), no two alike."""
    readable: list[Field] = [(8, 4), (12, 4), (27, 16), (28, 16), (154, 8), (155, 8), (156, 8), (157, 8)]
    readable += [(ie, 3) for ie in (1, 2, 4, 7, 11, 21, 22, 32, 34, 48, 50, 139, 150, 151, 152, 153, 158, 159, 302)]
    out = []
    for n in range(count):
        fields = [(302, 8), (34, 4)] if options else list(readable)
        while len(fields) < 256:
            fields += [(82, VARIABLE), (1000 + n % 7, 1 + n % 5)]
        out.append(_template_datagram(256 + n % 1000, fields[:256], domain=n % 64, options=options))
    return out


@pytest.mark.parametrize("options", [False, True])
def test_a_template_held_costs_under_2_kb_at_worst(options: bool) -> None:
    datagrams = _worst_templates(1000, options=options)
    decoder = Decoder()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, datagram in enumerate(datagrams):
            decoder.decode(datagram, f"10.0.{n // 64}.1", 0)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert drops(decoder) == {}
    assert held / len(datagrams) < 2048  # what the bound in Decoder's docstring takes


# Counters and times not believed.

COUNTED: list[Field] = [(8, 4), (12, 4), (1, 8), (2, 8), (34, 4)]  # octets, packets and a rate, per record


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1) | st.sampled_from([2**50, 2**50 + 1, 2**40, 2**33 + 1, 2**64 - 1]),
            st.integers(0, 2**64 - 1) | st.sampled_from([2**40, 2**40 + 1, 2**9, 0]),
            st.integers(0, 2**32 - 1) | st.sampled_from([0, 1, 2**31, 2**10]),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_implausible_counters_are_dropped_never_wrapped(flows: list[tuple[int, int, int]]) -> None:
    records = [record(COUNTED, {8: 1, 12: 2, 1: octets, 2: packets, 34: rate}) for octets, packets, rate in flows]
    decoder = Decoder()
    datagram = v9([template_set({300: COUNTED}), data_set(300, records)])
    got = [(r["bytes"], r["packets"], r["sampling"]) for r in decoded(datagram, decoder=decoder)]
    expected = []
    for octets, packets, rate in flows:
        rate = rate or 1
        if octets * rate <= 2**50 and packets * rate <= 2**40:
            expected.append((octets * rate, packets * rate, rate))
    assert got == expected
    assert decoder.dropped["implausible_counter"] == len(flows) - len(expected)
    assert sum(decoder.dropped.values()) == len(flows) - len(expected)


def test_the_testers_counters() -> None:
    flows = [(2**64 - 1, 1, 0), (2**33 + 1, 1, 2**31), (2**50, 2**40, 1), (2**49, 2**39, 2), (2**49, 1, 3)]
    records = [record(COUNTED, {8: 1, 12: 2, 1: octets, 2: packets, 34: rate}) for octets, packets, rate in flows]
    decoder = Decoder()
    got = decoded(v9([template_set({300: COUNTED}), data_set(300, records)]), decoder=decoder)
    assert [(r["bytes"], r["packets"]) for r in got] == [(2**50, 2**40), (2**50, 2**40)]
    assert drops(decoder) == {"implausible_counter": 3}


EARLIEST_MS = 631_152_000_000  # 1990-01-01
DAY_MS = 86_400_000
INT64 = st.integers(-(2**63), 2**63 - 1)


@FUZZ
@given(
    st.lists(
        st.tuples(
            INT64 | st.integers(EARLIEST_MS - 10, EXPORT_MS + DAY_MS + 10),
            INT64 | st.integers(EARLIEST_MS - 10, EXPORT_MS + DAY_MS + 10),
        ),
        min_size=1,
        max_size=20,
    ),
    st.booleans(),
)
def test_absolute_times_far_from_the_export_time_are_bad(times: list[tuple[int, int]], end_only: bool) -> None:
    fields: list[Field] = [(8, 4), (12, 4), (153, 8)] if end_only else [(8, 4), (12, 4), (152, 8), (153, 8)]
    records = [record(fields, {8: 1, 12: 2, 152: start % 2**64, 153: end % 2**64}) for start, end in times]
    decoder = Decoder()
    datagram = ipfix([template_set({256: fields}, version=10), data_set(256, records)])
    got = [(r["start_ms"], r["end_ms"]) for r in decoded(datagram, decoder=decoder)]

    def believed(ms: int) -> bool:
        return EARLIEST_MS <= ms <= EXPORT_MS + DAY_MS

    expected = [
        (end if end_only else start, end) for start, end in times if believed(end) and (end_only or believed(start))
    ]
    assert got == expected
    assert drops(decoder) == ({"bad_time": len(times) - len(expected)} if len(expected) < len(times) else {})


def test_bad_times_from_every_encoding() -> None:
    base: list[Field] = [(8, 4), (12, 4)]
    flow = {8: v4("10.0.0.1"), 12: v4("10.0.0.2")}
    year_ms = 365 * DAY_MS
    cases: list[tuple[list[Field], dict[int, int | bytes], bool]] = [
        ([(153, 8)], {153: 2**63 - 1}, False),  # the tester's flowEndMilliseconds
        ([(153, 8)], {153: 2**64 - 1}, False),
        ([(153, 8)], {153: EXPORT_MS + DAY_MS}, True),  # a day ahead of the export: a clock off, believed
        ([(153, 8)], {153: EXPORT_MS + DAY_MS + 1}, False),
        ([(153, 8)], {153: EARLIEST_MS - 1}, False),
        ([(152, 8), (153, 8)], {152: 0, 153: EXPORT_MS}, False),  # a start in 1970
        ([(151, 4)], {151: (EXPORT_MS + 2 * year_ms) // 1000}, False),
        ([(155, 8)], {155: ntp(EXPORT_MS + 2 * DAY_MS)}, False),
        ([(157, 8)], {157: ntp(EXPORT_MS - 10 * year_ms)}, True),  # old, but for the collector to judge
        ([(159, 8)], {159: 2**63}, False),  # a delta of 8 bytes reaching before 1990
        ([(159, 4)], {159: 2**32 - 1}, True),
    ]
    for extra, times, believed in cases:
        fields = base + extra
        decoder = Decoder()
        datagram = ipfix([template_set({256: fields}, version=10), data_set(256, [record(fields, {**flow, **times})])])
        got = decoded(datagram, decoder=decoder)
        assert (len(got), drops(decoder)) == ((1, {}) if believed else (0, {"bad_time": 1})), (extra, times)


def test_relative_times_follow_the_header_clock() -> None:
    # A v9 header decades off is not bad_time by itself: its flows end just before its export time (the
    # collector judges that against its own clock), unless that is before 1990.
    values = {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 22: 590_000, 21: 599_000, 1: 10, 2: 1}
    for secs, believed in ((EXPORT_S + 40 * 365 * 86_400, True), (EARLIEST_MS // 1000 + 100_000, True), (100, False)):
        decoder = Decoder()
        datagram = v9([template_set({300: V4_FIELDS}), data_set(300, [record(V4_FIELDS, values)])], secs=secs)
        got = decoded(datagram, decoder=decoder)
        assert [r["end_ms"] for r in got] == ([secs * 1000 - 1_000] if believed else [])
        assert drops(decoder) == ({} if believed else {"bad_time": 1})


# IPFIX variable-length fields that claim more than their set holds.

VARIABLE_FIELDS: list[Field] = [(8, 4), (82, VARIABLE), (12, 4), (1, 4)]


def _variable_set(tail: bytes) -> bytes:
    good = [record(VARIABLE_FIELDS, {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 82: b"ge-0/0/0", 1: n}) for n in (1, 2)]
    body = b"".join(good) + tail
    return struct.pack("!HH", 256, 4 + len(body)) + body


@pytest.mark.parametrize(
    ("tail", "counted"),
    [
        (b"", False),
        (bytes(3), False),  # padding
        (bytes(4) + b"\x00" + bytes(8), False),  # zeros that make a whole record (of zeros) and no padding
        (struct.pack("!IB", 1, 200) + b"x" * 20, True),  # claims 200 bytes, 20 follow
        (struct.pack("!IBH", 1, 255, 1000) + b"x" * 40, True),  # the same in the 3-byte form
        (struct.pack("!IB", 1, 255) + b"\x01", True),  # a 3-byte length cut short
        (struct.pack("!IB", 1, 2) + b"ab" + b"\x01\x02", True),  # the fixed fields after it cut short
        (b"\x01\x02\x03", True),  # not padding: padding is zeros
    ],
)
def test_a_record_running_past_its_set_is_counted(tail: bytes, counted: bool) -> None:
    decoder = Decoder()
    datagram = ipfix([template_set({256: VARIABLE_FIELDS}, version=10), _variable_set(tail)])
    got = decoded(datagram, decoder=decoder)
    assert [r["bytes"] for r in got][:2] == [1, 2]
    assert drops(decoder) == ({"malformed_set": 1} if counted else {})


# samplingProbability in options data.


def _probability_rate(encoded: bytes) -> tuple[int, dict[str, int]]:
    scope: list[Field] = [(149, 4)]
    option: list[Field] = [(311, len(encoded))]
    fields: list[Field] = [(8, 4), (12, 4), (1, 4)]
    decoder = Decoder()
    datagram = ipfix([
        ipfix_options_template(257, scope, option),
        data_set(257, [struct.pack("!I", 0) + encoded]),
        template_set({256: fields}, version=10),
        data_set(256, [record(fields, {8: 1, 12: 2, 1: 3})]),
    ])  # fmt: skip
    [flow] = decoded(datagram, decoder=decoder)
    assert flow["bytes"] == 3 * flow["sampling"]
    return flow["sampling"], drops(decoder)


@pytest.mark.parametrize(
    ("probability", "rate"),
    [(0.001, 1000), (1.0, 1), (0.3, 3), (0.4, 2), (1 / 3, 3), (0.0, 1), (-0.5, 1), (1.5, 1), (float("nan"), 1),
     (float("inf"), 1), (5e-324, 2**32 - 1), (2**-40, 2**32 - 1)],
)  # fmt: skip
def test_sampling_probability_gives_the_rate(probability: float, rate: int) -> None:
    assert _probability_rate(struct.pack("!d", probability)) == (rate, {})


def test_sampling_probability_in_reduced_size() -> None:
    assert _probability_rate(struct.pack("!f", 0.01)) == (100, {})
    assert _probability_rate(struct.pack("!H", 1)) == (1, {})  # no float at that length: ignored


@FUZZ
@given(st.floats(width=64))
def test_any_sampling_probability(probability: float) -> None:
    rate, dropped = _probability_rate(struct.pack("!d", probability))
    if 0 < probability <= 1:
        assert rate == (2**32 - 1 if probability < 1 / (2**32 - 1) else min(round(1 / probability), 2**32 - 1))
    else:
        assert rate == 1
    assert dropped == {}


# The netflow package as a second opinion on valid packets.

# IEs the netflow package can read, with the lengths it reads them at (IPFIX: whole 1/2/4/8-byte numbers only).
_V9_OTHERS: dict[int, list[int]] = {4: [1], 5: [1], 6: [1], 7: [2], 10: [2, 4], 11: [2], 14: [2, 4], 21: [4], 22: [4]}


@st.composite
def valid_exports(draw: st.DrawFn) -> tuple[int, list[Field], list[dict[int, int | bytes]]]:
    version = draw(st.sampled_from([9, 10]))
    counter_lengths = [1, 2, 3, 4, 5, 6, 7, 8] if version == 9 else [1, 2, 4, 8]
    family = draw(st.sampled_from([4, 6]))
    fields: list[Field] = [(8, 4), (12, 4)] if family == 4 else [(27, 16), (28, 16)]
    fields += [(1, draw(st.sampled_from(counter_lengths))), (2, draw(st.sampled_from(counter_lengths)))]
    for ie in draw(st.lists(st.sampled_from(sorted(_V9_OTHERS)), unique=True)):
        fields.append((ie, draw(st.sampled_from(_V9_OTHERS[ie]))))
    fields = draw(st.permutations(fields))
    records = []
    for _ in range(draw(st.integers(1, 20))):
        values: dict[int, int | bytes] = {}
        for ie, length in fields:
            values[ie] = (
                draw(st.binary(min_size=16, max_size=16)) if length == 16 else draw(st.integers(0, 256**length - 1))
            )
        records.append(values)
    return version, fields, records


@FUZZ
@given(valid_exports())
def test_agrees_with_the_netflow_package(export: tuple[int, list[Field], list[dict[int, int | bytes]]]) -> None:
    version, fields, records = export
    sets = [template_set({300: fields}, version=version), data_set(300, [record(fields, r) for r in records])]
    datagram = v9(sets) if version == 9 else ipfix(sets)
    # Hex text: the package would take bytes that happen to be valid UTF-8 for a hex dump.
    reference = netflow.parse_packet(datagram.hex(), {"netflow": {}, "ipfix": {}})
    names = (
        ("IN_BYTES", "IN_PKTS", "IPV4_SRC_ADDR", "IPV4_DST_ADDR", "IPV6_SRC_ADDR", "IPV6_DST_ADDR")
        if version == 9
        else ("octetDeltaCount", "packetDeltaCount", "sourceIPv4Address", "destinationIPv4Address",
              "sourceIPv6Address", "destinationIPv6Address")
    )  # fmt: skip
    octets, packets, src4, dst4, src6, dst6 = names

    def number(data: dict[str, Any], four: str, six: str) -> int:  # as a 128-bit IPv6 number, IPv4 mapped
        if four in data:
            return 0xFFFF00000000 | int(ipaddress.IPv4Address(data[four]))
        return int(ipaddress.IPv6Address(data[six]))

    expected = [
        (number(f.data, src4, src6), number(f.data, dst4, dst6), f.data[octets], f.data[packets])
        for f in reference.flows
    ]
    # Counters past a petabyte or a trillion packets are not believed (their times, relative, always are).
    plausible = [flow for flow in expected if flow[2] <= 1 << 50 and flow[3] <= 1 << 40]
    decoder = Decoder()
    decoder.decode(datagram, "192.0.2.1", 0)
    columns = decoder.take()
    got = [
        (int(columns.src_hi[i]) << 64 | int(columns.src_lo[i]), int(columns.dst_hi[i]) << 64 | int(columns.dst_lo[i]),
         int(columns.bytes[i]), int(columns.packets[i]))
        for i in range(len(columns))
    ]  # fmt: skip
    assert got == plausible
    assert drops(decoder) == ({"implausible_counter": len(expected) - len(plausible)} if got != expected else {})


# Hostile input: decode never raises, and what it keeps and throws away adds up.


def _corpus() -> list[tuple[bytes, int, list[int]]]:
    """Valid datagrams: (bytes, records in it, offsets where its sets start)."""
    fields = V4_FIELDS
    flow = {8: v4("10.0.0.1"), 12: v4("10.0.0.2"), 1: 100, 2: 1, 21: 5, 22: 4}
    out = []
    sets = [
        template_set({300: fields, 301: V6_FIELDS}),
        v9_options_template(256, [(2, 4)], [(34, 4)]),
        data_set(256, [record([(2, 4), (34, 4)], {34: 10})]),
        data_set(300, [record(fields, flow)] * 3),
        data_set(301, [record(V6_FIELDS, {27: v6("::1"), 28: v6("::2")})] * 2),
    ]
    starts = [20 + sum(len(s) for s in sets[:i]) for i in range(len(sets) + 1)]
    out.append((v9(sets), 5, starts))
    options: list[Field] = [(160, 8), (305, 4), (306, 4)]
    sets = [
        template_set({300: fields, 302: [(8, 4), (82, VARIABLE), (12, 4), (1, 2)]}, version=10),
        ipfix_options_template(257, [(143, 4)], options),
        data_set(257, [record([(143, 4), *options], {160: EXPORT_MS - 10_000, 305: 1, 306: 1})]),
        data_set(300, [record(fields, flow)] * 4),
        data_set(302, [record([(8, 4), (82, VARIABLE), (12, 4), (1, 2)], {8: 1, 82: b"eth0", 12: 2})] * 2),
    ]
    starts = [16 + sum(len(s) for s in sets[:i]) for i in range(len(sets) + 1)]
    out.append((ipfix(sets), 6, starts))
    scopes: list[Field] = [(302, 8)]
    selector: list[Field] = [(335, VARIABLE), (50, 4), (82, VARIABLE)]
    flow_fields: list[Field] = [(8, 4), (12, 4), (1, 4), (302, 8)]
    sets = [
        ipfix_options_template(257, scopes, selector),
        template_set({256: flow_fields}, version=10),
        data_set(257, [record([*scopes, *selector], {302: 1, 335: b"y" * 260, 50: 100, 82: b"ge-0"})] * 2),
        data_set(256, [record(flow_fields, {8: 1, 12: 2, 1: 3, 302: 1})] * 3),
    ]
    starts = [16 + sum(len(s) for s in sets[:i]) for i in range(len(sets) + 1)]
    out.append((ipfix(sets), 3, starts))
    out.append((v5([{"src": "10.0.0.1", "dst": "10.0.0.2"}] * 3, unixSecs=EXPORT_S), 3, []))
    return out


CORPUS = _corpus()


def _check(decoder: Decoder, columns: FlowColumns) -> None:
    assert set(decoder.dropped) == REASONS
    assert all(n >= 0 for n in decoder.dropped.values())
    sizes = {len(getattr(columns, f.name)) for f in dataclasses.fields(columns)}
    assert sizes == {len(columns)}
    assert all(int(i) < len(decoder.exporters) for i in np.unique(columns.exporter))


def _decode_one(datagram: bytes, *, primed_with: bytes | None = None) -> tuple[Decoder, FlowColumns, int]:
    """Decode a datagram (after a valid one that holds the templates, if given): the decoder, what the
    datagram gave, and how many discards it added."""
    decoder = Decoder()
    if primed_with is not None:
        decoder.decode(primed_with, "192.0.2.1", 0)
        decoder.take()
    before = sum(decoder.dropped.values())
    decoder.decode(datagram, "192.0.2.1", 0)
    columns = decoder.take()
    _check(decoder, columns)
    return decoder, columns, sum(decoder.dropped.values()) - before


def test_the_corpus_decodes_whole() -> None:
    for datagram, records, _ in CORPUS:
        _, columns, dropped = _decode_one(datagram)
        assert (len(columns), dropped) == (records, 0)


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(junk: bytes) -> None:
    _decode_one(junk)


@FUZZ
@given(st.sampled_from([5, 9, 10]), st.binary(max_size=3000), st.sampled_from(range(len(CORPUS))))
def test_random_bytes_after_a_valid_version_never_raise(version: int, junk: bytes, primer: int) -> None:
    datagram = struct.pack("!H", version) + junk
    _decode_one(datagram, primed_with=CORPUS[primer][0])


@FUZZ
@given(st.sampled_from(range(len(CORPUS))), st.data())
def test_truncated_datagrams_lose_nothing_uncounted(which: int, data: st.DataObject) -> None:
    datagram, records, starts = CORPUS[which]
    cut = data.draw(st.integers(0, len(datagram) - 1))
    _, columns, dropped = _decode_one(datagram[:cut])
    assert len(columns) <= records
    # v9 has no total length: a datagram cut between sets (give or take a set header's few bytes, which may
    # be zeros, as padding is) cannot be told from a shorter one. Every other cut is counted.
    between_sets = datagram[:2] == b"\x00\x09" and any(s <= cut < s + 4 for s in starts)
    if not between_sets:
        assert dropped >= 1


@FUZZ
@given(st.sampled_from(range(len(CORPUS))), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), max_size=8))
def test_bit_flips_never_raise(which: int, flips: list[tuple[int, int]]) -> None:
    datagram = bytearray(CORPUS[which][0])
    for position, bit in flips:
        datagram[position % len(datagram)] ^= 1 << bit
    _decode_one(bytes(datagram))
    _decode_one(bytes(datagram), primed_with=CORPUS[which][0])


@FUZZ
@given(st.sampled_from(range(len(CORPUS))), st.data())
def test_length_and_count_fields_changed_never_raise(which: int, data: st.DataObject) -> None:
    datagram, _, starts = CORPUS[which]
    # The 16-bit fields that say how long or how many: the header's count/length, each set's length, and
    # each template's field count.
    offsets = [2] + [s + 2 for s in starts[:-1]] + [s + 6 for s in starts[:-1]]
    changed = bytearray(datagram)
    for offset in data.draw(st.lists(st.sampled_from(offsets), min_size=1, max_size=4)):
        value = data.draw(st.sampled_from([0, 1, 3, 4, 5, 0xFFFF]) | st.integers(0, 0xFFFF))
        changed[offset : offset + 2] = struct.pack("!H", value)
    _decode_one(bytes(changed))
    _decode_one(bytes(changed), primed_with=datagram)


def test_many_datagrams_counters_add_up() -> None:
    rng = random.Random(11)
    decoder = Decoder()
    taken = 0
    for n in range(3000):
        datagram, _, _ = CORPUS[n % len(CORPUS)]
        mutated = bytearray(datagram)
        for _ in range(rng.randrange(3)):
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        decoder.decode(bytes(mutated), f"192.0.2.{n % 7}", 0)
        if n % 100 == 99:
            columns = decoder.take()
            _check(decoder, columns)
            taken += len(columns)
    taken += len(decoder.take())
    assert decoder.records == taken
    assert decoder.datagrams == 3000
