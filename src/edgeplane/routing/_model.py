"""The words of a routing decision: scopes, site states, candidates and the decision itself."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Scope(enum.IntEnum):
    """How far traffic travels from the client's metro; lower is closer."""

    METRO = 1
    REGION = 2
    CONTINENT = 3
    GLOBAL = 4

    def __str__(self) -> str:
        return self.name.lower()


class SiteState(enum.Enum):
    SERVING = "serving"
    DEGRADED = "degraded"  # serving, but failing or slow lately: used after healthy sites of its scope
    DRAINED = "drained"
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class SiteView:
    """What the gateway knows of one PoP from its snapshot."""

    pop: str
    state: SiteState
    models: frozenset[str]
    url: str | None = None
    load: float = 0.0  # 0..1, the busiest model's share of its batch slots
    reason: str = ""
    busy: Mapping[str, int] = field(default_factory=dict)  # per model: requests running or waiting
    busy_at: float = 0.0  # unix seconds when the site read its busy counts; 0 when unknown
    # Per model, the replicas left where some of the PoP's units carry no traffic (drained, alarmed, in
    # maintenance); a model not named here serves with all its placed replicas.
    replicas: Mapping[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<SiteView {self.pop} {self.state} load={self.load:.2f} models={len(self.models)}>"


class Candidate(NamedTuple):
    """A site that could serve, with its predicted time to first token: RTT + queue wait + prefill.
    A named tuple, since the request path builds one per usable site and tuples are cheapest."""

    pop: str
    metro: str
    scope: Scope
    rtt_ms: float
    load: float
    cost_ms: float  # the predicted TTFT, plus a penalty if the site is degraded
    url: str | None
    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    within_slo: bool = True
    full: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "pop": self.pop,
            "metro": self.metro,
            "scope": str(self.scope),
            "rtt_ms": round(self.rtt_ms, 3),
            "queue_ms": round(self.queue_ms, 3),
            "prefill_ms": round(self.prefill_ms, 3),
            "predicted_ttft_ms": round(self.rtt_ms + self.queue_ms + self.prefill_ms, 3),
            "load": round(self.load, 4),
            "cost_ms": round(self.cost_ms, 3),
            "within_slo": self.within_slo,
            "full": self.full,
        }


@dataclass(frozen=True, slots=True)
class PassedOver:
    pop: str
    metro: str
    scope: Scope
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"pop": self.pop, "metro": self.metro, "scope": str(self.scope), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes and why: ordered candidates (first is chosen, the rest are for failover)."""

    client: str
    client_metro: str
    located_by: str
    model: str
    candidates: tuple[Candidate, ...]
    passed_over: tuple[PassedOver, ...] = field(default=())

    @property
    def chosen(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def scope(self) -> Scope | None:
        return self.candidates[0].scope if self.candidates else None

    def explain(self) -> list[str]:
        lines = [f"client {self.client} is in metro {self.client_metro} ({self.located_by})"]
        chosen = self.chosen
        if chosen is None:
            lines.append(f"no site can serve {self.model}")
        else:
            lines.append(
                f"serve {self.model} at {chosen.pop} in {chosen.metro}, scope {chosen.scope}: predicted time to"
                f" first token {chosen.rtt_ms + chosen.queue_ms + chosen.prefill_ms:.1f} ms (rtt {chosen.rtt_ms:.1f},"
                f" queue {chosen.queue_ms:.1f}, prefill {chosen.prefill_ms:.1f}; load {chosen.load:.0%})"
            )
        for passed in self.passed_over:
            lines.append(f"passed over {passed.pop} ({passed.scope}): {passed.reason}")
        return lines

    def to_json(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "client": self.client,
            "client_metro": self.client_metro,
            "located_by": self.located_by,
            "model": self.model,
            "scope": str(self.scope) if self.scope else None,
            "pop": chosen.pop if chosen else None,
            "metro": chosen.metro if chosen else None,
            "candidates": [c.to_json() for c in self.candidates],
            "passed_over": [p.to_json() for p in self.passed_over],
            "explanation": self.explain(),
        }
