"""Modular units' lifecycle as the control plane keeps it: the fleet file's units and those ordered, their
states, and which PoPs have no unit in service (those carry no traffic)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeplane.control._errors import UnknownTarget
from edgeplane.control._store import AuditRecord, Store
from edgeplane.fleet import Fleet
from edgeplane.units import SECONDS_PER_MONTH, Change, LifecycleError, UnitRecord, UnitState, move


class UnitBook:
    """Lifecycle records in the store; ``fleet`` gives the fleet as it is now (a placement replaces it)."""

    def __init__(self, store: Store, fleet: Callable[[], Fleet], wall_clock: Callable[[], float]) -> None:
        self.store, self.fleet, self.wall_clock = store, fleet, wall_clock
        self.no_unit_in_service: dict[str, str] = {}  # PoP -> its units and their states
        self._states: dict[str, UnitState] = {}
        self.changed()

    def __repr__(self) -> str:
        return f"<UnitBook [Units: {len(self._states)}, PoPs with none in service: {len(self.no_unit_in_service)}]>"

    def state_of(self, code: str) -> UnitState:
        return self._states.get(code, UnitState.IN_SERVICE)

    def units(self) -> list[UnitRecord]:
        """Every unit: the fleet file's (in service unless changed here), then those ordered here."""
        kept = {u.code: u for u in self.store.units()}
        out = []
        for pop in self.fleet().pops:
            for unit in pop.units:
                fleet_file = UnitRecord(unit.code, pop.code, UnitState.IN_SERVICE, 0.0, "fleet file", "fleet")
                out.append(kept.pop(unit.code, fleet_file))
        return out + sorted(kept.values(), key=lambda u: (u.pop, u.code))

    def unit(self, code: str) -> UnitRecord:
        for unit in self.units():
            if unit.code == code:
                return unit
        raise UnknownTarget(f"unknown unit {code!r}; `edgeplane unit list` shows them")

    def set_state(self, code: str, state: str, *, by: str, note: str = "", acceptance: Any = None) -> UnitRecord:
        """Move a unit along its lifecycle (LifecycleError says why not); kept, audited, and routed by."""
        record = self.unit(code)
        try:
            to = UnitState(state)
        except ValueError:
            raise LifecycleError(
                f"unknown unit state {state!r}; expected one of: {', '.join(str(s) for s in UnitState)}"
            ) from None
        try:
            moved = move(record, to, at=self.wall_clock(), by=by, note=note, acceptance=acceptance)
        except LifecycleError as error:
            refused = {"from": str(record.state), "to": state, "reason": str(error)}
            self.store.audit(AuditRecord(self.wall_clock(), by, "unit-state", f"unit {code}", "refused", refused))
            raise
        self.store.put_unit(moved)
        detail: dict[str, Any] = {"from": str(record.state), "to": str(to), "note": note}
        if moved.acceptance is not None:
            detail["acceptance"] = dict(moved.acceptance)
        self.store.audit(AuditRecord(self.wall_clock(), by, "unit-state", f"unit {code}", "ok", detail))
        self.changed()
        return moved

    def order(self, pop: str, *, by: str, due: float | None = None, note: str = "") -> UnitRecord:
        """Record a unit ordered for a PoP (the fleet's unit template), due in service at ``due`` (unix
        seconds; by default the template's lead time from now)."""
        if pop not in self.fleet().pop_by_code:
            raise UnknownTarget(f"unknown PoP {pop!r}; expected one of: {', '.join(sorted(self.fleet().pop_by_code))}")
        now = self.wall_clock()
        template = self.fleet().unit_template
        lead_months = template.lead_time_months if template is not None else 3.0
        taken = {u.code for u in self.units()}
        number = 1
        while f"{pop}-n{number}" in taken:
            number += 1
        code = f"{pop}-n{number}"
        due = due if due is not None else now + lead_months * SECONDS_PER_MONTH
        record = UnitRecord(
            code, pop, UnitState.ORDERED, now, by, "order", due, None, (Change(now, UnitState.ORDERED, by, note),)
        )
        self.store.put_unit(record)
        detail = {"pop": pop, "due": due, "note": note}
        self.store.audit(AuditRecord(now, by, "unit-order", f"unit {code}", "ok", detail))
        return record

    def changed(self) -> None:
        """Which PoPs have no unit in service (their units listed): those carry no traffic."""
        by_pop: dict[str, list[UnitRecord]] = {}
        records = self.units()
        self._states = {u.code: u.state for u in records}
        for unit in records:
            if unit.state not in (UnitState.ORDERED, UnitState.ASSEMBLING, UnitState.FACTORY_ACCEPTANCE_TEST,
                                  UnitState.SHIPPING):  # fmt: skip
                by_pop.setdefault(unit.pop, []).append(unit)
        self.no_unit_in_service = {
            pop: ", ".join(f"{u.code} {u.state}" for u in units)
            for pop, units in by_pop.items()
            if not any(u.carries_traffic for u in units)
        }
