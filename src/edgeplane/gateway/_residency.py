"""Data residency: the metros a pinned key's requests may be served in, and the refusal when none can."""

from __future__ import annotations

from prometheus_client import Counter

from edgeplane.gateway._snapshots import RoutingState
from edgeplane.tenants import KeyPolicy
from edgeplane.web import ApiError


class Residency:
    def __init__(self, decisions: Counter) -> None:
        self.decisions = decisions  # by pin and outcome (served, refused)
        self._metros: dict[tuple[str, str | None, str | None], frozenset[str]] = {}

    def within(self, state: RoutingState, policy: KeyPolicy | None) -> frozenset[str] | None:
        """The metros a key's requests may be served in; None when it is not pinned."""
        if policy is None or policy.pinned is None:
            return None
        cache_key = (state.snapshot.fleet_digest, policy.continent, policy.region)
        metros = self._metros.get(cache_key)
        if metros is None:
            metros = self._metros[cache_key] = state.router.metros_within(policy.continent, policy.region)
        return metros

    def judge(self, policy: KeyPolicy | None, model: str, served: bool) -> None:
        """Count a pinned key's routing decision; raise ApiError(503) when no site within its pin can serve:
        it is never served outside it."""
        pin = policy.pinned if policy is not None else None
        if pin is None:
            return
        self.decisions.labels(pin, "served" if served else "refused").inc()
        if not served:
            raise ApiError(
                503,
                f"No site in {pin} can serve `{model}` now, and this API key is pinned to {pin}: it is"
                " never served outside it.",
                type="server_error",
                code="no_site_in_residency",
                headers={"x-edgeplane-attempts": "0"},
            )
