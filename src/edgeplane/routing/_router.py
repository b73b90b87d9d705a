"""Client address to metro by longest-prefix match, then candidate sites up the scope ladder."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import radix

from edgeplane.catalog import DEFAULT_OUTPUT_TOKENS, ReplicaSpeed
from edgeplane.fleet import Fleet
from edgeplane.routing._model import Candidate, Decision, PassedOver, Scope, SiteState, SiteView

# Ties within a scope lean toward the less loaded site by at most this much.
LOAD_PENALTY_MS = 2.0
# A degraded site still serves, but only when no healthy site of a scope meets the SLO.
DEGRADED_PENALTY_MS = 1000.0
_USABLE = frozenset({SiteState.SERVING, SiteState.DEGRADED})
DEFAULT_PROMPT_TOKENS = 256


@dataclass(frozen=True, slots=True)
class _Serving:
    """How one model runs at one PoP: the speed of a replica, how many there are, their batch slots."""

    speed: ReplicaSpeed
    replicas: int
    slots: int


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
        self._serving: dict[tuple[str, str], _Serving] = {}
        for entry in fleet.placement:
            gpu = fleet.best_gpu_type(entry.model, entry.pop)
            spec = fleet.model_by_name[entry.model]
            if gpu is not None:
                speed = ReplicaSpeed(spec.replica_throughput(gpu), spec.max_concurrency)
                slots = spec.max_concurrency * entry.replicas
                self._serving[(entry.pop, entry.model)] = _Serving(speed, entry.replicas, slots)
        self._slo_ms = {m.name: m.slo_ttft_ms for m in fleet.models}
        # Per client metro and model, only the rungs that serve the model, with how they serve it: the
        # request path walks these; explanations walk the whole ladder.
        placed_at: dict[str, set[str]] = {}
        for entry in fleet.placement:
            placed_at.setdefault(entry.pop, set()).add(entry.model)
        self._placed: dict[tuple[str, str], tuple[tuple[_Rung, _Serving | None], ...]] = {
            (metro, model.name): tuple(
                (rung, self._serving.get((rung.pop, model.name)))
                for rung in ladder
                if model.name in placed_at.get(rung.pop, ())
            )
            for metro, ladder in self._ladders.items()
            for model in fleet.models
        }

    def slots(self, pop: str, model: str, site: SiteView | None = None) -> int:
        """Batch slots of a model at a PoP (replicas times concurrency); 0 where it is not placed. With the
        site's view, only the replicas of units carrying traffic count."""
        serving = self._at(pop, model, site)
        return serving.slots if serving else 0

    def replicas(self, pop: str, model: str, site: SiteView | None = None) -> int:
        serving = self._at(pop, model, site)
        return serving.replicas if serving else 0

    def _at(self, pop: str, model: str, site: SiteView | None) -> _Serving | None:
        serving = self._serving.get((pop, model))
        if serving is None or site is None or model not in site.replicas:
            return serving
        return _reduced(serving, site.replicas[model])

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

    def ladder(self, client_metro: str) -> list[tuple[str, str, Scope, float]]:
        """Every PoP in the order the gateway tries them for a client metro before load is known: scope,
        then round trip: (pop, metro, scope, rtt_ms). The planner routes whole demand along it."""
        return [(r.pop, r.metro, r.scope, r.rtt_ms) for r in self._ladders[client_metro]]

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

    def decide(
        self,
        client: str,
        model: str,
        sites: Mapping[str, SiteView],
        *,
        explain: bool = True,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        local_busy: Mapping[tuple[str, str], int] | None = None,
        within: frozenset[str] | None = None,
    ) -> Decision:
        """Ordered candidates for one request. ``explain=False`` skips the reasons for passed-over sites,
        which the request path only needs when nothing can serve. ``local_busy`` is the caller's own
        in-flight count per (PoP, model), added to the sites' busy counts, which must then leave the caller's
        requests out (the gateway's InFlight.others)."""
        metro, located_by = self.locate(client)
        return self.decide_for_metro(
            client,
            metro,
            located_by,
            model,
            sites,
            explain=explain,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            local_busy=local_busy,
            within=within,
        )

    def metros_within(self, continent: str | None = None, region: str | None = None) -> frozenset[str]:
        """The metros of a residency pin (a region, or a continent)."""
        if region:
            return frozenset(m.code for m in self.fleet.metros if m.region == region)
        if continent:
            return frozenset(m.code for m in self.fleet.metros if self.fleet.continent_of(m.code).code == continent)
        return frozenset(self.fleet.metro_by_code)

    def decide_for_metro(
        self,
        client: str,
        metro: str,
        located_by: str,
        model: str,
        sites: Mapping[str, SiteView],
        *,
        explain: bool = True,
        prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
        output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        local_busy: Mapping[tuple[str, str], int] | None = None,
        within: frozenset[str] | None = None,
    ) -> Decision:
        """``within``, if given, is the set of metros a request may be served in (residency).

        Stay in the closest scope whose best site is predicted to meet the model's TTFT SLO and is
        not full; within a scope, lowest predicted TTFT first. Sites that would break the SLO, or are
        full, come last, closest first, for when nothing better is left."""
        slo_ms = self._slo_ms.get(model, float("inf"))
        good: list[Candidate] = []
        poor: list[Candidate] = []
        passed: list[PassedOver] = []
        if explain:
            rungs = tuple((rung, self._serving.get((rung.pop, model))) for rung in self._ladders[metro])
        else:
            rungs = self._placed.get((metro, model), ())
        serving_state, degraded_state = SiteState.SERVING, SiteState.DEGRADED
        for rung, serving in rungs:
            if within is not None and rung.metro not in within:
                if explain:
                    passed.append(PassedOver(rung.pop, rung.metro, rung.scope, "outside the key's residency"))
                continue
            site = sites.get(rung.pop)
            if (
                site is None
                or (site.state is not serving_state and site.state is not degraded_state)
                or model not in site.models
                or site.url is None
            ):
                if explain:
                    passed.append(PassedOver(rung.pop, rung.metro, rung.scope, _unusable(site, model)))
                continue
            if serving is not None and site.replicas and model in site.replicas:
                serving = _reduced(serving, site.replicas[model])  # some of its units carry no traffic
            busy = site.busy.get(model, 0) if site.busy else 0
            if local_busy:
                busy += local_busy.get((rung.pop, model), 0)
            if serving is None:
                queue_ms, prefill_ms, full = 0.0, 0.0, False
            else:
                speed = serving.speed
                full = busy >= serving.slots
                queue_ms = 1000.0 * speed.queue_seconds(busy, serving.replicas, output_tokens) if full else 0.0
                batch = busy + 1 if busy < speed.max_concurrency else speed.max_concurrency
                prefill_ms = 1000.0 * speed.prefill_seconds(prompt_tokens, batch)
            ttft = rung.rtt_ms + queue_ms + prefill_ms
            cost = ttft + site.load * LOAD_PENALTY_MS
            if site.state is degraded_state:
                cost += DEGRADED_PENALTY_MS
            meets_slo = cost <= slo_ms
            candidate = Candidate(
                rung.pop,
                rung.metro,
                rung.scope,
                rung.rtt_ms,
                site.load,
                cost,
                site.url,
                queue_ms,
                prefill_ms,
                meets_slo,
                full,
            )
            (good if meets_slo and not full else poor).append(candidate)
        good.sort(key=_order)
        # Among the rest, a site that is merely busy comes before one that is failing, closest first.
        poor.sort(key=_order_poor)
        candidates = good + poor
        if explain and candidates:
            best = candidates[0]
            passed = [p for p in passed if p.scope <= best.scope]
            for c in poor:
                if c.scope < best.scope or (c.scope == best.scope and c is not best):
                    passed.append(PassedOver(c.pop, c.metro, c.scope, _why_poor(c, slo_ms)))
            passed.extend(
                PassedOver(c.pop, c.metro, c.scope, f"slower (predicted {c.cost_ms:.1f} ms vs {best.cost_ms:.1f} ms)")
                for c in good[1:]
                if c.scope == best.scope
            )
        return Decision(client, metro, located_by, model, tuple(candidates), tuple(passed))


def _reduced(serving: _Serving, replicas: int) -> _Serving:
    return _Serving(serving.speed, replicas, serving.speed.max_concurrency * replicas)


def _why_poor(candidate: Candidate, slo_ms: float) -> str:
    if candidate.full:
        return f"full (predicted queue {candidate.queue_ms:.1f} ms)"
    return (
        f"predicted time to first token {candidate.cost_ms:.1f} ms breaks the SLO of {slo_ms:g} ms"
        f" (queue {candidate.queue_ms:.1f} ms, prefill {candidate.prefill_ms:.1f} ms)"
    )


def _order(candidate: Candidate) -> tuple[Scope, float, str]:
    return candidate.scope, candidate.cost_ms, candidate.pop


def _order_poor(candidate: Candidate) -> tuple[bool, Scope, float, str]:
    return candidate.cost_ms >= DEGRADED_PENALTY_MS, candidate.scope, candidate.cost_ms, candidate.pop


def _unusable(site: SiteView | None, model: str) -> str:
    if site is None:
        return "no state reported yet"
    if site.state not in _USABLE:
        return f"{site.state}" + (f" ({site.reason})" if site.reason else "")
    if model not in site.models:
        return f"does not serve {model}"
    return "no address reported"
