"""What this gateway tells the control plane: where each request was served (and its time to first token,
which drills judge) and the demand per client metro and model, which the planner reads."""

from __future__ import annotations

import asyncio
from typing import Any

from edgeplane._errors import BackendError
from edgeplane.gateway._record import RequestRecord
from edgeplane.routing import Candidate
from edgeplane.web import ControlUrls, HttpClient

REPORT_SECONDS = 0.5
REPORT_TIMEOUT_SECONDS = 2.0
MAX_SAMPLES_PER_REPORT = 5000


class Uplink:
    def __init__(self, client: HttpClient, control: ControlUrls | str, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.control = ControlUrls.of(control)
        self.headers = headers
        self._samples: list[dict[str, Any]] = []  # where each request was served (and its TTFT)
        # Requests and tokens per (client metro, model) since the last report: the demand the planner reads.
        self._demand: dict[tuple[str, str], list[int]] = {}

    def __repr__(self) -> str:
        return f"<Uplink [Samples: {len(self._samples)} | Demand: {len(self._demand)} (metro, model) pairs]>"

    def served(self, client_metro: str, model: str, candidate: Candidate, ttft_seconds: float | None) -> None:
        """Every answer counts where it was served (the dashboard's scope mix); streams also carry their time
        to first token, as the client met it (drills judge it); whole answers have none to tell."""
        if len(self._samples) >= MAX_SAMPLES_PER_REPORT:
            return
        ttft_ms = round(1000 * ttft_seconds + candidate.rtt_ms, 3) if ttft_seconds is not None else None
        self._samples.append(
            {
                "client_metro": client_metro,
                "model": model,
                "ttft_ms": ttft_ms,
                "metro": candidate.metro,
                "scope": str(candidate.scope),
            }
        )

    def demand(self, record: RequestRecord) -> None:
        """Count a finished request toward its client metro's demand for its model (once both are known)."""
        if record.client_metro is None or record.model is None:
            return
        tally = self._demand.setdefault((record.client_metro, record.model), [0, 0, 0])
        tally[0] += 1
        tally[1] += record.tokens_in or 0
        tally[2] += record.tokens_out or 0

    async def report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            await self.report()

    async def report(self) -> None:
        """Send what was gathered since the last report, if anything was."""
        samples, self._samples = self._samples, []
        demand, self._demand = self._demand, {}
        if not samples and not demand:
            return
        rows = [
            {"client_metro": m, "model": n, "requests": t[0], "prompt_tokens": t[1], "output_tokens": t[2]}
            for (m, n), t in demand.items()
        ]
        base = self.control.current
        try:
            await self.client.request_json(
                "POST",
                base + "/api/gateways/report",
                {"samples": samples, "demand": rows},
                timeout_seconds=REPORT_TIMEOUT_SECONDS,
                headers=self.headers,
            )
        except BackendError:
            self.control.failed(base)  # the samples of a partition are lost; serving goes on
