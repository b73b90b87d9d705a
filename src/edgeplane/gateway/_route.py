"""The routing decision for one request: the snapshot's sites as this gateway sees them (its own health
verdicts, its own requests in flight) ranked by the router, the gateway's own site first when it is a PoP's,
or the 503 that says why none can serve."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from prometheus_client import Histogram

from edgeplane.catalog import DEFAULT_OUTPUT_TOKENS
from edgeplane.gateway._inflight import InFlight
from edgeplane.gateway._snapshots import RoutingState
from edgeplane.health import HealthBook
from edgeplane.routing import Decision, SiteState, SiteView, Snapshot
from edgeplane.web import ApiError, InferenceRequest


class Routing:
    def __init__(
        self, health: HealthBook, inflight: InFlight, decision_seconds: Histogram, *, pop: str | None = None
    ) -> None:
        self.health = health
        self.inflight = inflight
        self.decision_seconds = decision_seconds
        self.pop = pop  # the PoP whose gateway this is: its own site is tried first (None: `up`'s shared gateway)
        self._views: tuple[tuple[int, int], dict[str, SiteView]] | None = None

    def sites(self, snapshot: Snapshot) -> dict[str, SiteView]:
        """The snapshot's sites as this gateway's own health verdicts amend them, busy counts less this
        gateway's own requests (added back fresh per decision); rebuilt only on change."""
        key = (snapshot.version, self.health.generation)
        if self._views is None or self._views[0] != key:
            self._views = (key, self.inflight.others(self.health.overlay(snapshot.sites)))
        return self._views[1]

    def decide(
        self,
        state: RoutingState,
        client: str,
        parsed: InferenceRequest,
        prompt_tokens: int,
        within: frozenset[str] | None,
    ) -> Decision:
        """The ranked candidates, without the reasons for the sites passed over (see unavailable)."""
        started = time.perf_counter()
        max_tokens = parsed.body.get("max_completion_tokens") or parsed.body.get("max_tokens")
        decision = state.router.decide(
            client,
            parsed.model,
            self.sites(state.snapshot),
            explain=False,
            prompt_tokens=prompt_tokens,
            output_tokens=max_tokens if isinstance(max_tokens, int) else DEFAULT_OUTPUT_TOKENS,
            local_busy=self.inflight.now,
            within=within,
        )
        if self.pop is not None:
            decision = own_site_first(decision, self.pop, self.sites(state.snapshot))
        self.decision_seconds.observe(time.perf_counter() - started)
        return decision

    def unavailable(self, state: RoutingState, client: str, model: str) -> ApiError:
        """The 503 for a request no site can serve, with why the nearest ones were passed over."""
        decision = state.router.decide(client, model, self.sites(state.snapshot), local_busy=self.inflight.now)
        reasons = "; ".join(f"{p.pop}: {p.reason}" for p in decision.passed_over[:6])
        return ApiError(
            503,
            f"No site can serve `{model}` now ({reasons}).",
            type="server_error",
            code="no_site_available",
            headers={"x-edgeplane-attempts": "0"},
        )


def own_site_first(decision: Decision, pop: str, sites: Mapping[str, SiteView]) -> Decision:
    """A PoP's gateway serves at its own site whenever that site is serving (not merely degraded), has the
    model, meets its SLO and is not full: the client's packets already reached this PoP, and another site
    would only add a hop. Otherwise the router's order stands (the scope ladder over every PoP's agent).
    Residency holds either way: the own site is only moved up when it is among the candidates."""
    candidates = decision.candidates
    own = next((i for i, c in enumerate(candidates) if c.pop == pop), None)
    if not own:  # absent, or already first
        return decision
    chosen, site = candidates[own], sites.get(pop)
    if site is None or site.state is not SiteState.SERVING or not chosen.within_slo or chosen.full:
        return decision
    return dataclasses.replace(decision, candidates=(chosen, *candidates[:own], *candidates[own + 1 :]))
