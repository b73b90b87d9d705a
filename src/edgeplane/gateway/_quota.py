"""Each key's rate limits at this gateway: what is left of its leases, spent per request and topped up from
the control plane in the background, so no request waits for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from edgeplane._errors import BackendError
from edgeplane.tenants import Bucket, Grant, KeyPolicy
from edgeplane.web import ApiError, ControlUrls, HttpClient

LEASE_POLL_SECONDS = 0.05
LEASE_LOW_REQUESTS = 2
LEASE_LOW_TOKENS = 1024
LEASE_TIMEOUT_SECONDS = 2.0


def limited(policy: KeyPolicy) -> bool:
    return policy.rpm is not None or policy.tpm is not None


class Quotas:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # monotonic: lease windows end this many seconds from when they were granted
        self._buckets: dict[str, Bucket] = {}  # key id -> what is left of its leases

    def __repr__(self) -> str:
        return f"<Quotas [Keys: {len(self._buckets)} with leases]>"

    def admit(self, policy: KeyPolicy) -> None:
        """Spend one request of a limited key's local lease, or raise ApiError(429) with Retry-After."""
        if not limited(policy):
            return
        now = self.clock()
        bucket = self._buckets.setdefault(policy.id, Bucket())
        bucket.expire(now)
        if bucket.requests <= 0 or (policy.tpm is not None and bucket.tokens <= 0):
            what = "requests" if bucket.requests <= 0 else "tokens"
            per = policy.rpm if what == "requests" else policy.tpm
            raise ApiError(
                429,
                f"Rate limit reached for this API key: {per} {what} per minute. Retry after the time given.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(bucket.retry_after(now))},
            )
        bucket.requests -= 1

    def spend_tokens(self, key_id: str | None, tokens: int) -> None:
        """Charge a served request's tokens to its key's lease (after the fact: they are known only then)."""
        bucket = self._buckets.get(key_id) if key_id else None
        if bucket is not None:
            bucket.tokens -= tokens

    def grant(self, key_id: str, grant: Grant) -> None:
        self._buckets.setdefault(key_id, Bucket()).add(grant, self.clock())

    def wanted(self, policies: Iterable[KeyPolicy]) -> list[str]:
        """The limited keys whose leases run low, unless the control plane had nothing left this window."""
        now = self.clock()
        wanted = []
        for policy in policies:
            if policy.revoked or not limited(policy):
                continue
            bucket = self._buckets.setdefault(policy.id, Bucket())
            bucket.expire(now)
            low = bucket.requests < LEASE_LOW_REQUESTS or (policy.tpm is not None and bucket.tokens < LEASE_LOW_TOKENS)
            if low and not bucket.exhausted:
                wanted.append(policy.id)
        return wanted


class LeaseKeeper:
    """Keeps a lease in hand for every limited key: asks the control plane for more whenever one runs low."""

    def __init__(
        self, quotas: Quotas, client: HttpClient, control: ControlUrls | str, headers: dict[str, str] | None = None
    ) -> None:
        self.quotas = quotas
        self.client = client
        self.control = ControlUrls.of(control)
        self.headers = headers

    async def lease_forever(self, policies: Callable[[], Iterable[KeyPolicy]]) -> None:
        """``policies``: the keys to keep leases for, read afresh each round (none while auth is off)."""
        while True:
            async with asyncio.TaskGroup() as group:
                for key_id in self.quotas.wanted(policies()):
                    group.create_task(self._lease(key_id))
            await asyncio.sleep(LEASE_POLL_SECONDS)

    async def _lease(self, key_id: str) -> None:
        base = self.control.current
        try:
            status, data = await self.client.request_json(
                "POST", base + "/api/leases", {"key_id": key_id}, timeout_seconds=LEASE_TIMEOUT_SECONDS,
                headers=self.headers,
            )  # fmt: skip
        except BackendError:
            self.control.failed(base)
            return  # keep what is left of the last lease
        if status == 200:
            self.quotas.grant(key_id, Grant(**data))
