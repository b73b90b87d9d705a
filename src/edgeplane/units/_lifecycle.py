"""The life of a modular unit, from order to decommissioning: its states, the moves allowed between them, and
the factory acceptance results a unit must pass before it ships. Pure: the control plane keeps the records."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class UnitState(enum.StrEnum):
    ORDERED = "ordered"
    ASSEMBLING = "assembling"
    FACTORY_ACCEPTANCE_TEST = "factory-acceptance-test"
    SHIPPING = "shipping"
    COMMISSIONING = "commissioning"
    IN_SERVICE = "in-service"
    MAINTENANCE = "maintenance"
    DECOMMISSIONED = "decommissioned"


S = UnitState
# Forward through the factory and the field; back to assembly when a unit fails its acceptance test; into and
# out of maintenance; decommissioned from anywhere, and for good.
MOVES: Mapping[UnitState, frozenset[UnitState]] = {
    S.ORDERED: frozenset({S.ASSEMBLING, S.DECOMMISSIONED}),
    S.ASSEMBLING: frozenset({S.FACTORY_ACCEPTANCE_TEST, S.DECOMMISSIONED}),
    S.FACTORY_ACCEPTANCE_TEST: frozenset({S.SHIPPING, S.ASSEMBLING, S.DECOMMISSIONED}),
    S.SHIPPING: frozenset({S.COMMISSIONING, S.DECOMMISSIONED}),
    S.COMMISSIONING: frozenset({S.IN_SERVICE, S.MAINTENANCE, S.DECOMMISSIONED}),
    S.IN_SERVICE: frozenset({S.MAINTENANCE, S.DECOMMISSIONED}),
    S.MAINTENANCE: frozenset({S.IN_SERVICE, S.DECOMMISSIONED}),
    S.DECOMMISSIONED: frozenset(),
}
# Burn-in figures a factory acceptance test reports; `passed` is required, the rest are kept as given.
SECONDS_PER_MONTH = 30.44 * 86400  # an average month, for lead times
# Burn-in figures a factory acceptance test reports (see check_acceptance).
ACCEPTANCE_NUMBERS = ("burn_in_hours", "gpus_tested", "gpus_failed", "peak_inlet_c", "peak_power_kw")


class LifecycleError(ValueError):
    """A move the lifecycle does not allow, or acceptance results that do not make sense; says which."""


@dataclass(frozen=True, slots=True)
class Change:
    at: float  # unix seconds
    state: UnitState
    by: str
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "state": str(self.state), "by": self.by, "note": self.note}


@dataclass(frozen=True, slots=True)
class UnitRecord:
    code: str
    pop: str
    state: UnitState
    since: float
    by: str
    origin: str  # "fleet" (in the fleet file) or "order" (ordered through the control plane)
    due: float | None = None  # when an ordered unit is expected in service (unix seconds)
    acceptance: Mapping[str, Any] | None = None  # the latest factory acceptance results
    history: tuple[Change, ...] = field(default_factory=tuple)

    @property
    def carries_traffic(self) -> bool:
        return self.state is UnitState.IN_SERVICE

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "pop": self.pop,
            "state": str(self.state),
            "since": self.since,
            "by": self.by,
            "origin": self.origin,
            "due": self.due,
            "carries_traffic": self.carries_traffic,
            "acceptance": dict(self.acceptance) if self.acceptance is not None else None,
            "history": [c.to_json() for c in self.history],
        }


def check_acceptance(results: Any) -> dict[str, Any]:
    """Factory acceptance results as given, checked: an object with `passed` (true or false) and, where given,
    non-negative numbers for the burn-in figures (no more GPUs failed than tested)."""
    if not isinstance(results, dict):
        raise LifecycleError('acceptance results must be a JSON object, e.g. {"passed": true, "burn_in_hours": 48}')
    if not isinstance(results.get("passed"), bool):
        raise LifecycleError("acceptance results need `passed`: true or false")
    for name in ACCEPTANCE_NUMBERS:
        value = results.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise LifecycleError(f"acceptance `{name}` must be a non-negative number, not {value!r}")
    tested, failed = results.get("gpus_tested"), results.get("gpus_failed")
    if isinstance(tested, int | float) and isinstance(failed, int | float) and failed > tested:
        raise LifecycleError(f"acceptance says {failed} GPUs failed of {tested} tested")
    return dict(results)


def move(
    record: UnitRecord, to: UnitState, *, at: float, by: str, note: str = "", acceptance: Any = None
) -> UnitRecord:
    """The record after moving to ``to``, or LifecycleError saying why not and what is allowed from here.
    Acceptance results may be recorded on entering or leaving the factory acceptance test; shipping needs
    results that passed."""
    if to not in MOVES[record.state]:
        allowed = ", ".join(sorted(str(s) for s in MOVES[record.state])) or "nothing (it is for good)"
        raise LifecycleError(f"unit {record.code} is {record.state}: it can go to {allowed}, not {to}")
    results = record.acceptance
    if acceptance is not None:
        if S.FACTORY_ACCEPTANCE_TEST not in (record.state, to):
            raise LifecycleError("acceptance results belong to the factory acceptance test (entering or leaving it)")
        results = check_acceptance(acceptance)
    if to is S.SHIPPING and not (results is not None and results.get("passed") is True):
        raise LifecycleError(
            f"unit {record.code} cannot ship before it passes its factory acceptance test: record the results"
            ' (for example --acceptance \'{"passed": true, "burn_in_hours": 48}\')'
        )
    if (
        to is S.ASSEMBLING
        and record.state is S.FACTORY_ACCEPTANCE_TEST
        and results is not None
        and results.get("passed")
    ):
        raise LifecycleError(f"unit {record.code} passed its factory acceptance test: ship it rather than rework it")
    change = Change(at, to, by, note)
    return UnitRecord(
        record.code,
        record.pop,
        to,
        at,
        by,
        record.origin,
        record.due,
        results,
        (*record.history, change),
    )


def unit_from_json(data: Mapping[str, Any]) -> UnitRecord:
    """A record as :meth:`UnitRecord.to_json` wrote it."""
    history = tuple(
        Change(float(c["at"]), UnitState(c["state"]), str(c["by"]), str(c.get("note", ""))) for c in data["history"]
    )
    due = data.get("due")
    acceptance = data.get("acceptance")
    return UnitRecord(
        str(data["code"]),
        str(data["pop"]),
        UnitState(data["state"]),
        float(data["since"]),
        str(data["by"]),
        str(data["origin"]),
        float(due) if due is not None else None,
        dict(acceptance) if isinstance(acceptance, dict) else None,
        history,
    )
