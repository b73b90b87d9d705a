"""The control plane's view of the fleet: agent reports and drains, turned into versioned snapshots."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgeplane.bgp import GRACEFUL_SHUTDOWN_SECONDS, EdgePlan, Intent, LargeCommunity
from edgeplane.control import _bodies as bodies
from edgeplane.control import _placements as placements
from edgeplane.control._alarms import AlarmJudge
from edgeplane.control._edgebook import EdgeBook
from edgeplane.control._errors import DrainRefused, PlacementRefused, UnknownTarget
from edgeplane.control._keys import KeyBook
from edgeplane.control._status import status_json
from edgeplane.control._store import DRAIN_KINDS, AuditRecord, Drain, Store
from edgeplane.control._units import UnitBook
from edgeplane.fleet import Fleet, PlacementEntry
from edgeplane.health import HealthBook
from edgeplane.planning import DrainCheck, check_drain
from edgeplane.routing import Router, SiteState, SiteView, Snapshot
from edgeplane.units import UnitState
from edgeplane.web import parse

Clock = Callable[[], float]

# Load moves all the time; publishing every wobble would churn gateways, so load-only changes are
# published at most this often and only when they move this much.
LOAD_PUBLISH_INTERVAL_SECONDS = 1.0
LOAD_PUBLISH_DELTA = 0.05


# After a start, how long the snapshot waits for every site agent's first report (they report twice a second).
WARMUP_SECONDS = 2.0

# Blast radius: how many metros may be drained at once without --force.
MAX_DRAINED_METROS = 2


@dataclass(frozen=True, slots=True)
class AgentReport:
    """A site agent's last report, as the control plane keeps it."""

    pop: str
    url: str | None
    pid: int | None
    backend: str
    models: Mapping[str, bodies.ModelLoad]
    load: float
    received_at: float  # monotonic seconds
    fault: bodies.FaultView | None = None  # an injected fault the agent shows
    loading: str | None = None  # a model being loaded after a placement change
    measured_at: float = 0.0  # unix seconds when the agent read its models' busy counts; 0 when unsaid
    units: Mapping[str, bodies.UnitView] = field(default_factory=dict)  # telemetry and alarms per unit

    def alarmed(self) -> dict[str, list[str]]:
        """Units with alarms raised, and which."""
        return {code: list(unit.alarms) for code, unit in self.units.items() if unit.alarms}

    @classmethod
    def from_body(cls, pop: str, body: bodies.AgentReport, received_at: float) -> AgentReport:
        return cls(
            pop=pop,
            url=body.url,
            pid=body.pid,
            backend=body.backend,
            models=body.models,
            load=body.load,
            received_at=received_at,
            fault=body.fault,
            loading=body.loading,
            measured_at=body.measured_at,
            units=body.units,
        )


def _busy(model: bodies.ModelLoad) -> int:
    return model.running + model.waiting


def _entries(placed: list[tuple[str, str, int]]) -> list[PlacementEntry]:
    return [PlacementEntry(model=m, pop=p, replicas=n) for m, p, n in placed]


def fleet_digest(fleet: Fleet) -> str:
    return hashlib.sha256(orjson.dumps(fleet.model_dump(mode="json"))).hexdigest()[:16]


