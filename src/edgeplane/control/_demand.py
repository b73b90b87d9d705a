"""Observed demand: what the gateways report having served, per client metro: the recent scope mix and
time to first token (Traffic: the dashboard's "served at" and the drills' moved traffic) and an hour of
requests and tokens per model (DemandBook: what `plan placement --observed` plans for)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeplane.control._bodies import DemandRow, TtftSample

WINDOW_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One request as a gateway saw it: time to first token (with the client-to-site RTT added)."""

    at: float  # monotonic seconds at the control plane, when received
    client_metro: str
    model: str
    ttft_ms: float | None  # None for a whole (not streamed) answer: it counts in the scope mix only
    metro: str  # serving metro
    scope: str


class Traffic:
    """The last two minutes of gateway samples, per client metro."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_metro: dict[str, collections.deque[Sample]] = collections.defaultdict(collections.deque)

    def add(self, samples: list[TtftSample]) -> int:
        now = self.clock()
        for raw in samples:
            sample = Sample(now, raw.client_metro, raw.model, raw.ttft_ms, raw.metro, raw.scope)
            window = self._by_metro[sample.client_metro]
            window.append(sample)
            while window and window[0].at < now - WINDOW_SECONDS:
                window.popleft()
        return len(samples)

    def mix(self, window_seconds: float) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
        """Per client metro over the window: the share of its requests served at each scope, and at each metro."""
        since = self.clock() - window_seconds
        out = {}
        for metro, window in self._by_metro.items():
            recent = [s for s in window if s.at >= since]
            if recent:
                scopes = collections.Counter(s.scope for s in recent)
                served = collections.Counter(s.metro for s in recent)
                out[metro] = (
                    {k: round(v / len(recent), 4) for k, v in scopes.most_common()},
                    {k: round(v / len(recent), 4) for k, v in served.most_common()},
                )
        return out

    def moved(self, client_metro: str, start: float) -> list[Sample]:
        """Streamed requests of the metro's clients served elsewhere since ``start``: the traffic a drain moved,
        with the time to first token it met."""
        return [
            s
            for s in self._by_metro.get(client_metro, ())
            if s.at >= start and s.metro != client_metro and s.ttft_ms is not None
        ]


DEMAND_WINDOW_SECONDS = 3600.0


class DemandBook:
    """What the gateways served per client metro and model over the last hour: the observed demand."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.started = clock()
        self._rows: collections.deque[tuple[float, str, str, int, int, int]] = collections.deque()

    def add(self, rows: list[DemandRow]) -> int:
        now = self.clock()
        taken = 0
        for raw in rows:
            if raw.requests > 0:
                self._rows.append(
                    (now, raw.client_metro, raw.model, raw.requests, raw.prompt_tokens, raw.output_tokens)
                )
                taken += 1
        while self._rows and self._rows[0][0] < now - DEMAND_WINDOW_SECONDS:
            self._rows.popleft()
        return taken

    def observed(self, window_seconds: float) -> tuple[float, list[dict[str, Any]]]:
        """Rows of demand (requests per second and mean tokens) over the window, or since the book began
        if that is shorter; returns the seconds actually covered."""
        now = self.clock()
        covered = max(1e-9, min(window_seconds, now - self.started))
        totals: dict[tuple[str, str], list[int]] = {}
        for at, metro, model, requests, prompt, output in self._rows:
            if at >= now - covered:
                t = totals.setdefault((metro, model), [0, 0, 0])
                t[0], t[1], t[2] = t[0] + requests, t[1] + prompt, t[2] + output
        rows = [
            {"metro": m, "model": n, "requests_per_second": round(t[0] / covered, 6),
             "prompt_tokens": round(t[1] / t[0]), "output_tokens": max(1, round(t[2] / t[0]))}
            for (m, n), t in sorted(totals.items())
        ]  # fmt: skip
        return covered, rows
