"""Health, hysteresis and ejection in virtual time: exact transitions at exact times."""

from __future__ import annotations

from edgeplane.health import Health, HealthBook, HealthPolicy, Outcome
from edgeplane.routing import SiteState, SiteView

POLICY = HealthPolicy(rise=2, fall=3, eject_seconds=2.0, eject_max_seconds=8.0)


def test_one_blip_degrades_three_in_a_row_take_it_down_two_bring_it_back() -> None:
    book = HealthBook(POLICY)
    assert book.record("a", Outcome.ERROR, 0.0) is Health.DEGRADED
    assert book.record("a", Outcome.OK, 0.1) is Health.SERVING  # a blip does not flap the site
    assert [book.record("a", Outcome.ERROR, t) for t in (1.0, 1.1, 1.2)] == [
        Health.DEGRADED,
        Health.DEGRADED,
        Health.DOWN,
    ]
    assert book.site("a").ejected_until == 3.2
    assert not book.may_probe("a", 3.19) and book.may_probe("a", 3.2)
    assert book.record("a", Outcome.OK, 3.2) is Health.DOWN  # one success is not the rise count
    assert book.record("a", Outcome.OK, 3.3) is Health.SERVING


def test_connection_refused_is_down_at_once_and_ejection_backs_off() -> None:
    book = HealthBook(POLICY)
    assert book.record("a", Outcome.CONNECT_ERROR, 10.0) is Health.DOWN
    assert book.site("a").ejected_until == 12.0
    # Each failed trial after an ejection doubles the next one, up to the maximum.
    for now, until in ((12.0, 16.0), (16.0, 24.0), (24.0, 32.0)):
        assert book.record("a", Outcome.ERROR, now) is Health.DOWN
        assert book.site("a").ejected_until == until
    book.record("a", Outcome.OK, 32.0)
    assert book.record("a", Outcome.OK, 32.5) is Health.SERVING
    assert book.site("a").ejections == 0
    book.record("a", Outcome.CONNECT_ERROR, 40.0)
    assert book.site("a").ejected_until == 42.0  # the back-off starts over


def test_time_to_first_token_far_above_its_norm_is_an_outlier() -> None:
    book = HealthBook(HealthPolicy(ttft_outlier_factor=5.0, ttft_outlier_min_seconds=0.25, ttft_min_samples=3, fall=3))
    for t in range(3):
        assert book.record("a", Outcome.OK, float(t), ttft_seconds=0.1) is Health.SERVING
    assert book.site("a").ttft_norm == 0.1
    assert book.record("a", Outcome.OK, 3.0, ttft_seconds=0.4) is Health.SERVING  # slower, within 5x
    assert book.record("a", Outcome.OK, 3.5, ttft_seconds=0.3) is Health.SERVING
    small = HealthBook(HealthPolicy(ttft_min_samples=3))
    for t in range(3):
        small.record("a", Outcome.OK, float(t), ttft_seconds=0.002)
    assert small.record("a", Outcome.OK, 3.0, ttft_seconds=0.05) is Health.SERVING  # 25x, but only 48 ms: jitter
    # Slowness degrades after the fall count (3) of outliers in a row, and never takes a site down.
    assert [book.record("a", Outcome.OK, t, ttft_seconds=2.0) for t in (4.0, 4.1, 4.2, 4.3)] == [
        Health.SERVING,
        Health.SERVING,
        Health.DEGRADED,
        Health.DEGRADED,
    ]
    assert book.site("a").last_failure == "slow"
    assert book.record("a", Outcome.OK, 5.0, ttft_seconds=0.1) is Health.SERVING


def test_overlay_takes_down_sites_out_and_marks_degraded_ones() -> None:
    book = HealthBook(POLICY)
    views = {p: SiteView(p, SiteState.SERVING, frozenset({"m"}), "http://127.0.0.1:1") for p in ("a", "b", "c")}
    views["c"] = SiteView("c", SiteState.DRAINED, frozenset({"m"}), None)
    generation = book.generation
    book.record("a", Outcome.CONNECT_ERROR, 0.0, why="connection refused")
    book.record("b", Outcome.ERROR, 0.0)
    book.record("c", Outcome.CONNECT_ERROR, 0.0)
    assert book.generation == generation + 3
    seen = book.overlay(views)
    assert seen["a"].state is SiteState.DOWN and "connection refused" in seen["a"].reason
    assert seen["b"].state is SiteState.DEGRADED
    assert seen["c"].state is SiteState.DRAINED  # a drain stays a drain