class FleetState:
    """Pure state with an injected clock: tests drive time, the service drives I/O."""

    def __init__(
        self,
        fleet: Fleet,
        store: Store,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        agent_timeout_seconds: float = 2.0,
        health: HealthBook | None = None,
        max_drained_metros: int = MAX_DRAINED_METROS,
        graceful_shutdown_seconds: float = GRACEFUL_SHUTDOWN_SECONDS,
    ) -> None:
        stored = store.placement()
        if stored is not None:  # a placement applied earlier outlives restarts
            fleet = fleet.model_copy(update={"placement": _entries(stored)})
        self.fleet = fleet
        self.router = Router(fleet)
        self.max_drained_metros = max_drained_metros
        self.health = health or HealthBook()  # from the control plane's own probes
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock
        self.agent_timeout_seconds = agent_timeout_seconds
        self.digest = fleet_digest(fleet)
        self.reports: dict[str, AgentReport] = {}
        # Versions count on from the wall clock in milliseconds, so they keep growing across restarts: a gateway
        # or speaker that long-polls with `after=` the last version it saw is answered at once by a restarted
        # control plane (whose count would otherwise begin again at 1), and fetches the key table anew.
        first = max(1, int(wall_clock() * 1000))
        self.keys = KeyBook(store, lambda: self.fleet, wall_clock, first)
        self.unit_book = UnitBook(store, lambda: self.fleet, wall_clock)
        self.started_at = clock()
        self._published_at = clock()
        self.alarms = AlarmJudge(store, clock, wall_clock)
        self.snapshot = Snapshot(first, wall_clock(), self.digest, self._views(), self.keys.version)
        self.edge_book = EdgeBook(
            store, lambda: self.fleet, wall_clock, graceful_shutdown_seconds=graceful_shutdown_seconds,
            max_withdrawn_metros=max_drained_metros, version=first,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"<FleetState v{self.snapshot.version} [Reports: {len(self.reports)}, Drains: {len(self.store.drains())}]>"
        )

    def warming_up(self) -> bool:
        """Just started, and not every site agent has reported yet: the snapshot would show running sites as
        down. Gateways keep the snapshot they have until the agents had the time to report (a few of their
        half-second reports, at most their timeout)."""
        waiting = any(pop.code not in self.reports for pop in self.fleet.pops)
        return waiting and self.clock() - self.started_at < min(WARMUP_SECONDS, self.agent_timeout_seconds)

    # -- inputs -------------------------------------------------------------------------------
    def report(self, pop: str, data: bodies.AgentReport | Mapping[str, Any]) -> None:
        """Take a site agent's report (parsed already, or a mapping parsed here: ApiError names a bad field)."""
        if pop not in self.fleet.pop_by_code:
            raise UnknownTarget(f"unknown PoP {pop!r}")
        body = data if isinstance(data, bodies.AgentReport) else parse(bodies.AgentReport, data)
        self.reports[pop] = AgentReport.from_body(pop, body, self.clock())
        for event in body.alarm_events:
            detail = {"rule": event.rule, "what": event.what, "value": event.value, "threshold": event.threshold}
            target = f"unit {event.unit}"
            self.store.audit(
                AuditRecord(self.wall_clock(), f"alarm at {pop}", "unit-alarm", target, event.kind, detail)
            )
        for done in body.audit_events:  # recorded when heard of here; the agent's own time goes in the detail
            detail = {**done.detail, "at_agent": done.at}
            who = f"{done.who} at {pop}"
            self.store.audit(AuditRecord(self.wall_clock(), who, done.action, f"pop {pop}", done.outcome, detail))
        units = [u.code for u in self.fleet.pop_by_code[pop].units]
        self.alarms.judge(
            pop, units, self.reports[pop].alarmed(), self.units_out(pop), lambda unit: self.check_drain("unit", unit)
        )

    def units_out(self, pop: str, unit_drains: Mapping[str, Drain] | None = None) -> dict[str, str]:
        """The PoP's units (of the fleet file) that carry no traffic now, and why: not in service, drained,
        or taken out by an alarm."""
        if unit_drains is None:
            unit_drains = {d.code: d for d in self.store.drains() if d.kind == "unit"}
        out: dict[str, str] = {}
        for unit in self.fleet.pop_by_code[pop].units:
            state = self.unit_book.state_of(unit.code)
            if state is not UnitState.IN_SERVICE:
                out[unit.code] = str(state)
            elif unit.code in unit_drains:
                out[unit.code] = f"drained by {unit_drains[unit.code].by}"
            elif unit.code in self.alarms.out:
                out[unit.code] = f"alarm: {self.alarms.out[unit.code]}"
        return out

    def live_replicas(self, pop: str, out: Mapping[str, str]) -> dict[str, int]:
        """Per model placed at the PoP whose replicas sit partly in units that are ``out``: the replicas left."""
        live: dict[str, int] = {}
        for model, replicas in self.fleet.models_at(pop).items():
            left = sum(n for u, n in self.fleet.unit_replicas(pop, model, replicas).items() if u not in out)
            if left < replicas:
                live[model] = left
        return live

    def _check_target(self, kind: str, code: str) -> None:
        if kind not in DRAIN_KINDS:
            raise UnknownTarget(f"unknown drain kind {kind!r}; expected one of: {', '.join(DRAIN_KINDS)}")
        known: Mapping[str, object]
        if kind == "unit":
            known = {u.code: u for _, u in self.fleet.units()}
        else:
            known = self.fleet.metro_by_code if kind == "metro" else self.fleet.pop_by_code
        if code not in known:
            raise UnknownTarget(f"unknown {kind} {code!r}; expected one of: {', '.join(sorted(known))}")

    def drain(self, kind: str, code: str, *, by: str, reason: str = "", force: bool = False) -> bool:
        """Record a drain, unless it would overload the receiving sites or drain too many metros at once
        (then DrainRefused says why and what would make it possible); ``force`` overrides both."""
        self._check_target(kind, code)
        target = f"{kind} {code}"
        if not force:
            try:
                self.check_drain(kind, code)
            except DrainRefused as refused:
                detail = {"reasons": refused.reasons, "advice": refused.advice}
                self.store.audit(AuditRecord(self.wall_clock(), by, "drain", target, "refused", detail))
                raise
        added = self.store.add_drain(Drain(kind, code, self.wall_clock(), by, reason))
        outcome = ("ok" if added else "already drained") + (" (forced)" if force else "")
        self.store.audit(AuditRecord(self.wall_clock(), by, "drain", target, outcome, {"reason": reason}))
        return added

    # -- units --------------------------------------------------------------------------------
    def check_drain(self, kind: str, code: str) -> DrainCheck:
        """Raise DrainRefused if draining ``kind code`` now would break the blast radius or the headroom."""
        drains = self.store.drains()
        reduced: dict[str, dict[str, int]] = {}
        if kind == "unit":
            pop = next(p.code for p, u in self.fleet.units() if u.code == code)
            out = {**self.units_out(pop), code: "drain being checked"}
            if len(out) < len(self.fleet.pop_by_code[pop].units):
                reduced[pop] = self.live_replicas(pop, out)  # the PoP keeps serving on its other units
            kind, code = "pop", pop
        metros = {d.code for d in drains if d.kind == "metro"}
        metros |= {self.fleet.pop_by_code[d.code].metro for d in drains if d.kind == "pop"}
        metro = code if kind == "metro" else self.fleet.pop_by_code[code].metro
        if reduced:
            check = check_drain(self.router, self.snapshot.sites, (), reduced=reduced)
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
        pops = {p.code for p in self.fleet.pops_in(code)} if kind == "metro" else {code}
        check = check_drain(self.router, self.snapshot.sites, pops)
        if not check.ok:
            raise DrainRefused(check.reasons(), [*check.advice, "or use --force"], check)
        return check

    def undrain(self, kind: str, code: str, *, by: str) -> bool:
        self._check_target(kind, code)
        removed = self.store.remove_drain(kind, code)
        self.store.audit(
            AuditRecord(self.wall_clock(), by, "undrain", f"{kind} {code}", "ok" if removed else "was not drained", {})
        )
        return removed

    # -- outputs ------------------------------------------------------------------------------
    def _views(self) -> dict[str, SiteView]:
        now = self.clock()
        drains = self.store.drains()
        drained_metros = {d.code: d for d in drains if d.kind == "metro"}
        drained_pops = {d.code: d for d in drains if d.kind == "pop"}
        unit_drains = {d.code: d for d in drains if d.kind == "unit"}
        views: dict[str, SiteView] = {}
        for pop in self.fleet.pops:
            placed = set(self.fleet.models_at(pop.code))
            report = self.reports.get(pop.code)
            out = self.units_out(pop.code, unit_drains)
            live = self.live_replicas(pop.code, out) if out else {}
            loaded = frozenset(placed & set(report.models)) if report else frozenset()
            loaded -= {m for m, n in live.items() if n == 0}
            url = report.url if report else None
            load = report.load if report else 0.0
            if pop.metro in drained_metros:
                state, reason = (
                    SiteState.DRAINED,
                    f"metro {pop.metro} drained by {drained_metros[pop.metro].by}",
                )
            elif pop.code in drained_pops:
                state, reason = SiteState.DRAINED, f"PoP drained by {drained_pops[pop.code].by}"
            elif pop.code in self.unit_book.no_unit_in_service:
                state, reason = SiteState.DRAINED, f"no unit in service ({self.unit_book.no_unit_in_service[pop.code]})"
            elif len(out) == len(pop.units):
                why = "; ".join(f"{code} {reason}" for code, reason in out.items())
                state, reason = SiteState.DRAINED, f"no unit carries traffic ({why})"
            elif report is None:
                state, reason = SiteState.DOWN, "site agent has not reported"
            elif now - report.received_at > self.agent_timeout_seconds:
                state, reason = SiteState.DOWN, f"no report for {now - report.received_at:.1f} s"
            else:
                state, reason = SiteState.SERVING, ""
            busy = {m: _busy(report.models[m]) for m in loaded} if report else {}
            busy_at = report.measured_at if report else 0.0
            views[pop.code] = SiteView(pop.code, state, loaded, url, round(load, 4), reason, busy, busy_at, live)
        return self.health.overlay(views)

    def apply_placement(self, entries: list[tuple[str, str, int]], *, by: str, force: bool = False) -> dict[str, Any]:
        """Make ``entries`` the fleet's placement: agents load and unload to match, gateways route to a model
        only where it is loaded. Refused (ValueError, saying why) if a PoP cannot hold what it is given; and
        unless ``force``d (PlacementRefused), if it leaves a model of the catalog with no site, or if what runs
        now on the replicas it takes away would overload the sites that keep serving the model."""
        merged = placements.merged_placement(self.fleet, entries)
        before = {(e.model, e.pop): e.replicas for e in self.fleet.placement}
        if not force:
            reasons, check = placements.refusals(self.fleet, self.router, self.snapshot.sites, merged, before)
            if reasons:
                detail = {"reasons": reasons}
                self.store.audit(AuditRecord(self.wall_clock(), by, "apply placement", "fleet", "refused", detail))
                raise PlacementRefused(reasons, check)
        placed = [(m, p, n) for (m, p), n in merged.items()]
        self.fleet = self.fleet.model_copy(update={"placement": _entries(placed)})
        self.router = Router(self.fleet)
        self.digest = fleet_digest(self.fleet)
        self.store.set_placement(placed)
        changed = placements.change(before, merged)
        outcome = "ok (forced)" if force else "ok"
        self.store.audit(AuditRecord(self.wall_clock(), by, "apply placement", "fleet", outcome, changed))
        return changed

    # -- the network edge: its room, under the names the API and the tests know ----------------
    @property
    def edge(self) -> EdgePlan:
        return self.edge_book.plan

    @property
    def edge_version(self) -> int:
        return self.edge_book.version

    @property
    def graceful_shutdown_seconds(self) -> float:
        return self.edge_book.graceful_shutdown_seconds

    def refresh_edge(self) -> bool:
        """Recompute what each PoP announces; True if a speaker has something new to do."""
        return self.edge_book.refresh(self.snapshot.sites, self.reports)

    def set_bgp_action(self, pop: str, transit_asn: int, action: str, *, by: str) -> None:
        self.edge_book.set_action(pop, transit_asn, action, by=by)

    @property
    def bgp_actions(self) -> dict[str, dict[int, LargeCommunity]]:
        return self.edge_book.actions

    def pop_intents(self, pop: str) -> list[Intent]:
        return self.edge_book.intents(pop)

    def refresh(self) -> bool:
        """Rebuild the snapshot; True if a new version was published."""
        views = self._views()
        old = self.snapshot.sites
        now = self.clock()

        def shape(v: SiteView) -> tuple[Any, ...]:
            return (v.state, v.models, v.url, v.replicas)

        structural = self.keys.version != self.snapshot.keys_version or self.digest != self.snapshot.fleet_digest
        structural = structural or any(shape(views[c]) != shape(old[c]) for c in views)
        load_moved = any(
            abs(views[c].load - old[c].load) >= LOAD_PUBLISH_DELTA or views[c].busy != old[c].busy for c in views
        )
        if not structural and not (load_moved and now - self._published_at >= LOAD_PUBLISH_INTERVAL_SECONDS):
            return False
        self._published_at = now
        self.snapshot = Snapshot(self.snapshot.version + 1, self.wall_clock(), self.digest, views, self.keys.version)
        return True

    def status(self) -> dict[str, Any]:
        return status_json(self)
