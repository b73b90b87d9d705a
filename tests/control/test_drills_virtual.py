"""Drills in virtual time: the runner takes its clocks and its sleep, so a 60-second drill runs in an instant and
its timings are exact."""

from __future__ import annotations

import asyncio
from typing import Any

from edgeplane.control import FleetState, SQLiteStore
from edgeplane.control._bodies import TtftSample
from edgeplane.control._demand import Traffic
from edgeplane.control._drills import CHECK_SECONDS, MIN_SAMPLES, DrillRunner, DrillState
from edgeplane.fleet import load_default_fleet
from tests._time import VirtualClock, wait_for_async


def runner(clock: VirtualClock) -> tuple[FleetState, Traffic, DrillRunner]:
    state = FleetState(load_default_fleet(), SQLiteStore(":memory:"), clock=clock, wall_clock=clock)
    traffic = Traffic(clock)
    drills = DrillRunner(state, traffic, state.refresh, clock=clock, wall_clock=clock, sleep=clock.sleep)
    return state, traffic, drills


# Waits in real seconds, polled once a turn of the loop: virtual time runs as fast as the loop turns.
VIRTUAL: dict[str, Any] = {"timeout_seconds": 10, "every": 0}


async def test_a_drill_runs_its_whole_duration_and_restores_the_metro() -> None:
    clock = VirtualClock()
    state, _, drills = runner(clock)
    drill = drills.submit("lon", 60.0, None, "alice", force=True)
    assert drill.state is DrillState.PENDING and not drill.state.done
    task = asyncio.create_task(drills.run_forever())
    try:
        await wait_for_async("the drill runs", lambda: drill.state is DrillState.RUNNING, **VIRTUAL)
        assert [(d.kind, d.code) for d in state.store.drains()] == [("metro", "lon")]
        await wait_for_async("the drill ends", lambda: drill.state.done, **VIRTUAL)
    finally:
        task.cancel()
    assert drill.state is DrillState.COMPLETED and drill.to_json()["state"] == "completed"
    assert drill.ended_at is not None and drill.started_at is not None
    assert drill.ended_at - drill.started_at == 60.0  # exactly: 120 checks of half a second
    assert state.store.drains() == []
    audit = [(r.action, r.outcome) for r in reversed(state.store.audit_log())]
    assert audit == [
        ("drill start", "announced"),
        ("drain", "ok (forced)"),
        ("undrain", "ok"),
        ("drill end", "completed"),
    ]


async def test_moved_traffic_over_its_slo_rolls_the_drill_back_at_the_next_check() -> None:
    clock = VirtualClock()
    state, traffic, drills = runner(clock)
    drill = drills.submit("lon", 600.0, 500.0, "alice", force=True)
    task = asyncio.create_task(drills.run_forever())
    try:
        await wait_for_async("the drill runs", lambda: drill.state is DrillState.RUNNING, **VIRTUAL)
        slow = TtftSample(client_metro="lon", model="m", ttft_ms=900.0, metro="ams", scope="region")
        traffic.add([slow] * MIN_SAMPLES)
        await wait_for_async("the drill ends", lambda: drill.state.done, **VIRTUAL)
    finally:
        task.cancel()
    assert drill.state is DrillState.ROLLED_BACK
    assert drill.started_at is not None and drill.ended_at == drill.started_at + CHECK_SECONDS  # the first check
    assert drill.figures["over_slo"] == MIN_SAMPLES and "over 500 ms" in drill.reason
    assert state.store.drains() == []
