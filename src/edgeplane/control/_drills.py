"""Drills: a rehearsed drain of a metro that watches the moved traffic's SLO and rolls back by itself."""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeplane.control._demand import Sample, Traffic
from edgeplane.control._errors import DrainRefused, UnknownTarget
from edgeplane.control._state import FleetState
from edgeplane.control._store import AuditRecord

log = logging.getLogger("edgeplane.control")

# The SLO is judged once this many samples of moved traffic are in, and is broken when more than
# this share of them are over their threshold.
MIN_SAMPLES = 10
MAX_BREACH_SHARE = 0.05
CHECK_SECONDS = 0.5


class DrillState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled back"
    REFUSED = "refused"

    @property
    def done(self) -> bool:
        return self not in (DrillState.PENDING, DrillState.RUNNING)


@dataclass
class Drill:
    id: int
    metro: str
    duration_seconds: float
    slo_ttft_ms: float | None  # None: each request against its model's SLO
    by: str
    force: bool = False
    state: DrillState = DrillState.PENDING
    started_at: float | None = None  # unix
    ended_at: float | None = None
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "metro": self.metro,
            "duration_seconds": self.duration_seconds,
            "slo_ttft_ms": self.slo_ttft_ms,
            "by": self.by,
            "state": self.state.value,
            "done": self.state.done,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "reason": self.reason,
            "figures": self.figures,
        }


def judge(samples: list[Sample], slo_ttft_ms: float | None, model_slo_ms: Mapping[str, float]) -> dict[str, Any]:
    """Figures of the moved traffic, and whether its SLO is broken."""
    timed = [(s, s.ttft_ms) for s in samples if s.ttft_ms is not None]
    ttfts = sorted(t for _, t in timed)
    over = [s for s, t in timed if t > (slo_ttft_ms or model_slo_ms.get(s.model, float("inf")))]
    share = len(over) / len(samples) if samples else 0.0

    def pct(q: float) -> float | None:
        return round(ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))], 2) if ttfts else None

    return {
        "samples": len(samples),
        "ttft_ms_p50": round(statistics.median(ttfts), 2) if ttfts else None,
        "ttft_ms_p95": pct(0.95),
        "ttft_ms_p99": pct(0.99),
        "over_slo": len(over),
        "over_slo_share": round(share, 4),
        "served_at": dict(collections.Counter(f"{s.metro} ({s.scope})" for s in samples)),
        "breached": len(samples) >= MIN_SAMPLES and share > MAX_BREACH_SHARE,
    }


Sleep = Callable[[float], Awaitable[None]]


