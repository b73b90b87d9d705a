"""The planner's scenario report as the control plane keeps it: the rows as published, and one line each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgeplane.control._bodies import ScenarioRow, ScenariosBody
from edgeplane.control._store import AuditRecord, Store
from edgeplane.web import decode, parse


def summarise_scenarios(rows: list[ScenarioRow]) -> list[dict[str, Any]]:
    """One line per scenario, from the row every scenario of `plan scenarios --json` shares (full or --fast)."""
    return [
        {
            "scenario": row.scenario,
            "unserved_rps": row.unserved_rps,
            "busiest": row.busiest.model_dump() if row.busiest is not None else None,
            "breaches": len(row.breaches),
        }
        for row in rows
    ]


class ScenarioBoard:
    """The planner's latest report, as `plan scenarios --publish` sent it (rows checked, then kept as they came:
    the report is the planner's), and its summary of one line per scenario for the dashboard."""

    def __init__(self, store: Store, wall_clock: Callable[[], float]) -> None:
        self.store, self.wall_clock = store, wall_clock
        self.report: dict[str, Any] | None = None
        self.summary: dict[str, Any] | None = None

    def __repr__(self) -> str:
        shown = len(self.report["scenarios"]) if self.report else 0
        return f"<ScenarioBoard [Scenarios: {shown}]>"

    def publish(self, raw: bytes, *, by: str) -> int:
        """Take a report (ApiError names a bad field); returns how many scenarios it holds."""
        data = decode(raw)
        body = parse(ScenariosBody, data)
        rows = data["scenarios"]
        about = {"published_at": self.wall_clock(), "by": by, "title": body.title}
        self.report = {**about, "scenarios": rows}
        self.summary = {**about, "lines": summarise_scenarios(body.scenarios)}
        self.store.audit(
            AuditRecord(self.wall_clock(), by, "publish-scenarios", "planner", "ok", {"scenarios": len(rows)})
        )
        return len(rows)
