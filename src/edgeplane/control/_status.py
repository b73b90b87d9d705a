"""The fleet as `edgeplane status` and /api/status show it: every metro and PoP, its state and why, load, the
agent's report, units out of routing and held alarms, and the drains in force."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeplane.control._state import FleetState


def status_json(state: FleetState) -> dict[str, Any]:
    now = state.clock()
    sites = state.snapshot.sites
    drains = state.store.drains()
    drained_metros = {d.code for d in drains if d.kind == "metro"}
    unit_drains = {d.code: d for d in drains if d.kind == "unit"}
    pops: list[dict[str, Any]] = []
    for pop in state.fleet.pops:
        view = sites[pop.code]
        report = state.agents.get(pop.code)
        pops.append(
            {
                "code": pop.code,
                "id": pop.id,
                "metro": pop.metro,
                "state": view.state.value,
                "reason": view.reason,
                "pid": report.pid if report else None,
                "url": view.url,
                "backend": report.backend if report else None,
                "load": view.load,
                "models": {name: m.model_dump() for name, m in (report.models.items() if report else [])},
                "loading": report.loading if report else None,
                "loading_weights": report.loading_weights.model_dump() if report and report.loading_weights else None,
                "last_report_age_seconds": round(now - report.received_at, 3) if report else None,
                "fault": report.fault.model_dump() if report and report.fault else None,
                "units": {code: unit.model_dump() for code, unit in report.units.items()} if report else {},
                "units_out": state.drains.units_out(pop.code, unit_drains),
                "alarms_held": {u.code: state.alarms.held[u.code] for u in pop.units if u.code in state.alarms.held},
                "replicas": {**state.fleet.models_at(pop.code), **view.replicas},
            }
        )
    metros = []
    for metro in state.fleet.metros:
        states = [p["state"] for p in pops if p["metro"] == metro.code]
        if metro.code in drained_metros:
            shown = "drained"
        elif "serving" in states:
            shown = "serving"
        elif "degraded" in states:
            shown = "degraded"
        elif states and all(s == "drained" for s in states):
            shown = "drained"
        else:
            shown = "down"
        loads = [float(p["load"]) for p in pops if p["metro"] == metro.code and p["state"] == "serving"]
        metros.append(
            {
                "code": metro.code,
                "id": metro.id,
                "name": metro.name,
                "region": metro.region,
                "continent": state.fleet.region_of(metro.code).continent,
                "state": shown,
                "load": round(max(loads), 4) if loads else 0.0,
                "pops": [p["code"] for p in pops if p["metro"] == metro.code],
            }
        )
    return {
        "snapshot_version": state.snapshot.version,
        "metros": metros,
        "pops": pops,
        "drains": [d.to_json() for d in drains],
    }
