"""Forwarding one request: its candidates tried in order within the attempt count and the request budget,
until one gives a good answer, and the 500s that turn out to be the request's own fault."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter

from edgeplane.gateway._attempt import Failure, Ready, Tries
from edgeplane.gateway._inflight import InFlight
from edgeplane.routing import Candidate
from edgeplane.web import ApiError, InferenceRequest

POISON_SITES = 2  # a request two sites answer with 500 is refused as the request's fault

# Passes a good answer on to the client: given the answer, the tries made and the candidates left.
Deliver = Callable[[Ready, int, list[Candidate]], Awaitable[web.StreamResponse]]


class Unserved(ApiError):
    """No site gave an answer to pass on, after ``attempts`` tries."""

    def __init__(self, status: int, message: str, *, type: str, code: str, attempts: int) -> None:
        super().__init__(status, message, type=type, code=code, headers={"x-edgeplane-attempts": str(attempts)})
        self.attempts = attempts


class Forwarder:
    def __init__(
        self,
        tries: Tries,
        inflight: InFlight,
        poisoned: Counter,
        *,
        max_attempts: int,
        request_budget_seconds: float,
    ) -> None:
        self.tries = tries
        self.inflight = inflight  # each try counts as in flight at its site until its answer is passed on
        self.poisoned = poisoned
        self.max_attempts = max_attempts
        self.request_budget_seconds = request_budget_seconds

    async def forward(
        self,
        parsed: InferenceRequest,
        raw: bytes,
        candidates: list[Candidate],
        deliver: Deliver,
    ) -> web.StreamResponse:
        """The response ``deliver`` makes of the first good answer to ``raw``; Unserved when none came."""
        model = parsed.model
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_budget_seconds
        candidates = list(candidates)
        attempts = 0
        failures: list[str] = []
        suspects: list[Failure] = []  # 500s: the site's fault or the request's, not known yet
        suspect_sites: list[str] = []
        while candidates and attempts < self.max_attempts and loop.time() < deadline:
            candidate = candidates.pop(0)
            attempts += 1
            key = (candidate.pop, model)
            self.inflight.change(key, 1)
            try:
                outcome = await self.tries.attempt(
                    candidate, parsed.endpoint, raw, parsed.stream, deadline - loop.time()
                )
                if isinstance(outcome, Failure):
                    failures.append(outcome.reason)
                    if outcome.suspect:
                        suspects.append(outcome)
                        suspect_sites.append(candidate.pop)
                    if len(suspects) >= POISON_SITES:
                        raise self._poisoned(suspects, attempts)
                    continue
                for site in suspect_sites:  # another site served it: those 500s were the sites' own
                    self.tries.blame(site, "answered 500 to a request another site served")
                return await deliver(outcome, attempts, candidates)
            finally:
                self.inflight.change(key, -1)
        why = "; ".join(failures[-3:]) or "the request budget ran out"
        raise Unserved(
            503,
            f"Every site tried for `{model}` failed ({why}).",
            type="server_error",
            code="no_site_available",
            attempts=attempts,
        )

    def _poisoned(self, suspects: list[Failure], attempts: int) -> Unserved:
        """The same request failed the same way at two sites: the request's fault, answered as a client
        error, and held against neither site."""
        self.poisoned.inc()
        said = suspects[-1].message or "an internal error"
        return Unserved(
            400,
            f"The model server could not process this request at {len(suspects)} sites ({said}). Check the"
            " request: it is not retried further.",
            type="invalid_request_error",
            code="request_not_processable",
            attempts=attempts,
        )
