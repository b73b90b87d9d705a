"""Client address to metro by longest-prefix match, then candidate sites up the scope ladder."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import radix

from edgeplane.fleet import Fleet
from edgeplane.routing._model import Candidate, Decision, PassedOver, Scope, SiteState, SiteView

# A fully loaded site costs as much as this much extra round trip; issue-3 work replaces it with a
# predicted queue wait.
LOAD_PENALTY_MS = 20.0
# A degraded site still serves, after the healthy sites of its scope.
DEGRADED_PENALTY_MS = 1000.0
_USABLE = frozenset({SiteState.SERVING, SiteState.DEGRADED})


@dataclass(frozen=True, slots=True)
class _Rung:
    pop: str
    metro: str
    scope: Scope
    rtt_ms: float


class Router:
    """Pure routing over one fleet: no sockets, no clock. Site states come in with each call."""

    def __init__(self, fleet: Fleet, home_metro: str | None = None) -> None:
        self.fleet = fleet
        self.home_metro = home_metro or fleet.metros[0].code
        if self.home_metro not in fleet.metro_by_code:
            raise ValueError(f"unknown home metro {self.home_metro!r}")
        self._tree = radix.Radix()
        for metro in fleet.metros:
            for prefix in metro.client_prefixes:
                node = self._tree.add(str(ipaddress.ip_network(prefix)))
                node.data["metro"] = metro.code
        # The ladder from each metro is fixed by geography; only states and load change per call.
        self._ladders = {m.code: self._ladder(m.code) for m in fleet.metros}

    def _scope(self, client_metro: str, metro: str) -> Scope:
        if metro == client_metro:
            return Scope.METRO
        if self.fleet.metro_by_code[metro].region == self.fleet.metro_by_code[client_metro].region:
            return Scope.REGION
        if self.fleet.continent_of(metro).code == self.fleet.continent_of(client_metro).code:
            return Scope.CONTINENT
        return Scope.GLOBAL

    def _ladder(self, client_metro: str) -> tuple[_Rung, ...]:
        rungs = [
            _Rung(
                pop.code,
                pop.metro,
                self._scope(client_metro, pop.metro),
                self.fleet.metro_rtt_ms(client_metro, pop.metro),
            )
            for pop in self.fleet.pops
        ]
        return tuple(sorted(rungs, key=lambda r: (r.scope, r.rtt_ms, r.pop)))

    def locate(self, client: str) -> tuple[str, str]:
        """The client's metro and how it was found. Unknown addresses belong to the gateway's home metro,
        since anycast brought them to this gateway."""
        try:
            node = self._tree.search_best(client)
        except ValueError:
            node = None
        if node is None:
            return self.home_metro, "no client prefix matched; gateway's home metro"
        return str(node.data["metro"]), f"prefix {node.prefix}"

    def decide(self, client: str, model: str, sites: Mapping[str, SiteView], *, explain: bool = True) -> Decision:
        """Ordered candidates for one request. ``explain=False`` skips the reasons for passed-over sites,
        which the request path only needs when nothing can serve."""
        metro, located_by = self.locate(client)
        return self.decide_for_metro(client, metro, located_by, model, sites, explain=explain)

    def decide_for_metro(
        self,
        client: str,
        metro: str,
        located_by: str,
        model: str,
        sites: Mapping[str, SiteView],
        *,
        explain: bool = True,
    ) -> Decision:
        candidates: list[Candidate] = []
        passed: list[PassedOver] = []
        for rung in self._ladders[metro]:
            site = sites.get(rung.pop)
            if site is None or site.state not in _USABLE or model not in site.models or site.url is None:
                if explain:
                    passed.append(PassedOver(rung.pop, rung.metro, rung.scope, _unusable(site, model)))
                continue
            cost = rung.rtt_ms + site.load * LOAD_PENALTY_MS
            if site.state is SiteState.DEGRADED:
                cost += DEGRADED_PENALTY_MS
            candidates.append(Candidate(rung.pop, rung.metro, rung.scope, rung.rtt_ms, site.load, cost, site.url))
        # Scope first (a metro is its own failure domain), then cost within the scope.
        candidates.sort(key=_order)
        if explain and candidates:
            best = candidates[0]
            passed = [p for p in passed if p.scope <= best.scope]
            passed.extend(
                PassedOver(c.pop, c.metro, c.scope, f"costlier ({c.cost_ms:.1f} ms vs {best.cost_ms:.1f} ms)")
                for c in candidates[1:]
                if c.scope == best.scope
            )
        return Decision(client, metro, located_by, model, tuple(candidates), tuple(passed))


def _order(candidate: Candidate) -> tuple[Scope, float, str]:
    return candidate.scope, candidate.cost_ms, candidate.pop


def _unusable(site: SiteView | None, model: str) -> str:
    if site is None:
        return "no state reported yet"
    if site.state not in _USABLE:
        return f"{site.state}" + (f" ({site.reason})" if site.reason else "")
    if model not in site.models:
        return f"does not serve {model}"
    return "no address reported"
