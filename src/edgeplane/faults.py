"""The catalogue of faults a site can be told to show, for tests, drills and `edgeplane fault`."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class FaultKind(enum.Enum):
    REFUSE = "refuse-connections"
    CRASH = "crash"
    STALL = "stall-first-token"
    CUT = "cut-stream"
    SLOW = "slow"
    ERROR_200 = "error-200"
    HTTP_429 = "http-429"
    HTTP_503 = "http-503"

    def __str__(self) -> str:
        return self.value


CATALOGUE: dict[FaultKind, str] = {
    FaultKind.REFUSE: "stop accepting connections for --seconds (default 10), then listen again",
    FaultKind.CRASH: "exit the site agent process at once, as a crash would",
    FaultKind.STALL: "hold every answer before its first token for --seconds (default: until cleared)",
    FaultKind.CUT: "drop the connection after --tokens tokens (default 3) of every answer",
    FaultKind.SLOW: "run every answer --factor times slower (default 5)",
    FaultKind.ERROR_200: "answer 200 with an error body instead of a completion",
    FaultKind.HTTP_429: "answer 429 Too Many Requests",
    FaultKind.HTTP_503: "answer 503 Service Unavailable",
}


MAX_TOKENS = 2**31
MAX_FACTOR = 1e6
MAX_SECONDS = 1e9


class FaultError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    tokens: int = 3
    factor: float = 5.0
    seconds: float | None = None  # how long it lasts (REFUSE, STALL); None: until cleared
    # Health probes (which say X-Edgeplane-Probe) get a whole answer: a gray failure that only clients' requests
    # meet, which the gateway learns of by trying the site, as when probes are too small to hit it.
    spare_probes: bool = False

    def __repr__(self) -> str:
        spared = " sparing probes" if self.spare_probes else ""
        return f"<Fault {self.kind} tokens={self.tokens} factor={self.factor} seconds={self.seconds}{spared}>"

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.kind.value,
            "tokens": self.tokens,
            "factor": self.factor,
            "seconds": self.seconds,
            "spare_probes": self.spare_probes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        try:
            kind = FaultKind(data.get("fault"))
        except ValueError:
            names = ", ".join(k.value for k in FaultKind)
            raise FaultError(f"unknown fault {data.get('fault')!r}; expected one of: {names}") from None
        tokens, factor, seconds = data.get("tokens", 3), data.get("factor", 5.0), data.get("seconds")
        # The bounds are those of the control plane's reports (edgeplane.control's FaultView): a fault set
        # here must not make the agent's own reports unacceptable.
        if not isinstance(tokens, int) or isinstance(tokens, bool) or not 0 <= tokens <= MAX_TOKENS:
            raise FaultError(f"`tokens` must be an integer from 0 to {MAX_TOKENS}")
        if not isinstance(factor, int | float) or isinstance(factor, bool) or not 0 < factor <= MAX_FACTOR:
            raise FaultError(f"`factor` must be a number above 0 and at most {MAX_FACTOR:g}")
        if seconds is not None and (
            not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= MAX_SECONDS
        ):
            raise FaultError(f"`seconds` must be a number above 0 and at most {MAX_SECONDS:g}")
        spare_probes = data.get("spare_probes", False)
        if not isinstance(spare_probes, bool):
            raise FaultError("`spare_probes` must be true or false")
        if spare_probes and kind in (FaultKind.REFUSE, FaultKind.CRASH):
            raise FaultError(f"{kind} cannot spare probes: it takes the whole agent away")
        if kind is FaultKind.REFUSE and seconds is None:
            seconds = 10.0  # nobody could reach the agent to clear it
        return cls(kind, tokens, float(factor), float(seconds) if seconds is not None else None, spare_probes)
