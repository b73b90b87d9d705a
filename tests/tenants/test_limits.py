"""Leases of a key's budget in virtual time: shares, the window's end, and nothing beyond the budget."""

from __future__ import annotations

from edgeplane.tenants import Bucket, LeaseBook


def test_leases_hand_out_shares_until_the_window_budget_is_spent() -> None:
    book = LeaseBook(window_seconds=60.0)
    grants = [book.lease("k", rpm=100, tpm=None, now=120.0 + i) for i in range(12)]
    assert [g.requests for g in grants] == [10] * 10 + [0, 0]
    assert grants[0].window == 2 and grants[0].window_ends_in == 60.0 and grants[5].window_ends_in == 55.0
    assert book.lease("k", rpm=100, tpm=None, now=180.0).requests == 10  # a new window, a new budget
    assert book.lease("other", rpm=100, tpm=None, now=181.0).requests == 10  # each key its own


def test_token_budgets_and_small_budgets() -> None:
    book = LeaseBook(window_seconds=5.0)
    assert book.budget(1200) == 100 and book.budget(3) == 1
    first = book.lease("k", rpm=3, tpm=12_000, now=0.0)
    assert (first.requests, first.tokens) == (1, 100)
    assert book.lease("k", rpm=3, tpm=12_000, now=0.1).requests == 0


def test_a_bucket_spends_its_lease_and_says_when_to_retry() -> None:
    book = LeaseBook(window_seconds=60.0)
    bucket = Bucket()
    bucket.add(book.lease("k", rpm=10, tpm=None, now=30.0), now=1000.0)
    assert bucket.requests == 1 and not bucket.exhausted
    bucket.add(book.lease("k", rpm=10, tpm=None, now=30.0), now=1000.0)
    assert bucket.requests == 2
    for _ in range(8):
        bucket.add(book.lease("k", rpm=10, tpm=None, now=30.0), now=1000.0)
    bucket.add(book.lease("k", rpm=10, tpm=None, now=30.0), now=1000.0)
    assert bucket.requests == 10 and bucket.exhausted and bucket.retry_after(1000.0) == 30
    bucket.expire(1030.0)
    assert bucket.requests == 0 and not bucket.exhausted
