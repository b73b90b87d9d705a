"""What a face of the control plane (the dashboard) may read of it: one narrow view, not its attributes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edgeplane.fleet import Fleet

if TYPE_CHECKING:
    from edgeplane.control._service import ControlPlane


class ControlView:
    """Read-only: the fleet, its status, observed traffic, units, drills, the audit tail, the planner's summary
    and the moment anything changes."""

    def __init__(self, plane: ControlPlane) -> None:
        self._plane = plane

    def __repr__(self) -> str:
        return f"<ControlView of {self._plane!r}>"

    @property
    def admin_token(self) -> str | None:
        return self._plane.admin_token

    @property
    def changes(self) -> asyncio.Event:
        """Set at the next published change (a new event each time)."""
        return self._plane.changes

    @property
    def fleet(self) -> Fleet:
        return self._plane.state.fleet

    @property
    def scenario_summary(self) -> dict[str, Any] | None:
        return self._plane.scenarios.summary

    def status(self) -> dict[str, Any]:
        return self._plane.state.status()

    def observed_demand(self, window_seconds: float) -> list[dict[str, Any]]:
        return self._plane.demand.observed(window_seconds)[1]

    def traffic_mix(self, window_seconds: float) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
        return self._plane.traffic.mix(window_seconds)

    def units(self) -> list[dict[str, Any]]:
        return [u.to_json() for u in self._plane.state.unit_book.units()]

    def drills(self, last: int) -> list[dict[str, Any]]:
        """The last ``last`` drills, newest first."""
        newest = sorted(self._plane.drills.drills.values(), key=lambda d: d.id, reverse=True)[:last]
        return [d.to_json() for d in newest]

    def audit_tail(self, last: int) -> list[dict[str, Any]]:
        """The newest ``last`` audit records, newest first."""
        return [r.to_json() for r in self._plane.state.store.audit_log(last)]
