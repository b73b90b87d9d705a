"""A collector under hostile input: malformed datagrams, unknown templates, templates that change under their
id and a flood of junk from one exporter. Each is counted on /metrics and in `flows stats`; the process lives,
and the flows of an honest exporter are stored exactly."""

from __future__ import annotations

import json
import random
import struct
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests._time import wait_for
from tests.conftest import SMALL_FLEET
from tests.peering._exporter import Flow, datagrams, send
from tests.peering._process import collector, edgeplane

HONEST, HOSTILE, CLOCKLESS = "127.0.0.21", "127.0.0.66", "127.0.0.22"


def _fleet(tmp_path: Path) -> Path:
    yaml = YAML()
    data = yaml.load(SMALL_FLEET.read_text())
    data["pops"][0]["flow_exporters"] = [HONEST]
    data["pops"][1]["flow_exporters"] = [CLOCKLESS]  # a router of the fleet whose clock is years off
    path = tmp_path / "fleet.yaml"
    with path.open("w") as out:
        yaml.dump(data, out)
    return path


def _junk(rng: random.Random, now: int) -> list[bytes]:
    v9 = struct.pack("!HHIIII", 9, 1, 1000, now, 1, 7)
    ipfix_template = struct.pack("!HH", 2, 12) + struct.pack("!HHHH", 300, 1, 8, 4)
    changed = struct.pack("!HH", 2, 16) + struct.pack("!HHHHHH", 300, 2, 12, 4, 1, 4)
    packets = [
        b"",
        b"\x00",
        b"\x00\x09\x00",  # shorter than any header
        struct.pack("!H", 7) + bytes(30),  # a version nobody speaks
        struct.pack("!HHIIIIBBH", 5, 30, 0, now, 0, 0, 0, 0, 0) + bytes(48),  # v5 promising 30 records, carrying 1
        v9 + struct.pack("!HH", 4242, 20) + bytes(16),  # data for a template never sent
        v9 + struct.pack("!HH", 0, 2),  # a set shorter than its own header
        v9 + struct.pack("!HH", 0, 12) + struct.pack("!HHHH", 400, 9, 8, 4),  # a template overrunning its set
        struct.pack("!HHIII", 10, 9999, now, 1, 7) + bytes(20),  # IPFIX length larger than the datagram
    ]
    ipfix = struct.pack("!HHIII", 10, 16 + len(ipfix_template) + 8, now, 1, 7) + ipfix_template
    packets.append(ipfix + struct.pack("!HH", 300, 8) + bytes(4))  # a record of the first layout
    packets.append(struct.pack("!HHIII", 10, 16 + len(changed), now, 2, 7) + changed)  # the layout changes
    packets += [rng.randbytes(rng.randint(0, 1500)) for _ in range(5000)]  # the flood
    mutated = datagrams([Flow("198.19.0.10", "203.0.113.5", now * 1000, 100, 1)], export_ms=now * 1000)[0]
    for _ in range(2000):
        data = bytearray(mutated)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        packets.append(bytes(data[: rng.randint(0, len(data))]))
    return packets


