"""Site agents as the control plane hears them: each PoP's last report (its address, models and their load,
units with telemetry and alarms, an injected fault), and the events an agent passes on for the audit log."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edgeplane.control import _bodies as bodies
from edgeplane.control._store import AuditRecord, Store


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
    loading_weights: bodies.LoadingWeights | None = None  # the weights that load waits for, and how far they are
    measured_at: float = 0.0  # unix seconds when the agent read its models' busy counts; 0 when unsaid
    units: Mapping[str, bodies.UnitView] = field(default_factory=dict)  # telemetry and alarms per unit
    fabric: tuple[bodies.FabricHeld, ...] = ()  # objects in the site's fabric store
    link_scale: float = 1.0  # the fabric's links run at their capacity times this

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
            loading_weights=body.loading_weights,
            measured_at=body.measured_at,
            units=body.units,
            fabric=tuple(body.fabric),
            link_scale=body.link_scale,
        )


class AgentBook:
    """The last report of each PoP's agent, received at ``clock`` (monotonic) time; agents' alarm and audit
    events go to the store's audit log at ``wall_clock`` time, the agent's own time kept in the detail."""

    def __init__(self, store: Store, clock: Callable[[], float], wall_clock: Callable[[], float]) -> None:
        self.store, self.clock, self.wall_clock = store, clock, wall_clock
        self.reports: dict[str, AgentReport] = {}

    def __repr__(self) -> str:
        return f"<AgentBook [Reports: {len(self.reports)}]>"

    def get(self, pop: str) -> AgentReport | None:
        return self.reports.get(pop)

    def take(self, pop: str, body: bodies.AgentReport) -> AgentReport:
        report = self.reports[pop] = AgentReport.from_body(pop, body, self.clock())
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
        return report
