"""Active health probes on the inference path: a tiny real completion, not only /healthz."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import orjson

from edgeplane._errors import BackendError, ConnectError
from edgeplane.health import HealthBook, Outcome
from edgeplane.routing import SiteState, SiteView
from edgeplane.web._client import HttpClient

PROBE_INTERVAL_SECONDS = 1.0
PROBE_HEADER = "X-Edgeplane-Probe"  # says a request is a health probe (a fault may spare it)
PROBE_TIMEOUT_SECONDS = 2.0


async def probe(
    client: HttpClient, url: str, model: str, timeout_seconds: float = PROBE_TIMEOUT_SECONDS
) -> tuple[Outcome, str, float]:
    """Ask for one token; the outcome, why, and the seconds it took."""
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1})
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_seconds):
            reply = await client.post(url + "/v1/chat/completions", body, headers={PROBE_HEADER: "1"})
            try:
                data = await reply.read()
            finally:
                reply.release()
    except ConnectError as error:
        return Outcome.CONNECT_ERROR, f"probe: {error}", time.monotonic() - started
    except (BackendError, TimeoutError) as error:
        return Outcome.ERROR, f"probe: {error or 'timed out'}", time.monotonic() - started
    took = time.monotonic() - started
    if reply.status != 200:
        return Outcome.ERROR, f"probe: answered {reply.status}", took
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Outcome.ERROR, "probe: answered 200 with a body that is not JSON", took
    if not isinstance(answer, dict) or not answer.get("choices"):
        return Outcome.ERROR, "probe: answered 200 without a completion", took
    return Outcome.OK, "", took


async def probe_sites(book: HealthBook, client: HttpClient, sites: Mapping[str, SiteView]) -> None:
    """Probe every site that is not drained and has an address, except those whose ejection has not run
    out (a site down by these very probes must be probed to come back). The book is in time.monotonic()."""
    now = time.monotonic()

    async def one(view: SiteView) -> None:
        assert view.url is not None
        outcome, why, _ = await probe(client, view.url, min(view.models))
        book.record(view.pop, outcome, time.monotonic(), why=why)

    targets = [
        v
        for v in sites.values()
        if v.state is not SiteState.DRAINED and v.url and v.models and book.may_probe(v.pop, now)
    ]
    async with asyncio.TaskGroup() as group:
        for view in targets:
            group.create_task(one(view))