@pytest.mark.timeout(300)
def test_hostile_datagrams_are_counted_and_honest_flows_stored(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    now_ms = int(time.time() * 1000)
    honest = [
        Flow("198.19.0.10", f"203.0.113.{i % 200 + 1}", now_ms - 60_000 - i, 1000 + i, 1 + i % 7) for i in range(600)
    ]
    rng = random.Random(5)
    junk = _junk(rng, now_ms // 1000)
    good = datagrams(honest, export_ms=now_ms)
    with collector(data_dir, fleet=fleet) as running:
        # Interleaved, so that the junk arrives while honest templates and data are in flight; paced by what the
        # collector has read, so that the kernel's socket buffer never overflows (a drop there is not ours).
        sent = 0
        for index, packet in enumerate(good):
            sent += send([packet], running.udp, source=HONEST)
            sent += send(junk[index * 400 : (index + 1) * 400], running.udp, source=HOSTILE)
            wait_for("the collector to read what was sent", lambda n=sent: running.live_stats()["datagrams"] >= n, 60)
        send(junk[len(good) * 400 :], running.udp, source=HOSTILE)
        future_ms = now_ms + 10 * 365 * 86_400_000
        late = [
            Flow("198.19.1.10", "203.0.113.9", future_ms - 5000, 100, 1),
            Flow("198.19.1.10", "203.0.113.9", 1, 2, 1),
        ]
        send(datagrams(late, export_ms=future_ms), running.udp, source=CLOCKLESS)
        wait_for("the honest flows stored", lambda: running.live_stats()["stored"] >= len(honest), 60, 0.2)
        metrics = running.get("/metrics")
        assert running.process.poll() is None
        stats = running.live_stats()
        running.stop()
    # The flows of the router with the wrong clock are not believed (one would stretch every metro's window).
    assert stats["dropped"].get("future_time", 0) + stats["dropped"].get("bad_time", 0) >= 1
    for reason in ("short", "version", "length", "unknown_template", "malformed_set", "malformed_template"):
        assert stats["dropped"].get(reason, 0) > 0, (reason, stats["dropped"])
        assert f'edgeplane_flow_dropped_total{{reason="{reason}"}}' in metrics
    stored = json.loads(edgeplane("flows", "stats", "--json", "--data-dir", str(data_dir)).stdout)
    assert stored["dropped"] == stats["dropped"]
    assert stored["last_ms"] <= now_ms + 3_600_000
    honest_row = next(e for e in stored["by_exporter"] if e["address"] == HONEST)
    assert honest_row["records"] == len(honest) and honest_row["pop"] == "nyc1"
    # Every honest flow is there with its own bytes: the junk neither lost nor corrupted any.
    export = tmp_path / "export"
    edgeplane("flows", "export", "--to", str(export), "--data-dir", str(data_dir))
    import duckdb

    rows = duckdb.sql(
        f"SELECT dst, bytes, packets FROM read_parquet('{export}/flows/**/*.parquet', hive_partitioning = true)"
        " WHERE exporter = '127.0.0.21'"
    ).fetchall()
    assert sorted(rows) == sorted((f.dst, f.bytes, f.packets) for f in honest)


def test_the_collector_answers_no_page_that_rebinds_a_name_to_it(tmp_path: Path) -> None:
    """Its stats and metrics are on loopback, where a web page in the user's browser can reach them through a
    name it rebinds to 127.0.0.1: a foreign Host is refused; an unknown path is a JSON 404."""
    import urllib.error
    import urllib.request

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with collector(data_dir, "--pop", "nyc1") as running:
        request = urllib.request.Request(running.http + "/api/flows/stats", headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        with refused.value:
            assert refused.value.code == 421
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(running.http + "/nothing", timeout=10)
        with missing.value:
            assert missing.value.code == 404 and b'"error"' in missing.value.read()
        assert "records" in running.live_stats()


def test_the_receive_queue_is_what_was_asked_and_a_bad_size_is_refused(tmp_path: Path) -> None:
    """--receive-buffer is the SO_RCVBUF asked of the kernel (which doubles it for its bookkeeping and holds it to
    net.core.rmem_max, at least 208 KiB on Linux): 64 KiB asked is 128 KiB held. Below 64 KiB is a usage error."""
    import subprocess

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with collector(data_dir, "--pop", "nyc1", "--receive-buffer", "65536") as running:
        port = running.udp[1]
        shown = subprocess.run(
            ["ss", "-u", "-a", "-m", "-n", "sport", "=", f":{port}"], capture_output=True, text=True, check=True
        ).stdout
        assert "rb131072," in shown, shown
    refused = edgeplane(
        "flows", "collect", "--receive-buffer", "10", "--data-dir", str(tmp_path / "other"), check=False
    )  # fmt: skip
    assert refused.returncode == 2 and "--receive-buffer" in refused.stderr


def test_what_the_kernel_drops_for_a_full_queue_is_counted(tmp_path: Path) -> None:
    """A collector that cannot keep up (here: stopped) loses datagrams in the kernel, not in its own code: those
    are counted as receive_queue, so that what was sent = what was read + what was dropped."""
    import signal

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    now_ms = int(time.time() * 1000)
    flows = [Flow("198.19.0.10", f"203.0.113.{i % 250 + 1}", now_ms - 60_000 - i, 1000 + i, 1) for i in range(60_000)]
    packets = datagrams(flows, export_ms=now_ms)  # about 3 MB: far more than a 128 KiB queue holds
    with collector(data_dir, "--pop", "nyc1", "--receive-buffer", "65536") as running:
        running.process.send_signal(signal.SIGSTOP)
        try:
            sent = send(packets, running.udp, source=HONEST)
        finally:
            running.process.send_signal(signal.SIGCONT)
        wait_for("the queue read", lambda: running.live_stats()["stored"] > 0, 60, 0.05)
        running.stop()
    stats = json.loads(edgeplane("flows", "stats", "--json", "--data-dir", str(data_dir)).stdout)
    assert stats["dropped"]["receive_queue"] > 0
    assert stats["datagrams"] + stats["dropped"]["receive_queue"] == sent
