"""One try at one site: send the request, hold the answer back until it is known to be good, and judge the
site by how it went."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from prometheus_client import Counter

from edgeplane._errors import BackendError, ConnectError
from edgeplane.gateway._sse import EventReader, event_data, is_error_event
from edgeplane.health import HealthBook, Outcome
from edgeplane.routing import Candidate
from edgeplane.web import Endpoint, HttpClient, Reply, error_message

log = logging.getLogger("edgeplane.gateway")

# Site answers that say "not here, not now": safe to try the next candidate while nothing was sent yet.
# Inference has no side effects, so a 5xx or a 429 from one site is retried on the next.
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(slots=True)
class Ready:
    """A site's answer, held back until it is known to be good: the whole body, or the first stream event."""

    candidate: Candidate
    reply: Reply
    body: bytes | None = None
    events: EventReader | None = None
    first: bytes | None = None
    ttft_seconds: float | None = None  # streams only: until the first event


@dataclass(frozen=True, slots=True)
class Failure:
    """A try that did not give an answer to pass on. ``suspect``: the site answered 500, which may be the
    request's own fault (a body the model server chokes on): it counts against the site only once another
    site has served the same request, and the request itself is refused when a second site does the same."""

    reason: str
    suspect: bool = False
    message: str = ""


class SiteJudge:
    """This gateway's own verdicts on sites, from what its tries met; a site's change of state is logged."""

    def __init__(self, book: HealthBook, clock: Callable[[], float] = time.monotonic) -> None:
        self.book = book
        self.clock = clock

    def record(self, site: str, outcome: Outcome, *, ttft_seconds: float | None = None, why: str = "") -> None:
        before = self.book.state(site)
        after = self.book.record(site, outcome, self.clock(), ttft_seconds=ttft_seconds, why=why)
        if after is not before:
            log.warning("site %s is %s here (%s)", site, after, why or outcome.value)


class Tries:
    """Sends tries to sites, counts each by outcome and has the judge hold it for or against its site."""

    def __init__(
        self, client: HttpClient, judge: SiteJudge, outcomes: Counter, *, first_token_timeout_seconds: float
    ) -> None:
        self.client = client
        self.judge = judge
        self.outcomes = outcomes  # by site and outcome
        self.first_token_timeout_seconds = first_token_timeout_seconds

    def count(self, site: str, outcome: str) -> None:
        self.outcomes.labels(site, outcome).inc()

    def blame(self, site: str, why: str) -> None:
        """Hold an error against a site found out after its try: a 500 another site did not repeat, a
        stream that broke."""
        self.judge.record(site, Outcome.ERROR, why=why)

    async def attempt(
        self, candidate: Candidate, endpoint: Endpoint, raw: bytes, stream: bool, budget_seconds: float
    ) -> Ready | Failure:
        """Try one site and hold its answer back until it is known to be good; a Failure says why not."""
        assert candidate.url is not None
        site = candidate.pop
        sent = time.monotonic()
        # A stream's head comes at once, so its try is bounded by what is left of the request budget; a whole
        # answer's head comes with its last byte, so that try may run to the read timeout (the client's): a long
        # answer is not cut at the budget, and the budget only bounds when tries may start.
        try:
            async with asyncio.timeout(budget_seconds if stream else None):
                reply = await self.client.post(candidate.url + endpoint.value, raw)
        except ConnectError as error:
            return self._failed(site, "connect_error", f"{site}: {error}", Outcome.CONNECT_ERROR)
        except (BackendError, TimeoutError) as error:
            return self._failed(site, "connect_error", f"{site}: {str(error) or 'no answer in time'}")
        if reply.status == 500:
            return await self._suspect(site, reply)
        if reply.status in _RETRYABLE_STATUS:
            reply.close()
            return self._failed(site, f"status_{reply.status}", f"{site}: answered {reply.status}")
        if not (stream and reply.status == 200 and reply.content_type.startswith("text/event-stream")):
            try:
                body = await reply.read()
            except BackendError as error:
                reply.close()
                return self._failed(site, "read_error", f"{site}: {error}")
            if reply.status == 200 and _is_error_body(body):
                return self._failed(site, "error_body", f"{site}: answered 200 with an error body")
            self.count(site, "ok")
            self.judge.record(site, Outcome.OK)
            return Ready(candidate, reply, body=body)
        events = EventReader(reply.chunks())
        timeout = min(self.first_token_timeout_seconds, max(0.0, budget_seconds))
        try:
            async with asyncio.timeout(timeout):
                first = await events.next()
        except TimeoutError:
            reply.close()
            await events.aclose()
            return self._failed(site, "first_token_timeout", f"{site}: no first token in {timeout:.1f} s")
        except BackendError as error:
            reply.close()
            await events.aclose()
            return self._failed(site, "read_error", f"{site}: {error}")
        if first is None or is_error_event(event_data(first)):
            reply.close()
            await events.aclose()
            what = "an empty stream" if first is None else "an error event"
            return self._failed(site, "error_body", f"{site}: answered 200 with {what}")
        self.count(site, "ok")
        ttft = time.monotonic() - sent
        self.judge.record(site, Outcome.OK, ttft_seconds=ttft)
        return Ready(candidate, reply, events=events, first=first, ttft_seconds=ttft)

    def _failed(self, site: str, label: str, reason: str, outcome: Outcome = Outcome.ERROR) -> Failure:
        self.count(site, label)
        self.judge.record(site, outcome, why=reason)
        return Failure(reason)

    async def _suspect(self, site: str, reply: Reply) -> Failure:
        """A 500: not held against the site yet (see Failure)."""
        self.count(site, "status_500")
        try:
            body = await reply.read()
        except BackendError:
            reply.close()
            body = b""
        else:
            reply.release()
        return Failure(f"{site}: answered 500", suspect=True, message=error_message(body))


def _is_error_body(body: bytes) -> bool:
    """A 200 whose body is an error instead of a completion."""
    if not body.startswith(b"{") or b'"error"' not in body:
        return False
    try:
        return is_error_event(orjson.loads(body))
    except orjson.JSONDecodeError:
        return False
