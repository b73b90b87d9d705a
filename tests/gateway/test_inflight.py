"""The gateway's split of a site's busy count into its own requests and everyone else's."""

from __future__ import annotations

from edgeplane.gateway._inflight import InFlight
from edgeplane.routing import SiteState, SiteView
from tests._time import VirtualClock

KEY = ("iad1", "m")


def site(busy: int, busy_at: float) -> dict[str, SiteView]:
    return {"iad1": SiteView("iad1", SiteState.SERVING, frozenset({"m"}), "http://x", 0.0, "", {"m": busy}, busy_at)}


def test_a_reading_counts_this_gateways_requests_of_its_time_not_of_now() -> None:
    clock = VirtualClock()
    book = InFlight(clock)
    for _ in range(3):
        book.change(KEY, 1)
    clock.advance(1.0)  # the site reads 4 busy: this gateway's 3 and one from elsewhere
    reading = clock.now
    clock.advance(0.5)
    book.change(KEY, -1)
    book.change(KEY, -1)  # this gateway's requests there finished since
    others = book.others(site(4, reading))["iad1"].busy["m"]
    assert others == 1 and book.now[KEY] == 1  # so the router sees 1 + 1 busy, not max(4, 1) = 4
    assert book.at(KEY, reading - 5) == 0 and book.at(KEY, reading - 0.5) == 3
    # Without a reading time, this gateway's requests now are taken out: the larger count stands.
    assert book.others(site(4, 0.0))["iad1"].busy["m"] == 3
    # Never below zero: the gateway counts a request before the site sees it and after it is done there.
    assert book.others(site(0, reading))["iad1"].busy["m"] == 0


def test_old_history_is_trimmed_but_one_entry_before_the_window_is_kept() -> None:
    clock = VirtualClock()
    book = InFlight(clock, keep_seconds=1.0)
    book.change(KEY, 1)
    for _ in range(100):
        clock.advance(0.1)
        book.change(KEY, 1)
        book.change(KEY, -1)
    assert len(book._times[KEY]) <= 65  # trimmed: about the last 2 seconds kept
    assert book.at(KEY, clock.now - 0.05) == 1 and book.at(KEY, clock.now) == 1
