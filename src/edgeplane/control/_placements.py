"""Applying a placement: what a new one is checked against before the fleet takes it (the hardware, the catalog,
what serves now and the headroom of the sites that keep each model), and what it changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeplane.fleet import Fleet
from edgeplane.planning import DrainCheck, check_drain
from edgeplane.routing import Router, SiteState, SiteView

Key = tuple[str, str]  # (model, PoP)


def merged_placement(fleet: Fleet, entries: Sequence[tuple[str, str, int]]) -> dict[Key, int]:
    """Replicas per (model, PoP), rows for the same pair added up; ValueError, saying why, where the fleet
    cannot hold it (unknown names, no GPU type for the model there, more GPUs than a PoP has)."""
    merged: dict[Key, int] = {}
    for model, pop, replicas in entries:
        if model not in fleet.model_by_name:
            raise ValueError(f"{model!r} is not in the catalog")
        if pop not in fleet.pop_by_code:
            raise ValueError(f"{pop!r} is not a PoP of the fleet")
        if replicas < 1:
            raise ValueError(f"{model} at {pop}: replicas must be at least 1, got {replicas}")
        if fleet.best_gpu_type(model, pop) is None:
            raise ValueError(f"{model} runs on no GPU type of {pop}")
        merged[model, pop] = merged.get((model, pop), 0) + replicas
    for site in fleet.pops:
        need = sum(n * fleet.model_by_name[m].gpus_per_replica for (m, p), n in merged.items() if p == site.code)
        have = sum(site.gpus_by_type().values())
        if need > have:
            raise ValueError(f"{site.code} would need {need} GPUs and has {have}")
    return merged


def refusals(
    fleet: Fleet, router: Router, sites: Mapping[str, SiteView], merged: Mapping[Key, int], before: Mapping[Key, int]
) -> tuple[list[str], DrainCheck | None]:
    """Why the placement should not be applied without force: a model placed nowhere, or only at PoPs that serve
    nothing now (drained, down), or load running now on the replicas it removes with nowhere to go (the drain
    headroom check, with those replicas gone)."""
    reasons: list[str] = []
    up = {code for code, view in sites.items() if view.state in (SiteState.SERVING, SiteState.DEGRADED)}
    for spec in fleet.models:
        at = sorted(p for m, p in merged if m == spec.name)
        if not at:
            reasons.append(f"{spec.name} would be served nowhere")
        elif not up.intersection(at):
            reasons.append(f"{spec.name} would be served only at {', '.join(at)}, where nothing serves now")
    reduced: dict[str, dict[str, int]] = {}
    for (model, pop), replicas in before.items():
        left = merged.get((model, pop), 0)
        if left < replicas:
            reduced.setdefault(pop, {})[model] = left
    check = check_drain(router, sites, (), reduced=reduced) if reduced else None
    if check is not None and not check.ok:
        reasons += check.reasons()
    return reasons, check


def change(before: Mapping[Key, int], merged: Mapping[Key, int]) -> dict[str, Any]:
    """What the placement adds, removes and resizes, as model@PoP."""
    return {
        "added": sorted(f"{m}@{p}" for (m, p) in merged if (m, p) not in before),
        "removed": sorted(f"{m}@{p}" for (m, p) in before if (m, p) not in merged),
        "resized": sorted(f"{m}@{p}" for (m, p), n in merged.items() if before.get((m, p), n) != n),
    }
