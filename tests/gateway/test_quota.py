"""A key's leases at the gateway, in virtual time: spent per request, refused with Retry-After when gone,
asked for again when low."""

from __future__ import annotations

import pytest

from edgeplane.gateway._quota import Quotas
from edgeplane.tenants import Grant, KeyPolicy
from edgeplane.web import ApiError
from tests._time import VirtualClock


def test_a_lease_is_spent_one_request_at_a_time_then_refused_until_its_window_ends() -> None:
    clock = VirtualClock()
    quotas = Quotas(clock)
    policy = KeyPolicy("key_a", "acme", rpm=60)
    quotas.grant("key_a", Grant(requests=2, tokens=0, window=0, window_ends_in=30.0))
    quotas.grant("key_a", Grant(requests=0, tokens=0, window=0, window_ends_in=30.0))  # nothing more this window
    quotas.admit(policy)
    quotas.admit(policy)
    with pytest.raises(ApiError) as refused:
        quotas.admit(policy)
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    assert refused.value.message.startswith("Rate limit reached for this API key: 60 requests per minute.")
    assert refused.value.headers == {"Retry-After": "30"}
    clock.advance(20.5)
    with pytest.raises(ApiError) as later:
        quotas.admit(policy)
    assert later.value.headers == {"Retry-After": "10"}


def test_tokens_run_out_after_the_answers_that_spent_them() -> None:
    quotas = Quotas(VirtualClock())
    policy = KeyPolicy("key_t", "acme", tpm=1000)
    quotas.grant("key_t", Grant(requests=1 << 30, tokens=500, window=0, window_ends_in=30.0))
    quotas.admit(policy)
    quotas.spend_tokens("key_t", 500)
    with pytest.raises(ApiError) as refused:
        quotas.admit(policy)
    assert "1000 tokens per minute" in refused.value.message and refused.value.headers == {"Retry-After": "1"}


def test_an_unlimited_key_is_never_counted_and_never_leased_for() -> None:
    quotas = Quotas(VirtualClock())
    free = KeyPolicy("key_free", "acme")
    for _ in range(5):
        quotas.admit(free)
    quotas.spend_tokens("key_free", 10**6)
    quotas.spend_tokens(None, 10)
    assert quotas.wanted([free]) == []
    assert repr(quotas) == "<Quotas [Keys: 0 with leases]>"


def test_leases_are_wanted_when_low_unless_revoked_or_the_window_had_nothing_left() -> None:
    clock = VirtualClock()
    quotas = Quotas(clock)
    low, full, gone, revoked = (
        KeyPolicy("key_low", "acme", rpm=60),
        KeyPolicy("key_full", "acme", rpm=60),
        KeyPolicy("key_gone", "acme", rpm=60),
        KeyPolicy("key_revoked", "acme", rpm=60, revoked=True),
    )
    quotas.grant("key_full", Grant(requests=10, tokens=0, window=0, window_ends_in=30.0))
    quotas.grant("key_gone", Grant(requests=0, tokens=0, window=0, window_ends_in=30.0))
    assert quotas.wanted([low, full, gone, revoked]) == ["key_low"]
    clock.advance(30.0)  # a new window: what was left expires, and the control plane may have more
    assert quotas.wanted([low, full, gone, revoked]) == ["key_low", "key_full", "key_gone"]
