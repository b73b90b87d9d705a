"""Server-sent events as whole events, and what a relayed completion stream has said so far."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

_BOUNDARY = re.compile(rb"\r?\n\r?\n")
DONE = b"data: [DONE]\n\n"


class EventReader:
    """Cuts a byte stream into complete events (each ending with a blank line), so that a break upstream
    never leaves half an event at the client."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self.ended = False  # the upstream body ended (cleanly or not)

    async def next(self) -> bytes | None:
        """The next whole event, or None when the body has ended. Errors of the source propagate."""
        while True:
            match = _BOUNDARY.search(self._buffer)
            if match:
                event, self._buffer = self._buffer[: match.end()], self._buffer[match.end() :]
                return event
            if self.ended:
                return None
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self.ended = True
                continue
            self._buffer += chunk

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


def event_data(event: bytes) -> Any:
    """The JSON of an event's data lines; None for comments, [DONE] or anything that is not JSON."""
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    if not lines:
        return None
    payload = b"\n".join(lines)
    if payload == b"[DONE]":
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def is_error_event(data: Any) -> bool:
    return isinstance(data, dict) and "error" in data and not data.get("choices")


_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')


@dataclass
class StreamProgress:
    """What the client has been sent, so that a broken stream can be resumed elsewhere. Events are kept
    as bytes and parsed only if a resume needs the partial text: the request path only scans them."""

    events: list[bytes] = field(default_factory=list)
    finished: bool = False  # the model gave a finish_reason
    done: bool = False  # [DONE] was relayed
    _parsed: list[str] | None = None  # the pieces of text, parsed once when first asked for

    def observe(self, event: bytes) -> None:
        if b"[DONE]" in event and event.lstrip().startswith(b"data:") and event_data(event) is None:
            self.done = True
            return
        self.events.append(event)
        self._parsed = None
        if _FINISHED.search(event):
            self.finished = True

    def _pieces(self) -> list[str]:
        if self._parsed is not None:
            return self._parsed
        pieces = []
        for event in self.events:
            data = event_data(event)
            if not isinstance(data, dict):
                continue
            for choice in data.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if isinstance(piece, str) and piece:
                    pieces.append(piece)
        self._parsed = pieces
        return pieces

    @property
    def tokens(self) -> int:
        return len(self._pieces())

    @property
    def partial(self) -> str:
        return "".join(self._pieces())


def resume_body(body: dict[str, Any], progress: StreamProgress, *, chat: bool) -> dict[str, Any]:
    """The request that continues an answer from where it broke: the prompt plus what was already sent."""
    again = dict(body)
    if chat:
        again["messages"] = [*body["messages"], {"role": "assistant", "content": progress.partial}]
        again["continue_final_message"] = True
        again["add_generation_prompt"] = False
    else:
        again["prompt"] = str(body["prompt"]) + progress.partial
    for name in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int):
            again[name] = max(1, body[name] - progress.tokens)
    return again
