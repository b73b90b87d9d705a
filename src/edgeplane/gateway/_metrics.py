"""The gateway's Prometheus metrics and the /metrics page that shows them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from edgeplane.gateway._snapshots import RoutingState
from edgeplane.health import Health, HealthBook


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "edgeplane_gateway_requests",
            "Requests answered, by serving metro and scope.",
            ["model", "metro", "scope", "status"],
            registry=registry,
        )
        self.attempts = Counter(
            "edgeplane_gateway_attempts", "Tries sent to sites.", ["site", "outcome"], registry=registry
        )
        self.in_flight = Gauge("edgeplane_gateway_requests_in_flight", "Requests being served.", registry=registry)
        self.decision = Histogram(
            "edgeplane_gateway_routing_decision_seconds",
            "Time to take a routing decision.",
            buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3),
            registry=registry,
        )
        self.snapshot_version = Gauge(
            "edgeplane_gateway_snapshot_version", "Version of the snapshot in use.", registry=registry
        )
        self.snapshot_age = Gauge(
            "edgeplane_gateway_snapshot_age_seconds",
            "Seconds since the control plane confirmed the snapshot.",
            registry=registry,
        )
        self.residency = Counter(
            "edgeplane_gateway_residency_decisions",
            "Routing decisions limited to a key's residency, by pin and outcome (served, refused).",
            ["pin", "outcome"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "edgeplane_gateway_auth_failures", "Requests refused by authentication.", ["reason"], registry=registry
        )
        self.poisoned = Counter(
            "edgeplane_gateway_unprocessable_requests",
            "Requests two sites failed the same way (500): refused as the request's fault, held against no site.",
            registry=registry,
        )
        self.site_health = Gauge(
            "edgeplane_gateway_site_health",
            "1 for each site's health state as this gateway sees it (serving, degraded, down).",
            ["site", "state"],
            registry=registry,
        )

    def refused(self, model: str, status: int) -> None:
        """A request no site answered (the gateway refused it after routing)."""
        self.requests.labels(model, "", "", str(status)).inc()

    def exposition(self, state: RoutingState | None, age_seconds: float | None, health: HealthBook) -> bytes:
        """The page /metrics serves, with the snapshot gauges and every snapshot site's health brought up to
        date first (they are read, not counted as things happen)."""
        if state is not None:
            self.snapshot_version.set(state.snapshot.version)
            self.snapshot_age.set(age_seconds or 0.0)
            for pop in state.snapshot.sites:
                current = health.state(pop)
                for each in Health:
                    self.site_health.labels(pop, each.value).set(1.0 if each is current else 0.0)
        return generate_latest(self.registry)
