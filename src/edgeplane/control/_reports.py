"""The planner's scenario report as the control plane keeps it: the rows as published, and one line each."""

from __future__ import annotations

from typing import Any

from edgeplane.control._bodies import Busiest, ScenarioRow


def summarise_scenarios(rows: list[ScenarioRow]) -> list[dict[str, Any]]:
    """One line per scenario, from either shape `plan scenarios --json` prints (full or --fast)."""
    lines = []
    for row in rows:
        busiest = row.busiest
        if busiest is None:
            top = max(
                (s for s in row.sites if s.utilisation is not None), key=lambda s: s.utilisation or 0.0, default=None
            )
            busiest = Busiest(pop=top.pop, utilisation=top.utilisation or 0.0) if top is not None else None
        lines.append(
            {
                "scenario": row.scenario,
                "unserved_rps": row.unserved_rps,
                "busiest": busiest.model_dump() if busiest is not None else None,
                "breaches": len(row.breaches),
            }
        )
    return lines
