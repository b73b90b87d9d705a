"""Passing a good answer on to the client: a whole body at once, or a stream event by event, resumed at the
next candidate when it breaks before the model finished."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from edgeplane._errors import BackendError
from edgeplane.gateway._attempt import Failure, Ready, Tries
from edgeplane.gateway._record import RequestRecord
from edgeplane.gateway._sse import DONE, StreamProgress, resume_body
from edgeplane.routing import Candidate
from edgeplane.web import Endpoint, InferenceRequest, error_event

log = logging.getLogger("edgeplane.gateway")


def served_headers(base: dict[str, str], ready: Ready, attempts: int) -> dict[str, str]:
    """The headers that tell the client where its answer came from."""
    candidate = ready.candidate
    headers = {
        **base,
        "x-edgeplane-metro": candidate.metro,
        "x-edgeplane-site": candidate.pop,
        "x-edgeplane-scope": str(candidate.scope),
        "x-edgeplane-attempts": str(attempts),
    }
    unit = ready.reply.headers.get("x-edgeplane-unit")
    if unit:
        headers["x-edgeplane-unit"] = unit
    return headers


class Relay:
    def __init__(self, tries: Tries, *, max_attempts: int, first_token_timeout_seconds: float) -> None:
        self.tries = tries  # for resuming a broken stream elsewhere
        self.max_attempts = max_attempts
        self.first_token_timeout_seconds = first_token_timeout_seconds

    async def respond(
        self,
        request: web.Request,
        parsed: InferenceRequest,
        ready: Ready,
        attempts: int,
        rest: list[Candidate],
        base_headers: dict[str, str],
        record: RequestRecord,
    ) -> web.StreamResponse:
        """The client's response to a good answer; ``rest``: the candidates left to resume a stream at."""
        headers = served_headers(base_headers, ready, attempts)
        if ready.events is None:
            ready.reply.release()
            content_type = ready.reply.content_type.split(";")[0] or "application/json"
            return web.Response(body=ready.body, status=ready.reply.status, content_type=content_type, headers=headers)
        return await self._relay(request, parsed, ready, attempts, rest, headers, record)

    async def _relay(
        self,
        request: web.Request,
        parsed: InferenceRequest,
        ready: Ready,
        attempts: int,
        candidates: list[Candidate],
        headers: dict[str, str],
        record: RequestRecord,
    ) -> web.StreamResponse:
        """Relay a stream event by event. If it breaks before the model finished, resume it on the next
        candidate (the prompt plus what was sent); if that cannot be done, end with an error event."""
        endpoint = parsed.endpoint
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        progress = StreamProgress()
        resumable = endpoint is Endpoint.CHAT or isinstance(parsed.body.get("prompt"), str)
        current: Ready | None = ready
        try:
            while current is not None:
                assert current.events is not None and current.first is not None
                event: bytes | None = current.first
                broke = ""
                try:
                    while event is not None:
                        progress.observe(event)
                        await response.write(event)
                        if progress.done:
                            break
                        event = await current.events.next()
                except BackendError as error:
                    broke = str(error)
                finally:
                    current.reply.release()
                    await current.events.aclose()
                if progress.done:
                    break
                if progress.finished:
                    # The model finished; only the closing marker was lost.
                    await response.write(DONE)
                    break
                site = current.candidate.pop
                self.tries.count(site, "stream_broken")
                self.tries.blame(site, f"stream broke after {progress.tokens} tokens")
                log.warning("stream from %s broke after %d tokens: %s", site, progress.tokens, broke or "ended early")
                current = None
                while resumable and candidates and attempts < self.max_attempts:
                    candidate = candidates.pop(0)
                    attempts += 1
                    again = orjson.dumps(resume_body(parsed.body, progress, chat=endpoint is Endpoint.CHAT))
                    outcome = await self.tries.attempt(
                        candidate, endpoint, again, True, self.first_token_timeout_seconds
                    )
                    if isinstance(outcome, Failure):
                        continue
                    note = f": edgeplane resumed at {candidate.pop} after {progress.tokens} tokens from {site}\n\n"
                    await response.write(note.encode())
                    self.tries.count(candidate.pop, "resumed")
                    current = outcome
                    break
                if current is None:
                    message = f"The stream was cut short after {progress.tokens} tokens and could not be resumed."
                    await response.write(error_event(message, type="server_error", code="stream_interrupted"))
                    break
            await response.write_eof()
        except ConnectionError:
            pass  # the client left; the finally blocks above released the site's answer
        before = record.tokens_out
        if progress.events:
            record.count_usage(progress.events[-1])
        if record.tokens_out == before:  # no usage reported: count the events that carried tokens
            record.tokens_out = max(0, len(progress.events) - 1)
        record.attempts = attempts
        return response
