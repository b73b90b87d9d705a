"""What each PoP does with its metro's prefixes (announce, graceful shutdown, withdraw), from drains and health."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from edgeplane.bgp._intents import Intent, pop_intents
from edgeplane.fleet import Fleet

# RFC 8326 leaves the length to the operator: long enough for the neighbours to move traffic away.
GRACEFUL_SHUTDOWN_SECONDS = 30.0


class Announcement(enum.Enum):
    ANNOUNCED = "announced"
    GRACEFUL_SHUTDOWN = "graceful-shutdown"  # still announced, tagged 65535:0, withdrawal planned
    WITHDRAWN = "withdrawn"


class DrainLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def code(self) -> str: ...
    @property
    def since(self) -> float: ...  # unix seconds
    @property
    def by(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PopEdge:
    """The state of one PoP's metro-specific announcements, and why."""

    pop: str
    metro: str
    state: Announcement
    reason: str = ""
    until: float | None = None  # end of the graceful-shutdown period (unix seconds)

    def to_json(self) -> dict[str, Any]:
        return {"pop": self.pop, "metro": self.metro, "state": self.state.value, "reason": self.reason,
                "until": self.until}  # fmt: skip


@dataclass(frozen=True, slots=True)
class EdgePlan:
    """Every PoP's announcement state; ``held`` names failed PoPs whose withdrawal the blast radius stopped."""

    pops: dict[str, PopEdge]
    held: tuple[str, ...] = ()

    def intents(self, fleet: Fleet, pop: str) -> list[Intent]:
        edge = self.pops[pop]
        metro = {edge.metro}
        quiet = [code for code, other in self.pops.items() if other.state is not Announcement.ANNOUNCED]
        return pop_intents(
            fleet,
            pop,
            withdrawn_metros=metro if edge.state is Announcement.WITHDRAWN else (),
            shutting_down_metros=metro if edge.state is Announcement.GRACEFUL_SHUTDOWN else (),
            quiet_pops=quiet,
        )

    def withdrawn_metros(self) -> set[str]:
        by_metro: dict[str, list[PopEdge]] = {}
        for edge in self.pops.values():
            by_metro.setdefault(edge.metro, []).append(edge)
        return {m for m, edges in by_metro.items() if all(e.state is Announcement.WITHDRAWN for e in edges)}

    def shape(self) -> tuple[Any, ...]:
        """What a speaker acts on; a change here is a new version of the intents."""
        return tuple((e.pop, e.state) for e in self.pops.values())


def plan_edge(
    fleet: Fleet,
    *,
    drains: Iterable[DrainLike],
    failed_pops: Collection[str],
    now: float,
    graceful_shutdown_seconds: float = GRACEFUL_SHUTDOWN_SECONDS,
    max_withdrawn_metros: int = 2,
) -> EdgePlan:
    """Planned drains withdraw after a GRACEFUL_SHUTDOWN period; failed PoPs withdraw at once, unless that
    would take more than ``max_withdrawn_metros`` metros off the map (then the withdrawal is held and said so:
    a health check gone wrong must not empty a continent). Aggregates are not touched here: they stay."""
    drain_of: dict[tuple[str, str], DrainLike] = {(d.kind, d.code): d for d in drains}
    pops: dict[str, PopEdge] = {}
    for pop in fleet.pops:
        drain = drain_of.get(("metro", pop.metro)) or drain_of.get(("pop", pop.code))
        if drain is None:
            pops[pop.code] = PopEdge(pop.code, pop.metro, Announcement.ANNOUNCED)
            continue
        until = drain.since + graceful_shutdown_seconds
        why = f"{drain.kind} {drain.code} drained by {drain.by}"
        if now < until:
            pops[pop.code] = PopEdge(pop.code, pop.metro, Announcement.GRACEFUL_SHUTDOWN, why, until)
        else:
            pops[pop.code] = PopEdge(pop.code, pop.metro, Announcement.WITHDRAWN, why)
    held: list[str] = []
    by_metro: dict[str, list[str]] = {}
    for pop in fleet.pops:
        by_metro.setdefault(pop.metro, []).append(pop.code)
    withdrawn = EdgePlan(pops).withdrawn_metros()
    for metro, codes in by_metro.items():
        failing = [c for c in codes if c in failed_pops]
        if not failing or any(pops[c].state is not Announcement.ANNOUNCED for c in failing):
            continue
        whole_metro = all(c in failing or pops[c].state is Announcement.WITHDRAWN for c in codes)
        if whole_metro and len(withdrawn) + 1 > max_withdrawn_metros:
            reason = (
                f"failed, but withdrawal held: {len(withdrawn)} metros are withdrawn already and the"
                f" blast radius allows {max_withdrawn_metros}"
            )
            for code in failing:
                pops[code] = PopEdge(code, metro, Announcement.ANNOUNCED, reason)
                held.append(code)
            continue
        for code in failing:
            pops[code] = PopEdge(code, metro, Announcement.WITHDRAWN, "failed health checks")
        if whole_metro:
            withdrawn.add(metro)
    return EdgePlan(pops, tuple(held))