class DrillRunner:
    """Runs one drill at a time, in order; each ends by restoring the metro, whatever happened. Time comes
    from ``clock`` (monotonic, the traffic's), ``wall_clock`` (for the record) and ``sleep``: tests run drills
    in virtual time."""

    def __init__(
        self,
        state: FleetState,
        traffic: Traffic,
        publish: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.state = state
        self.traffic = traffic
        self.publish = publish
        self.clock, self.wall_clock, self.sleep = clock, wall_clock, sleep
        self.drills: dict[int, Drill] = {}
        # Counted on from the wall clock (seconds), so that a new leader's drills never take the ids of its
        # predecessor's, which the audit log and the drains they made still name.
        self._ids = itertools.count(max(1, int(wall_clock())))
        self._queue: asyncio.Queue[Drill] = asyncio.Queue()
        self.changed = asyncio.Event()

    def __repr__(self) -> str:
        running = [d.metro for d in self.drills.values() if d.state is DrillState.RUNNING]
        return f"<DrillRunner [running: {', '.join(running) or 'none'}, queued: {self._queue.qsize()}]>"

    def release_orphans(self) -> list[str]:
        """A new leader's first act: drains made by drills that no drill here runs (their leader died or was
        deposed mid-drill, with the drill in its memory) are rolled back, audited, so that no metro stays
        drained by a drill nobody ends. Returns the metros released."""
        running = {f"drill {d.id} " for d in self.drills.values() if not d.state.done}
        released = []
        for drain in self.state.store.drains():
            if drain.kind == "metro" and drain.reason == "drill" and not any(drain.by.startswith(r) for r in running):
                self.state.drains.undrain(
                    "metro", drain.code, by=f"leader (rolling back {drain.by}: its leader is gone)"
                )
                released.append(drain.code)
        if released:
            log.warning("drills left by a lost leader rolled back: %s", ", ".join(released))
            self.publish()
        return released

    def submit(self, metro: str, duration_seconds: float, slo_ttft_ms: float | None, by: str, force: bool) -> Drill:
        if metro not in self.state.fleet.metro_by_code:
            raise UnknownTarget(
                f"unknown metro {metro!r}; expected one of: {', '.join(sorted(self.state.fleet.metro_by_code))}"
            )
        drill = Drill(next(self._ids), metro, duration_seconds, slo_ttft_ms, by, force)
        self.drills[drill.id] = drill
        self._queue.put_nowait(drill)
        return drill

    def _notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def _audit(self, drill: Drill, action: str, outcome: str) -> None:
        detail = {
            "drill": drill.id,
            "duration_seconds": drill.duration_seconds,
            "slo_ttft_ms": drill.slo_ttft_ms,
            "reason": drill.reason,
            "figures": drill.figures,
        }
        self.state.store.audit(
            AuditRecord(self.wall_clock(), drill.by, action, f"metro {drill.metro}", outcome, detail)
        )

    async def run_forever(self) -> None:
        while True:
            drill = await self._queue.get()
            try:
                await self._run(drill)
            finally:
                self._notify()

    async def _run(self, drill: Drill) -> None:
        state = self.state
        model_slo = {m.name: m.slo_ttft_ms for m in state.fleet.models}
        drill.state, drill.started_at = DrillState.RUNNING, self.wall_clock()
        self._audit(drill, "drill start", "announced")
        log.warning("drill %d: draining metro %s for %.0f s", drill.id, drill.metro, drill.duration_seconds)
        self._notify()
        try:
            state.drains.drain(
                "metro", drill.metro, by=f"drill {drill.id} ({drill.by})", reason="drill", force=drill.force
            )
        except DrainRefused as refused:
            drill.state, drill.reason, drill.ended_at = (
                DrillState.REFUSED,
                "; ".join(refused.reasons),
                self.wall_clock(),
            )
            self._audit(drill, "drill end", drill.state.value)
            return
        self.publish()
        start = self.clock()
        try:
            while self.clock() - start < drill.duration_seconds:
                await self.sleep(CHECK_SECONDS)
                drill.figures = judge(self.traffic.moved(drill.metro, start), drill.slo_ttft_ms, model_slo)
                if drill.figures["breached"]:
                    limit = f"{drill.slo_ttft_ms:g} ms" if drill.slo_ttft_ms else "each model's SLO"
                    drill.state = DrillState.ROLLED_BACK
                    drill.reason = (
                        f"{drill.figures['over_slo']} of {drill.figures['samples']} moved requests had a time to first"
                        f" token over {limit} (p95 {drill.figures['ttft_ms_p95']} ms)"
                    )
                    break
            else:
                drill.state = DrillState.COMPLETED
                drill.figures = judge(self.traffic.moved(drill.metro, start), drill.slo_ttft_ms, model_slo)
        finally:
            state.drains.undrain("metro", drill.metro, by=f"drill {drill.id} ({drill.by})")
            self.publish()
            drill.ended_at = self.wall_clock()
            if drill.state is DrillState.RUNNING:
                drill.state, drill.reason = DrillState.ROLLED_BACK, "the drill was interrupted"
            log.warning("drill %d on %s: %s %s", drill.id, drill.metro, drill.state, drill.reason)
            self._audit(drill, "drill end", drill.state.value)
