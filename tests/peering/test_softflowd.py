"""Real flows end to end: a capture of known traffic (scapy), exported by softflowd as NetFlow v9 and as IPFIX,
received by our collector and by nfcapd from the same datagrams. Bytes and packets per destination AS equal
the capture's own, and nfdump's."""

from __future__ import annotations

import ipaddress
import json
import shutil
import signal
import socket
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests._time import wait_for
from tests.conftest import SMALL_FLEET
from tests.peering._mrt import write_mrt
from tests.peering._process import collector, edgeplane

pytestmark = pytest.mark.skipif(
    shutil.which("softflowd") is None or shutil.which("nfcapd") is None,
    reason="softflowd and nfdump (Debian packages) are not installed; scripts/install installs them",
)

# Destination ASes, each the origin of one prefix behind transit AS64497 (nyc1's transit-a).
ORIGINS = {"203.0.113.0/24": 64510, "198.51.100.0/24": 64511, "192.0.2.0/24": 64512, "2001:db8:1234::/48": 64513}
DESTINATIONS = ["203.0.113.7", "203.0.113.99", "198.51.100.20", "192.0.2.5", "2001:db8:1234::9"]
OURS = {4: "198.19.0.10", 6: "2001:db8:8000::10"}  # nyc's service prefixes


def _origin(address: str) -> int | None:
    target = ipaddress.ip_address(address)
    for prefix, asn in ORIGINS.items():
        if target in ipaddress.ip_network(prefix):
            return asn
    return None


def _capture(path: Path) -> dict[int, tuple[int, int]]:
    """Write the capture; return bytes and packets (IP lengths, as exporters count) per destination AS."""
    from scapy.all import IP, TCP, UDP, Ether, IPv6, wrpcap

    frames = []
    expected: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    start = time.time() - 600
    for index, destination in enumerate(DESTINATIONS):
        version = ipaddress.ip_address(destination).version
        for n in range(3 + index * 2):
            payload = b"x" * (100 + 37 * n + index)
            if version == 4:
                layer = IP(src=OURS[4], dst=destination) / TCP(sport=443, dport=40000 + index) / payload
                length = len(bytes(layer))
            else:
                layer = IPv6(src=OURS[6], dst=destination) / UDP(sport=443, dport=40000 + index) / payload
                length = len(bytes(layer))
            frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / layer
            frame.time = start + index * 5 + n * 0.5
            frames.append(frame)
            origin = _origin(destination)
            assert origin is not None
            expected[origin][0] += length
            expected[origin][1] += 1
    wrpcap(str(path), frames)
    return {asn: (v[0], v[1]) for asn, v in expected.items()}


def _export(capture: Path, version: int, work: Path) -> list[bytes]:
    """What softflowd sends for the capture, caught on a UDP socket."""
    catcher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    catcher.bind(("127.0.0.1", 0))
    catcher.settimeout(0.5)
    port = catcher.getsockname()[1]
    control = work / f"sf{version}.ctl"
    process = subprocess.Popen(
        ["softflowd", "-d", "-r", str(capture), "-n", f"127.0.0.1:{port}", "-v", str(version),
         "-p", str(work / f"sf{version}.pid"), "-c", str(control)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for("softflowd's control socket", control.exists, 30, 0.05)
        # softflowd reads the whole capture before it answers on its control socket; then export all and stop.
        subprocess.run(["softflowctl", "-c", str(control), "expire-all"], check=True, capture_output=True)
        subprocess.run(["softflowctl", "-c", str(control), "shutdown"], check=True, capture_output=True)
        process.wait(timeout=30)
        packets = []
        while True:
            try:
                packets.append(catcher.recv(65535))
            except TimeoutError:
                break
        return packets
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        catcher.close()


def _udp_queue(port: int) -> int | None:
    """Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:``port`` (None: no such socket)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        local, queues = fields[1], fields[4]
        if local == f"0100007F:{port:04X}":
            return int(queues.split(":")[1], 16)
    return None


def _nfdump(packets: list[bytes], work: Path) -> dict[int, tuple[int, int]]:
    """The same datagrams through nfcapd; nfdump's flows per destination AS."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = work / "nfcapd"
    store.mkdir()
    process = subprocess.Popen(
        ["nfcapd", "-w", str(store), "-b", "127.0.0.1", "-p", str(port), "-t", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # nfcapd says nothing when it is ready: its socket appearing, then draining, is what tells.
        wait_for("nfcapd to listen", lambda: _udp_queue(port) is not None, 30, 0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for packet in packets:
                sender.sendto(packet, ("127.0.0.1", port))
        wait_for("nfcapd to read every datagram", lambda: _udp_queue(port) == 0, 30, 0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    listing = subprocess.run(
        ["nfdump", "-R", str(store), "-q", "-N", "-o", "fmt:%da %byt %pkt"], capture_output=True, text=True, check=True
    )
    found: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        origin = _origin(fields[0])
        if origin is not None:
            found[origin][0] += int(fields[1])
            found[origin][1] += int(fields[2])
    return {asn: (v[0], v[1]) for asn, v in found.items()}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", [9, 10], ids=["netflow-v9", "ipfix"])
def test_softflowd_export_counts_as_the_capture_and_nfdump(tmp_path: Path, version: int) -> None:
    capture = tmp_path / "cap.pcap"
    expected = _capture(capture)
    packets = _export(capture, version, tmp_path)
    assert packets, "softflowd sent nothing"
    rib = tmp_path / "rib.mrt"
    write_mrt(rib, [(prefix, 64497, [64497, asn], None) for prefix, asn in ORIGINS.items()])
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with collector(data_dir, "--pop", "nyc1", fleet=SMALL_FLEET) as running:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for packet in packets:
                sender.sendto(packet, running.udp)
        total = sum(p for _, p in expected.values())
        wait_for("the flows stored", lambda: running.live_stats()["stored"] >= len(DESTINATIONS), 60, 0.2)
        running.stop()
    stats = json.loads(edgeplane("flows", "stats", "--json", "--data-dir", str(data_dir)).stdout)
    assert stats["records"] == len(DESTINATIONS) and stats["exporters"] == 1 and stats["dropped"] == {}
    done = edgeplane(
        "peering", "candidates", "--json", "--rib", str(rib), "--fleet", str(SMALL_FLEET),
        "--data-dir", str(data_dir), "--top", "50",
    )  # fmt: skip
    (nyc,) = json.loads(done.stdout)["metros"]
    ours = {c["asn"]: (c["bytes"], c["packets"]) for c in nyc["candidates"]}
    assert ours == expected
    assert sum(p for _, p in ours.values()) == total
    assert {c["asn"]: c["via_transits"] for c in nyc["candidates"]} == {asn: [64497] for asn in expected}
    assert _nfdump(packets, tmp_path) == expected
