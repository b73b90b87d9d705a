"""The control plane's view of the fleet: agent reports and drains, turned into versioned snapshots."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from edgeplane.bgp import GRACEFUL_SHUTDOWN_SECONDS
from edgeplane.control import _bodies as bodies
from edgeplane.control import _placements as placements
from edgeplane.control._agents import AgentBook, AgentReport
from edgeplane.control._alarms import AlarmJudge
from edgeplane.control._drains import MAX_DRAINED_METROS, DrainBook
from edgeplane.control._edgebook import EdgeBook
from edgeplane.control._errors import PlacementRefused, UnknownTarget
from edgeplane.control._keys import KeyBook
from edgeplane.control._status import status_json
from edgeplane.control._store import AuditRecord, Store
from edgeplane.control._units import UnitBook
from edgeplane.fleet import Fleet, PlacementEntry
from edgeplane.health import HealthBook
from edgeplane.routing import Router, SiteState, SiteView, Snapshot
from edgeplane.web import parse

Clock = Callable[[], float]

# Load moves all the time; publishing every wobble would churn gateways, so load-only changes are
# published at most this often and only when they move this much.
LOAD_PUBLISH_INTERVAL_SECONDS = 1.0
LOAD_PUBLISH_DELTA = 0.05


# After a start, how long the snapshot waits for every site agent's first report (they report twice a second).
WARMUP_SECONDS = 2.0


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
        self.health = health or HealthBook()  # from the control plane's own probes
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock
        self.agent_timeout_seconds = agent_timeout_seconds
        self.digest = fleet_digest(fleet)
        self.agents = AgentBook(store, clock, wall_clock)
        # Versions count on from the wall clock in milliseconds, so they keep growing across restarts: a gateway
        # or speaker that long-polls with `after=` the last version it saw is answered at once by a restarted
        # control plane (whose count would otherwise begin again at 1), and fetches the key table anew.
        first = max(1, int(wall_clock() * 1000))
        self.keys = KeyBook(store, lambda: self.fleet, wall_clock, first)
        self.unit_book = UnitBook(store, lambda: self.fleet, wall_clock)
        self.started_at = clock()
        self._published_at = clock()
        self.alarms = AlarmJudge(store, clock, wall_clock)
        self.drains = DrainBook(
            store, lambda: self.fleet, lambda: self.router, lambda: self.snapshot.sites, self.unit_book, self.alarms,
            wall_clock, max_drained_metros=max_drained_metros,
        )  # fmt: skip
        self.snapshot = Snapshot(first, wall_clock(), self.digest, self._views(), self.keys.version)
        self.edge_book = EdgeBook(
            store, lambda: self.fleet, wall_clock, graceful_shutdown_seconds=graceful_shutdown_seconds,
            max_withdrawn_metros=max_drained_metros, version=first,
        )  # fmt: skip
        # Among replicas of a shared store only the leader judges units' alarms (their drains happen once);
        # reports wait in _to_judge for its round. Alone on a store, a control plane judges each as it comes.
        self.leading = True
        self._to_judge: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"<FleetState v{self.snapshot.version} [Reports: {len(self.agents.reports)},"
            f" Drains: {len(self.store.drains())}]>"
        )

    def warming_up(self) -> bool:
        """Just started, and not every site agent has reported yet: the snapshot would show running sites as
        down. Gateways keep the snapshot they have until the agents had the time to report (a few of their
        half-second reports, at most their timeout)."""
        waiting = any(pop.code not in self.agents.reports for pop in self.fleet.pops)
        return waiting and self.clock() - self.started_at < min(WARMUP_SECONDS, self.agent_timeout_seconds)

    # -- inputs -------------------------------------------------------------------------------
    def report(self, pop: str, data: bodies.AgentReport | Mapping[str, Any]) -> None:
        """Take a site agent's report (parsed already, or a mapping parsed here: ApiError names a bad field)."""
        if pop not in self.fleet.pop_by_code:
            raise UnknownTarget(f"unknown PoP {pop!r}")
        body = data if isinstance(data, bodies.AgentReport) else parse(bodies.AgentReport, data)
        self.agents.take(pop, body)
        if self.store.replicated:
            self._to_judge.add(pop)
        else:
            self._judge(pop)

    def take_shared(self, pop: str, body: bodies.AgentReport, received_at: float) -> None:
        """A report another replica received (its events recorded there), at ``received_at`` on our clock."""
        current = self.agents.get(pop)
        if current is None or current.received_at < received_at:
            self.agents.reports[pop] = AgentReport.from_body(pop, body, received_at)
            self._to_judge.add(pop)

    def judge_alarms(self) -> None:
        """The leader's round: units' alarms of the reports heard since the last one."""
        while self._to_judge:
            self._judge(self._to_judge.pop())

    def _judge(self, pop: str) -> None:
        report = self.agents.get(pop)
        if report is None:
            return
        units = [u.code for u in self.fleet.pop_by_code[pop].units]
        self.alarms.judge(
            pop, units, report.alarmed(), self.drains.units_out(pop), lambda unit: self.drains.check("unit", unit)
        )

    def reload(self, kind: str) -> None:
        """Another replica changed ``kind`` (drains, keys, placement, units, bgp, fabric, reports; "resync": any):
        read again what is kept in memory. Drains and reports are read from the store whenever they are used."""
        every = kind == "resync"
        if every or kind == "placement":
            stored = self.store.placement()
            if stored is not None:
                self.fleet = self.fleet.model_copy(update={"placement": _entries(stored)})
                self.router = Router(self.fleet)
                self.digest = fleet_digest(self.fleet)
        if every or kind == "keys":
            self.keys.version += 1  # gateways fetch the key table again
        if every or kind == "units":
            self.unit_book.changed()
        if every or kind == "bgp":
            self.edge_book.version += 1

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
            report = self.agents.get(pop.code)
            out = self.drains.units_out(pop.code, unit_drains)
            live = self.drains.live_replicas(pop.code, out) if out else {}
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

    # -- publishing -----------------------------------------------------------------------------
    def refresh_edge(self) -> bool:
        """Recompute what each PoP announces; True if a speaker has something new to do."""
        return self.edge_book.refresh(self.snapshot.sites, self.agents.reports)

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
