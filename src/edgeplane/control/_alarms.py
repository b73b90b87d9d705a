"""Unit alarms as the control plane judges them: an alarmed unit leaves routing under cascade protection
(safety alarms always; others only while the neighbours can take its load, else held and re-checked)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgeplane.control._errors import DrainRefused
from edgeplane.control._store import AuditRecord, Store

# Alarms that take a unit out of routing whatever it does to the rest of the fleet: a leak or a fire is not
# weighed against headroom. Other alarms (heat, power) drain a unit only as an operator's drain would: within
# the headroom and the blast radius; past them the alarm is held, shown and re-checked.
SAFETY_ALARMS = frozenset({"leak", "fire-suppression"})
HELD_RECHECK_SECONDS = 1.0


class AlarmJudge:
    """``out``: unit -> the alarms that took it out of routing; ``held``: unit -> why its alarms do not."""

    def __init__(self, store: Store, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self.store, self.clock, self.wall_clock = store, clock, wall_clock
        self.out: dict[str, str] = {}
        self.held: dict[str, str] = {}
        self._held_checked: dict[str, float] = {}  # unit -> when its held alarm was last checked (monotonic)

    def __repr__(self) -> str:
        out, held = ", ".join(sorted(self.out)) or "none", ", ".join(sorted(self.held)) or "none"
        return f"<AlarmJudge [out: {out}, held: {held}]>"

    def judge(
        self,
        pop: str,
        units: Sequence[str],
        alarmed: Mapping[str, list[str]],
        out: Mapping[str, str],
        check_drain: Callable[[str], object],
    ) -> None:
        """Take the PoP's alarmed ``units`` out of routing, under cascade protection; put them back once clear.
        ``out``: its units out of routing now; ``check_drain(unit)`` raises DrainRefused where draining one
        would overload the neighbours. Each decision is audited (action alarm-drain: ok, held, released)."""
        now = self.clock()
        who = f"alarm at {pop}"
        for code in units:
            rules = alarmed.get(code, [])
            if not rules:
                was_out, was_held = self.out.pop(code, None), self.held.pop(code, None)
                self._held_checked.pop(code, None)
                if was_out is not None or was_held is not None:
                    self.store.audit(AuditRecord(self.wall_clock(), who, "alarm-drain", f"unit {code}", "released", {}))
                continue
            why = ", ".join(rules)
            if code in self.out:
                self.out[code] = why
                continue
            safety = sorted(SAFETY_ALARMS & set(rules))
            recent = now - self._held_checked.get(code, -HELD_RECHECK_SECONDS) < HELD_RECHECK_SECONDS
            if code in self.held and not safety and recent:
                continue
            refused: DrainRefused | None = None
            if not safety and code not in out:
                try:
                    check_drain(code)
                except DrainRefused as error:
                    refused = error
            if refused is None:
                self.out[code] = why
                self.held.pop(code, None)
                detail: dict[str, Any] = {"alarms": rules, "safety": bool(safety)}
                self.store.audit(AuditRecord(self.wall_clock(), who, "alarm-drain", f"unit {code}", "ok", detail))
                continue
            self._held_checked[code] = now
            held = f"{why}: held, {'; '.join(refused.reasons)}"
            if self.held.get(code) != held:
                detail = {"alarms": rules, "reasons": refused.reasons, "advice": refused.advice}
                self.store.audit(AuditRecord(self.wall_clock(), who, "alarm-drain", f"unit {code}", "held", detail))
            self.held[code] = held
