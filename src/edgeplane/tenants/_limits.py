"""Rate limits and token quotas: the control plane leases shares of each key's per-window budget to
gateways, which enforce them locally, so the request path never waits on a central store."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = 60.0
LEASE_SHARE = 0.1  # each lease is this share of the window's budget (at least 1)


@dataclass(frozen=True, slots=True)
class Grant:
    requests: int
    tokens: int
    window: int  # which window it belongs to
    window_ends_in: float  # seconds


# What a shared store offers (several control plane replicas): in one transaction, what was spent of a key in a
# window (requests, tokens), given to a function that says what to grant, the grant added to it and returned.
Spend = Callable[[str, int, Callable[[int, int], tuple[int, int]]], tuple[int, int]]


@dataclass
class _Spent:
    window: int = -1
    requests: int = 0
    tokens: int = 0


class LeaseBook:
    """The control plane's side: how much of each key's budget has been leased out this window. Pure:
    the time comes in with each call."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS, *, shared: Spend | None = None) -> None:
        self.window_seconds = window_seconds
        self._spent: dict[str, _Spent] = {}
        self.shared = shared  # replicas keep the spent budget in their store, so no key is leased twice

    def budget(self, per_minute: int | None) -> int | None:
        return None if per_minute is None else max(1, math.floor(per_minute * self.window_seconds / 60.0))

    def lease(self, key_id: str, rpm: int | None, tpm: int | None, now: float) -> Grant:
        window = math.floor(now / self.window_seconds)
        ends_in = (window + 1) * self.window_seconds - now
        if self.shared is not None:

            def grant(spent_requests: int, spent_tokens: int) -> tuple[int, int]:
                return self._take(self.budget(rpm), spent_requests), self._take(self.budget(tpm), spent_tokens)

            requests, tokens = self.shared(key_id, window, grant)
            return Grant(requests, tokens, window, ends_in)
        spent = self._spent.setdefault(key_id, _Spent())
        if spent.window != window:
            spent.window, spent.requests, spent.tokens = window, 0, 0
        requests = self._take(self.budget(rpm), spent.requests)
        tokens = self._take(self.budget(tpm), spent.tokens)
        spent.requests += requests if rpm is not None else 0
        spent.tokens += tokens if tpm is not None else 0
        return Grant(requests, tokens, window, ends_in)

    @staticmethod
    def _take(budget: int | None, spent: int) -> int:
        if budget is None:
            return 1 << 30  # unlimited
        share = max(1, math.ceil(budget * LEASE_SHARE))
        return max(0, min(share, budget - spent))


@dataclass
class Bucket:
    """A gateway's side for one key: what is left of its leases in the current window."""

    requests: int = 0
    tokens: int = 0
    window_ends_at: float = 0.0  # monotonic
    exhausted: bool = False  # the control plane had nothing left this window
    pending: bool = False

    def expire(self, now: float) -> None:
        if now >= self.window_ends_at:
            self.requests, self.tokens, self.exhausted = 0, 0, False

    def add(self, grant: Grant, now: float) -> None:
        ends_at = now + grant.window_ends_in
        if ends_at > self.window_ends_at + 1e-6 and self.window_ends_at <= now:
            self.requests, self.tokens = 0, 0
        self.window_ends_at = ends_at
        self.requests += grant.requests
        self.tokens += grant.tokens
        self.exhausted = grant.requests == 0 or grant.tokens == 0

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.window_ends_at - now)) if self.exhausted else 1
