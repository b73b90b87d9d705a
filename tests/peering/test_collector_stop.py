"""A collector stopped while a batch is being written (SIGTERM cancels its flushes): the write under way ends
before the last flush, so that each flow is stored once, none twice (the batch written again) nor lost (two
writes at once, one refused)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import duckdb

from edgeplane.fleet import load_fleet
from edgeplane.peering import FlowCollector
from tests.peering._exporter import Flow, datagrams


def test_a_flush_cancelled_during_its_write_leaves_each_flow_stored_once(tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    collector = FlowCollector(load_fleet(None), tmp_path, pop="nyc1")

    async def scenario() -> None:
        for round_ in range(3):
            flows = [
                Flow("198.19.0.10", f"203.0.113.{i % 250 + 1}", now_ms - 60_000 - i % 50_000, 10**7 * round_ + i, 1)
                for i in range(200_000)
            ]
            for packet in datagrams(flows, export_ms=now_ms):
                collector.decoder.decode(packet, "127.0.0.1", now_ms)
            flushing = asyncio.ensure_future(collector.flush())
            await asyncio.sleep(0.02 * round_)  # the stop lands at another moment of the write each time
            flushing.cancel()
            try:
                await flushing
            except asyncio.CancelledError:
                pass
        await collector.flush()  # the last flush, as the collector makes on its way out

    asyncio.run(scenario())
    with duckdb.connect(str(tmp_path / "flows.duckdb"), read_only=True) as connection:
        rows, distinct = connection.execute("SELECT count(*), count(DISTINCT bytes) FROM flows").fetchone()
    assert rows == distinct == 600_000 == collector.stored


def test_datagrams_beyond_what_may_wait_for_the_store_are_counted_as_backlog(tmp_path: Path) -> None:
    """While the store falls behind, the datagrams waiting to be decoded are bounded: past the bound they are read
    and counted (backlog), not kept; once a flush has taken the waiting ones, new ones are kept again."""
    import socket

    from edgeplane.peering import CollectorOptions

    now_ms = int(time.time() * 1000)
    options = CollectorOptions(max_buffered_datagrams=10)
    collector = FlowCollector(load_fleet(None), tmp_path, pop="nyc1", options=options)
    flows = [Flow("198.19.0.10", "203.0.113.1", now_ms - 60_000 - i, 1000 + i, 1) for i in range(30 * 50)]
    packets = datagrams(flows, export_ms=now_ms)

    async def scenario() -> tuple[int, int, int]:
        address = await collector.listen("127.0.0.1", 0)
        host, _, port = address.rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for packet in packets:
                sender.sendto(packet, (host, int(port)))
                await asyncio.sleep(0)  # one at a time: the bound is checked per wakeup
            deadline = time.monotonic() + 30
            while collector.decoder.datagrams + collector.backlog_dropped < len(packets):
                assert time.monotonic() < deadline, "the datagrams were not read"
                await asyncio.sleep(0.01)
            kept, counted = collector.decoder.datagrams, collector.backlog_dropped
            await collector.flush()
            sender.sendto(packets[0], (host, int(port)))
            while collector.decoder.datagrams == kept:
                assert time.monotonic() < deadline, "the datagram after the flush was not kept"
                await asyncio.sleep(0.01)
        collector.close()
        return kept, counted, collector.stored

    kept, counted, stored = asyncio.run(scenario())
    assert kept + counted == len(packets) and 10 <= kept < len(packets)
    assert stored == kept * 30
    assert collector.dropped()["backlog"] == counted
