"""This gateway's requests in flight per (PoP, model), now and over the last few seconds.

A snapshot's busy counts were read at the site some time ago and include this gateway's own requests of that
moment. Counting them again, or trusting the old count over the gateway's fresh one, makes a site look full
when it is not (or free when it is not). So the gateway splits each count: everyone else's share is the
site's count less this gateway's own at the time of the reading; the router adds this gateway's count now."""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from edgeplane.routing import SiteView

KEEP_SECONDS = 10.0  # readings older than this (republished late, or a clock far off) use the oldest kept
TRIM_AT = 64  # entries per (PoP, model) before old ones are dropped

Key = tuple[str, str]  # (PoP, model)


class InFlight:
    def __init__(self, clock: Callable[[], float] = time.time, keep_seconds: float = KEEP_SECONDS) -> None:
        self.clock = clock  # wall clock: the sites stamp their readings with theirs
        self.keep_seconds = keep_seconds
        self.now: dict[Key, int] = {}
        self._times: dict[Key, list[float]] = {}
        self._counts: dict[Key, list[int]] = {}

    def __repr__(self) -> str:
        return f"<InFlight [Requests: {sum(self.now.values())} in flight at {len(self.now)} sites]>"

    def change(self, key: Key, delta: int) -> None:
        count = self.now.get(key, 0) + delta
        self.now[key] = count
        now = self.clock()
        if key not in self._times:
            self._times[key], self._counts[key] = [-math.inf], [0]  # nothing in flight before the first
        times, counts = self._times[key], self._counts[key]
        times.append(now)
        counts.append(count)
        if len(times) > TRIM_AT and times[1] < now - 2 * self.keep_seconds:
            # Drop what is older than the window, but keep the entry in force at its start.
            cut = bisect.bisect_left(times, now - self.keep_seconds) - 1
            del times[:cut], counts[:cut]

    def at(self, key: Key, when: float) -> int:
        """This gateway's count at wall-clock time ``when`` (before the kept history: its oldest entry)."""
        times = self._times.get(key)
        if not times:
            return 0
        return self._counts[key][max(0, bisect.bisect_right(times, when) - 1)]

    def others(self, sites: Mapping[str, SiteView]) -> dict[str, SiteView]:
        """The sites with their busy counts less this gateway's share at the time they were read (when that
        time is unknown, less this gateway's count now: the larger of the two counts is what is then assumed)."""
        out: dict[str, SiteView] = {}
        for code, site in sites.items():
            if not site.busy:
                out[code] = site
                continue
            if site.busy_at:
                busy = {m: max(0, n - self.at((code, m), site.busy_at)) for m, n in site.busy.items()}
            else:
                busy = {m: max(0, n - self.now.get((code, m), 0)) for m, n in site.busy.items()}
            out[code] = replace(site, busy=busy)
        return out
