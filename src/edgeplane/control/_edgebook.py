"""The network edge as the control plane keeps it: what each PoP announces (planned from drains and failures),
standing BGP actions per transit, and a version the speakers follow."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

from edgeplane.bgp import EdgePlan, Intent, LargeCommunity, action_community, plan_edge
from edgeplane.control._errors import UnknownTarget
from edgeplane.control._store import AuditRecord, Store
from edgeplane.fleet import Fleet
from edgeplane.routing import SiteState, SiteView


class EdgeBook:
    """``version`` moves whenever a speaker has something new to do."""

    def __init__(
        self,
        store: Store,
        fleet: Callable[[], Fleet],
        wall_clock: Callable[[], float],
        *,
        graceful_shutdown_seconds: float,
        max_withdrawn_metros: int,
        version: int,
    ) -> None:
        self.store, self.fleet, self.wall_clock = store, fleet, wall_clock
        self.graceful_shutdown_seconds = graceful_shutdown_seconds
        self.max_withdrawn_metros = max_withdrawn_metros
        self.version = version
        self.plan = self._plan({}, ())

    def __repr__(self) -> str:
        withdrawn = ", ".join(sorted(self.plan.withdrawn_metros())) or "none"
        return f"<EdgeBook v{self.version} [withdrawn metros: {withdrawn}]>"

    def _plan(self, sites: Mapping[str, SiteView], reported: Collection[str]) -> EdgePlan:
        # A PoP that never reported is starting, not failed: its withdrawal waits for a first report.
        failed = {code for code, view in sites.items() if view.state is SiteState.DOWN and code in reported}
        return plan_edge(
            self.fleet(),
            drains=self.store.drains(),
            failed_pops=failed,
            now=self.wall_clock(),
            graceful_shutdown_seconds=self.graceful_shutdown_seconds,
            max_withdrawn_metros=self.max_withdrawn_metros,
        )

    def refresh(self, sites: Mapping[str, SiteView], reported: Collection[str]) -> bool:
        """Recompute what each PoP announces; True if a speaker has something new to do."""
        plan = self._plan(sites, reported)
        changed = plan.shape() != self.plan.shape()
        self.plan = plan
        if changed:
            self.version += 1
        return changed

    def set_action(self, pop: str, transit_asn: int, action: str, *, by: str) -> None:
        """Ask the PoP's speaker to prepend toward, or stop announcing to, one transit (or ``none`` to clear)."""
        site = self.fleet().pop_by_code.get(pop)
        if site is None:
            raise UnknownTarget(f"unknown PoP {pop!r}")
        if transit_asn not in {t.asn for t in site.transits}:
            known = ", ".join(str(t.asn) for t in site.transits) or "none"
            raise UnknownTarget(f"AS{transit_asn} is not a transit of {pop} (its transits: {known})")
        if action != "none":
            action_community(self.fleet().asn, transit_asn, action)  # ValueError names the known actions
        self.store.set_bgp_action(pop, transit_asn, None if action == "none" else action)
        self.version += 1
        self.store.audit(AuditRecord(self.wall_clock(), by, "bgp action", f"{pop} AS{transit_asn}", action, {}))

    @property
    def actions(self) -> dict[str, dict[int, LargeCommunity]]:
        """Standing actions (kept in the store, so a restart keeps them): PoP -> transit ASN -> community."""
        actions: dict[str, dict[int, LargeCommunity]] = {}
        for pop, asn, action in self.store.bgp_actions():
            if pop in self.fleet().pop_by_code:
                actions.setdefault(pop, {})[asn] = action_community(self.fleet().asn, asn, action)
        return actions

    def intents(self, pop: str) -> list[Intent]:
        actions = tuple(self.actions.get(pop, {}).values())
        return [
            replace(i, large_communities=i.large_communities + actions) for i in self.plan.intents(self.fleet(), pop)
        ]
