"""Cascade protection: would a drain push more load onto the receiving sites than they have room for?

Pure: it replays the moved load through the same router the gateways run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from edgeplane.routing import Router, SiteState, SiteView

# A receiving site may be filled to this share of its batch slots.
MAX_UTILISATION = 0.9


@dataclass(frozen=True, slots=True)
class Overload:
    pop: str
    model: str
    busy_now: int
    moved_in: int
    limit: int

    def __str__(self) -> str:
        return (
            f"{self.pop} would carry {self.busy_now + self.moved_in} requests of {self.model} "
            f"({self.busy_now} now + {self.moved_in} moved in) against a limit of {self.limit}"
        )


@dataclass(frozen=True, slots=True)
class DrainCheck:
    """What a drain would do to the rest of the fleet."""

    moved: dict[str, dict[str, int]] = field(default_factory=dict)  # receiving PoP -> model -> requests
    overloads: list[Overload] = field(default_factory=list)
    stranded: dict[str, int] = field(default_factory=dict)  # model -> requests nobody else serves
    advice: list[str] = field(default_factory=list)
    receivers: dict[str, dict[str, str]] = field(default_factory=dict)  # drained PoP -> model -> who takes it first

    @property
    def ok(self) -> bool:
        return not self.overloads and not self.stranded

    def reasons(self) -> list[str]:
        out = [str(o) for o in self.overloads]
        out += [f"{n} requests of {model} would have no other site to go to" for model, n in self.stranded.items()]
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok, "moved": self.moved, "reasons": self.reasons(), "advice": self.advice,
            "receivers": self.receivers,
        }  # fmt: skip


def check_drain(
    router: Router,
    sites: Mapping[str, SiteView],
    drained: Iterable[str],
    *,
    reduced: Mapping[str, Mapping[str, int]] | None = None,
    max_utilisation: float = MAX_UTILISATION,
) -> DrainCheck:
    """Move the busy requests of the ``drained`` PoPs where the router would send their clients, filling
    receiving sites in the router's order up to ``max_utilisation`` of their slots. A PoP in ``reduced``
    keeps serving with fewer replicas (model -> replicas left, when a unit stops carrying traffic): what
    its remaining slots cannot hold moves."""
    fleet = router.fleet
    drained = set(drained)
    reduced = reduced or {}
    after = dict(sites)
    for code in drained & set(sites):
        after[code] = replace(sites[code], state=SiteState.DRAINED, reason="drain being checked")
    for code, left in reduced.items():
        if code in after and code not in drained:
            kept = after[code]
            gone = {m for m, n in left.items() if n <= 0}
            after[code] = replace(kept, models=kept.models - gone, replicas={**kept.replicas, **left})
    leaving: dict[str, dict[str, int]] = {}
    for pop in sorted(drained | set(reduced)):
        view = sites.get(pop)
        if view is None or view.state not in (SiteState.SERVING, SiteState.DEGRADED):
            continue  # it carries nothing now
        for model, busy in sorted(view.busy.items()):
            keep = 0
            if pop not in drained and model in after[pop].models:
                keep = min(busy, int(router.slots(pop, model, after[pop]) * max_utilisation))
            if busy > keep:
                leaving.setdefault(pop, {})[model] = busy - keep
    extra: dict[tuple[str, str], int] = {}
    moved: dict[str, dict[str, int]] = {}
    overloads: dict[tuple[str, str], Overload] = {}
    stranded: dict[str, int] = {}
    for pop, models in leaving.items():
        metro = fleet.pop_by_code[pop].metro
        for model, remaining in models.items():
            decision = router.decide_for_metro("drain check", metro, "drain check", model, after, explain=False)
            for candidate in decision.candidates:
                slots = router.slots(candidate.pop, model, after[candidate.pop])
                now = after[candidate.pop].busy.get(model, 0) + extra.get((candidate.pop, model), 0)
                room = max(0, int(slots * max_utilisation) - now)
                take = min(room, remaining)
                if take:
                    extra[(candidate.pop, model)] = extra.get((candidate.pop, model), 0) + take
                    moved.setdefault(candidate.pop, {})[model] = moved.get(candidate.pop, {}).get(model, 0) + take
                    remaining -= take
                if not remaining:
                    break
            if remaining and not decision.candidates:
                stranded[model] = stranded.get(model, 0) + remaining
            elif remaining:
                # Everything in reach is full: the closest receiving site takes the rest, over its limit.
                first = decision.candidates[0].pop
                extra[(first, model)] = extra.get((first, model), 0) + remaining
                moved.setdefault(first, {})[model] = moved.get(first, {}).get(model, 0) + remaining
                limit = int(router.slots(first, model, after[first]) * max_utilisation)
                busy_now = after[first].busy.get(model, 0)
                overloads[(first, model)] = Overload(first, model, busy_now, extra[(first, model)], limit)
    advice: list[str] = []
    for overload in overloads.values():
        per_replica = router.slots(overload.pop, overload.model) // max(
            1, router.replicas(overload.pop, overload.model)
        )
        short = overload.busy_now + overload.moved_in - overload.limit
        replicas = -(-short // max(1, int(per_replica * max_utilisation)))
        advice.append(f"add {replicas} replica(s) of {overload.model} at {overload.pop}, or drain when load is lower")
    for model in stranded:
        advice.append(f"place {model} at another site before draining")
    # Who takes each drained PoP's traffic first, model by model, loaded or not now: what must be warm.
    receivers: dict[str, dict[str, str]] = {}
    for pop in sorted(drained & set(sites)):
        metro = fleet.pop_by_code[pop].metro
        for model in sorted(sites[pop].models):
            decision = router.decide_for_metro("drain check", metro, "drain check", model, after, explain=False)
            if decision.candidates:
                receivers.setdefault(pop, {})[model] = decision.candidates[0].pop
    return DrainCheck(moved, list(overloads.values()), stranded, advice, receivers)
