"""Unit telemetry and the dashboard, against their bounds.

    python bench/unit_telemetry.py

1. Poll cost: a site agent's UnitWatch reads N emulated units (each: five Redfish documents and a DCGM
   exporter page of 32 GPUs, over loopback HTTP) once per poll; CPU per unit-poll, agent and emulators
   together in one process (so an upper bound on the agent's share), against the 1 s poll interval.
2. Dashboard push: a control plane on loopback with the default fleet, one server-sent-events client;
   drain and undrain a metro through the API, time until the stream shows it, against the issue's 2 s.
3. Dashboard state: building one event's state, default fleet (10 PoPs) and a 1,000-PoP fleet, against
   the 1 s push interval.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._synthetic import synthetic_fleet
from tests.conftest import serving

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.dashboard import PUSH_SECONDS, Dashboard, with_dashboard
from edgeplane.fleet import load_default_fleet
from edgeplane.telemetry import RedfishEmulator, UnitWatch
from edgeplane.web import HttpClient

POLL_INTERVAL_SECONDS = 1.0
REFLECT_BOUND_SECONDS = 2.0


async def poll_cost(units: int, rounds: int = 20) -> float:
    """CPU milliseconds per unit per poll."""
    codes = {f"u{i}": None for i in range(units)}
    watch = UnitWatch(codes, {c: 400.0 for c in codes}, CollectorRegistry(), gpus={c: {"H100": 32} for c in codes})
    await watch._emulate()
    client = HttpClient(connect_timeout_seconds=1.0, read_timeout_seconds=5.0)
    try:
        await watch.poll(client, 0.0)  # warm: connections, parsers
        cpu = time.process_time()
        for n in range(rounds):
            await watch.poll(client, float(n + 1))
        used = time.process_time() - cpu
        assert not watch.book.stale, watch.book.stale
        return used / rounds / units * 1000
    finally:
        await client.close()
        for runner in watch._runners:
            await runner.cleanup()


async def push_latency(cycles: int = 20) -> list[float]:
    plane = with_dashboard(
        ControlPlane(FleetState(load_default_fleet(), SQLiteStore(":memory:")), probe_interval_seconds=None)
    )
    seen: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    async with serving(plane) as url, aiohttp.ClientSession() as session:

        async def listen() -> None:
            async with session.get(url + "/api/events") as events:
                async for line in events.content:
                    if line.startswith(b"data: "):
                        state = orjson.loads(line[6:])
                        sea = next(m for m in state["metros"] if m["code"] == "sea")
                        await seen.put((time.perf_counter(), "drained" if sea["state"] == "drained" else "not"))

        listener = asyncio.create_task(listen())
        await seen.get()
        took = []
        for n in range(cycles * 2):
            want = "drained" if n % 2 == 0 else "not"
            while not seen.empty():
                seen.get_nowait()
            started = time.perf_counter()
            if want == "drained":
                body = {"kind": "metro", "code": "sea", "force": True}
                async with session.post(url + "/api/drains", json=body) as answer:
                    assert answer.status == 200
            else:
                async with session.delete(url + "/api/drains/metro/sea") as answer:
                    assert answer.status == 200
            while True:
                at, state = await seen.get()
                if state == want:
                    took.append(at - started)
                    break
        listener.cancel()
    return took


def state_cost(plane: ControlPlane, rounds: int) -> float:
    dashboard = Dashboard(plane.view())
    started = time.perf_counter()
    for _ in range(rounds):
        orjson.dumps(dashboard.state())
    return (time.perf_counter() - started) / rounds


async def main() -> None:
    print(f"1. poll cost (Redfish + DCGM, 32 GPUs a unit), bound: the {POLL_INTERVAL_SECONDS:g} s poll interval")
    emulator = RedfishEmulator("u0", gpus={"H100": 32})
    started = time.process_time()
    for _ in range(50):
        emulator._exporter.render(emulator.gpu_readings())
    render_ms = (time.process_time() - started) / 50 * 1000
    for units in (2, 8, 32):
        ms = await poll_cost(units)
        share = ms * units / (POLL_INTERVAL_SECONDS * 1000)
        print(
            f"   {units:3d} units: {ms:5.2f} ms CPU per unit-poll (of which the emulated exporter {render_ms:.2f} ms); "
            f"a poll round = {share:.1%} of a core-second"
        )

    took = sorted(await push_latency())
    p50, p99 = statistics.median(took), took[min(len(took) - 1, round(0.99 * (len(took) - 1)))]
    print(
        f"2. dashboard push, drain or undrain to event, {len(took)} changes: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {took[-1] * 1000:.1f} ms "
        f"(bound {REFLECT_BOUND_SECONDS:g} s; max/bound = {took[-1] / REFLECT_BOUND_SECONDS:.4f})"
    )

    for name, fleet in (
        ("default fleet, 10 PoPs", load_default_fleet()),
        ("synthetic, 1,000 PoPs", synthetic_fleet(10, 10, 2, 5, models=3, units_per_pop=2)),
    ):
        plane = ControlPlane(FleetState(fleet, SQLiteStore(":memory:")), probe_interval_seconds=None)
        cost = state_cost(plane, 20 if len(fleet.pops) < 100 else 3)
        print(
            f"3. dashboard state, {name}: {cost * 1000:.1f} ms per event "
            f"(bound {PUSH_SECONDS:g} s; cost/bound = {cost / PUSH_SECONDS:.3f})"
        )


if __name__ == "__main__":
    asyncio.run(main())
