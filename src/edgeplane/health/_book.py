"""Health of sites from probes and real traffic: rise and fall counts, outliers, and ejection back-off.

Pure: every call takes the time, so tests run it in virtual time and assert exact transitions.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

from edgeplane.routing import SiteState, SiteView


class Outcome(enum.Enum):
    OK = "ok"
    CONNECT_ERROR = "connect_error"  # nothing answers: unambiguous, the site is down at once
    ERROR = "error"  # 5xx, 429, an error body, a broken or stalled answer
    SLOW = "slow"  # answered, but its time to first token was far above its norm


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    rise: int = 2  # consecutive successes that bring a down site back
    fall: int = 3  # consecutive failures that take a site down
    ttft_outlier_factor: float = 5.0  # a TTFT this many times its norm is an outlier...
    ttft_outlier_min_seconds: float = 0.25  # ...and this much above it: jitter of a few ms is no signal
    ttft_min_samples: int = 5  # before this many samples there is no norm yet
    ttft_norm_weight: float = 0.1  # EWMA weight of each new sample
    eject_seconds: float = 1.0  # first ejection; each ejection in a row doubles it
    eject_max_seconds: float = 10.0


class Health(enum.Enum):
    SERVING = "serving"
    DEGRADED = "degraded"
    DOWN = "down"

    def __str__(self) -> str:
        return self.value


@dataclass(slots=True)
class SiteHealth:
    state: Health = Health.SERVING
    successes: int = 0  # in a row
    failures: int = 0  # in a row
    ejections: int = 0  # in a row, for the back-off
    ejected_until: float = 0.0
    last_failure: str = ""
    ttft_norm: float | None = None
    ttft_samples: int = 0

    def __repr__(self) -> str:
        return (
            f"<SiteHealth {self.state} [ok {self.successes} in a row, failed {self.failures} in a row, "
            f"ejections {self.ejections}]>"
        )


class HealthBook:
    """Health per site. ``generation`` moves whenever a state changes, so views can be cached."""

    def __init__(self, policy: HealthPolicy | None = None) -> None:
        self.policy = policy or HealthPolicy()
        self.sites: dict[str, SiteHealth] = {}
        self.generation = 0

    def __repr__(self) -> str:
        counts = {h: sum(1 for s in self.sites.values() if s.state is h) for h in Health}
        return "<HealthBook [" + ", ".join(f"{h}: {n}" for h, n in counts.items()) + "]>"

    def site(self, pop: str) -> SiteHealth:
        health = self.sites.get(pop)
        if health is None:
            health = self.sites[pop] = SiteHealth()
        return health

    def state(self, pop: str) -> Health:
        health = self.sites.get(pop)
        return health.state if health else Health.SERVING

    def record(
        self, pop: str, outcome: Outcome, now: float, *, ttft_seconds: float | None = None, why: str = ""
    ) -> Health:
        """Count one result of a probe or of real traffic; returns the state after it."""
        policy = self.policy
        health = self.site(pop)
        before = health.state
        if outcome is Outcome.OK and ttft_seconds is not None:
            outcome = self._observe_ttft(health, ttft_seconds)
        if outcome is Outcome.OK:
            health.successes += 1
            health.failures = 0
            if health.state is Health.DEGRADED or (health.state is Health.DOWN and health.successes >= policy.rise):
                health.state = Health.SERVING
                health.ejections = 0
        else:
            health.failures += 1
            health.successes = 0
            health.last_failure = why or outcome.value
            if outcome is Outcome.SLOW:
                # Slowness alone degrades a site after the fall count, and never takes it down: one slow
                # answer on a busy machine is no signal, and a slow site still answers.
                if health.state is Health.SERVING and health.failures >= policy.fall:
                    health.state = Health.DEGRADED
            elif health.state is Health.DOWN:
                self._eject(health, now)  # a failed trial while ejected: wait longer
            elif outcome is Outcome.CONNECT_ERROR or health.failures >= policy.fall:
                health.state = Health.DOWN
                self._eject(health, now)
            else:
                health.state = Health.DEGRADED
        if health.state is not before:
            self.generation += 1
        return health.state

    def _eject(self, health: SiteHealth, now: float) -> None:
        health.ejections += 1
        period = min(self.policy.eject_max_seconds, self.policy.eject_seconds * 2.0 ** (health.ejections - 1))
        health.ejected_until = now + period

    def _observe_ttft(self, health: SiteHealth, ttft: float) -> Outcome:
        policy = self.policy
        norm = health.ttft_norm
        if (
            norm is not None
            and health.ttft_samples >= policy.ttft_min_samples
            and ttft > policy.ttft_outlier_factor * norm
            and ttft - norm > policy.ttft_outlier_min_seconds
        ):
            return Outcome.SLOW  # an outlier does not move the norm
        health.ttft_samples += 1
        health.ttft_norm = ttft if norm is None else norm + policy.ttft_norm_weight * (ttft - norm)
        return Outcome.OK

    def may_probe(self, pop: str, now: float) -> bool:
        """A down site is probed again only once its ejection has run out."""
        health = self.sites.get(pop)
        return health is None or health.state is not Health.DOWN or now >= health.ejected_until

    def overlay(self, sites: Mapping[str, SiteView]) -> dict[str, SiteView]:
        """The snapshot's views with this book's verdicts: down sites out, degraded ones marked."""
        out = dict(sites)
        for pop, health in self.sites.items():
            view = sites.get(pop)
            if view is None or view.state is not SiteState.SERVING or health.state is Health.SERVING:
                continue
            state = SiteState.DOWN if health.state is Health.DOWN else SiteState.DEGRADED
            out[pop] = replace(view, state=state, reason=f"{health.state} here: {health.last_failure}")
        return out
