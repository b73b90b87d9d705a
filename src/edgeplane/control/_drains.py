"""Drains and the headroom they need: which metros, PoPs and units carry no traffic on purpose, which units are
out of routing for any reason, and whether taking one more out would overload the sites that receive its load
or drain more metros at once than the blast radius allows."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edgeplane.control._alarms import AlarmJudge
from edgeplane.control._errors import DrainRefused, UnknownTarget
from edgeplane.control._store import DRAIN_KINDS, AuditRecord, Drain, Store
from edgeplane.control._units import UnitBook
from edgeplane.fleet import Fleet
from edgeplane.planning import DrainCheck, check_drain
from edgeplane.routing import Router, SiteView
from edgeplane.units import UnitState

# Blast radius: how many metros may be drained at once without --force.
MAX_DRAINED_METROS = 2


class DrainBook:
    """Drains kept in the store, checked against the headroom of the sites as the last snapshot shows them.
    ``fleet``, ``router`` and ``sites`` give each as it is now (a placement replaces the first two)."""

    def __init__(
        self,
        store: Store,
        fleet: Callable[[], Fleet],
        router: Callable[[], Router],
        sites: Callable[[], Mapping[str, SiteView]],
        units: UnitBook,
        alarms: AlarmJudge,
        wall_clock: Callable[[], float],
        *,
        max_drained_metros: int = MAX_DRAINED_METROS,
    ) -> None:
        self.store, self.fleet, self.router, self.sites = store, fleet, router, sites
        self.units, self.alarms, self.wall_clock = units, alarms, wall_clock
        self.max_drained_metros = max_drained_metros
        # Why a site would start cold if a model's traffic came to it (its weights not all on its disk), or None:
        # the control plane's fabric book answers; a drain that would send traffic to a cold site is refused.
        self.cold: Callable[[str, str], str | None] = lambda pop, model: None

    def __repr__(self) -> str:
        return f"<DrainBook [Drains: {len(self.store.drains())}, max metros: {self.max_drained_metros}]>"

    def in_force(self) -> list[Drain]:
        return self.store.drains()

    def units_out(self, pop: str, unit_drains: Mapping[str, Drain] | None = None) -> dict[str, str]:
        """The PoP's units (of the fleet file) that carry no traffic now, and why: not in service, drained,
        or taken out by an alarm."""
        if unit_drains is None:
            unit_drains = {d.code: d for d in self.store.drains() if d.kind == "unit"}
        out: dict[str, str] = {}
        for unit in self.fleet().pop_by_code[pop].units:
            state = self.units.state_of(unit.code)
            if state is not UnitState.IN_SERVICE:
                out[unit.code] = str(state)
            elif unit.code in unit_drains:
                out[unit.code] = f"drained by {unit_drains[unit.code].by}"
            elif unit.code in self.alarms.out:
                out[unit.code] = f"alarm: {self.alarms.out[unit.code]}"
        return out

    def live_replicas(self, pop: str, out: Mapping[str, str]) -> dict[str, int]:
        """Per model placed at the PoP whose replicas sit partly in units that are ``out``: the replicas left."""
        fleet = self.fleet()
        live: dict[str, int] = {}
        for model, replicas in fleet.models_at(pop).items():
            left = sum(n for u, n in fleet.unit_replicas(pop, model, replicas).items() if u not in out)
            if left < replicas:
                live[model] = left
        return live

    def _check_target(self, kind: str, code: str) -> None:
        if kind not in DRAIN_KINDS:
            raise UnknownTarget(f"unknown drain kind {kind!r}; expected one of: {', '.join(DRAIN_KINDS)}")
        fleet = self.fleet()
        known: Mapping[str, object]
        if kind == "unit":
            known = {u.code: u for _, u in fleet.units()}
        else:
            known = fleet.metro_by_code if kind == "metro" else fleet.pop_by_code
        if code not in known:
            raise UnknownTarget(f"unknown {kind} {code!r}; expected one of: {', '.join(sorted(known))}")

    def check(self, kind: str, code: str) -> DrainCheck:
        """Raise DrainRefused if draining ``kind code`` now would break the blast radius or the headroom."""
        fleet, router, sites = self.fleet(), self.router(), self.sites()
        drains = self.store.drains()
        reduced: dict[str, dict[str, int]] = {}
        if kind == "unit":
            pop = next(p.code for p, u in fleet.units() if u.code == code)
            out = {**self.units_out(pop), code: "drain being checked"}
            if len(out) < len(fleet.pop_by_code[pop].units):
                reduced[pop] = self.live_replicas(pop, out)  # the PoP keeps serving on its other units
            kind, code = "pop", pop
        metros = {d.code for d in drains if d.kind == "metro"}
        metros |= {fleet.pop_by_code[d.code].metro for d in drains if d.kind == "pop"}
        metro = code if kind == "metro" else fleet.pop_by_code[code].metro
        if reduced:
            check = check_drain(router, sites, (), reduced=reduced)
            if not check.ok:
                raise DrainRefused(check.reasons(), [*check.advice, "or use --force"], check)
            return check
        if metro not in metros and len(metros) + 1 > self.max_drained_metros:
            raise DrainRefused(
                [
                    f"{len(metros)} metros are drained already ({', '.join(sorted(metros))}); the blast radius allows"
                    f" {self.max_drained_metros} at once"
                ],
                ["undrain a metro first, or use --force"],
            )
        pops = {p.code for p in fleet.pops_in(code)} if kind == "metro" else {code}
        check = check_drain(router, sites, pops)
        if not check.ok:
            raise DrainRefused(check.reasons(), [*check.advice, "or use --force"], check)
        cold = [
            f"{model} of {pop} would go to {receiver}, but {reason}"
            for pop, models in sorted(check.receivers.items())
            for model, receiver in sorted(models.items())
            if (reason := self.cold(receiver, model)) is not None
        ]
        # A model no serving site would take: the sites placed for it that still wait for its weights are the
        # receivers, and they are cold.
        for pop in sorted(pops):
            view = sites.get(pop)
            for model in sorted(view.models if view is not None else ()):
                if model in check.receivers.get(pop, {}):
                    continue
                placed = [other for other in sorted(fleet.pop_by_code) if other not in pops]
                for other in (o for o in placed if model in fleet.models_at(o)):
                    if (reason := self.cold(other, model)) is not None:
                        cold.append(f"{model} of {pop} would have no site serving it: {reason}")
        if cold:
            advice = ["wait until the receivers hold the weights (edgeplane fabric status)", "or use --force"]
            raise DrainRefused(cold, advice, check)
        return check

    def drain(self, kind: str, code: str, *, by: str, reason: str = "", force: bool = False) -> bool:
        """Record a drain, unless it would overload the receiving sites or drain too many metros at once
        (then DrainRefused says why and what would make it possible); ``force`` overrides both."""
        self._check_target(kind, code)
        target = f"{kind} {code}"
        if not force:
            try:
                self.check(kind, code)
            except DrainRefused as refused:
                detail = {"reasons": refused.reasons, "advice": refused.advice}
                self.store.audit(AuditRecord(self.wall_clock(), by, "drain", target, "refused", detail))
                raise
        added = self.store.add_drain(Drain(kind, code, self.wall_clock(), by, reason))
        outcome = ("ok" if added else "already drained") + (" (forced)" if force else "")
        self.store.audit(AuditRecord(self.wall_clock(), by, "drain", target, outcome, {"reason": reason}))
        return added

    def undrain(self, kind: str, code: str, *, by: str) -> bool:
        self._check_target(kind, code)
        removed = self.store.remove_drain(kind, code)
        self.store.audit(
            AuditRecord(self.wall_clock(), by, "undrain", f"{kind} {code}", "ok" if removed else "was not drained", {})
        )
        return removed
