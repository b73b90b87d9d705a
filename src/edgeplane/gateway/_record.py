"""One request as the gateway saw it, and the access log line it becomes."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson

from edgeplane.routing import Candidate

# One JSON line per request. It never holds headers or keys: only the key's id and tenant.
access_log = logging.getLogger("edgeplane.access")
access_log.propagate = False

_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


@dataclass(slots=True)
class RequestRecord:
    """One request as the gateway saw it, filled in as it goes: what the access log writes (never a header
    or a key), what the key's lease is charged and what the planner's observed demand counts."""

    request_id: str
    key_id: str | None = None
    tenant: str | None = None
    model: str | None = None
    stream: bool | None = None
    client_metro: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    metro: str | None = None  # where it was served
    site: str | None = None
    scope: str | None = None
    attempts: int | None = None
    ttft_ms: float | None = None
    status: int | None = None
    duration_ms: float | None = None

    def served_at(self, candidate: Candidate, attempts: int) -> None:
        self.metro, self.site, self.scope, self.attempts = (
            candidate.metro,
            candidate.pop,
            str(candidate.scope),
            attempts,
        )

    def count_usage(self, body: bytes) -> None:
        """Token counts from the usage a backend reported, found without parsing the whole answer."""
        for name, pattern in (("tokens_in", _PROMPT_TOKENS), ("tokens_out", _COMPLETION_TOKENS)):
            match = pattern.search(body)
            if match:
                setattr(self, name, int(match.group(1)))

    @property
    def tokens(self) -> int:
        return (self.tokens_in or 0) + (self.tokens_out or 0)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}

    def log(self, status: int, duration_ms: float) -> None:
        """Write the access log line, when the access log goes anywhere."""
        if access_log.handlers:
            self.status, self.duration_ms = status, duration_ms
            access_log.info(orjson.dumps(self.to_json()).decode())
