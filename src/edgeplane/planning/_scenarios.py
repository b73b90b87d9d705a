"""Failure scenarios: where the demand goes when PoPs or metros fail, decided by the gateway's own router.

Each metro's demand tries the sites in the order :meth:`Router.decide_for_metro` (the function every gateway
runs per request) gives them, and moves on from a site when the router would call it full: every batch slot
taken. With requests arriving at random that happens before the average load fills the slots, so each site
is a loss system (Erlang B's, with a service time that grows with the batch: capacity.site_blocking) whose
overflow goes to the next candidate, as the gateway's router does.

Each scenario also says where each metro's clients enter the fleet (the PoP their connections reach), as the
transits' routers would decide over what the PoPs then announce (:func:`edgeplane.bgp.predict_ingress`): a
failed PoP announces nothing, a drained metro withdraws its prefixes and prepends its aggregates."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeplane.bgp import IngressModel
from edgeplane.fleet import Fleet, PlacementEntry
from edgeplane.planning._capacity import ReplicaCapacity, replica_capacity, site_blocking
from edgeplane.planning._demand import Demand
from edgeplane.routing import Router, SiteState, SiteView

OVERFLOW_ITERATIONS = 60  # of the fixed point between what each site is offered and what it turns away
URL = "http://planned.invalid/"


@dataclass(frozen=True, slots=True)
class SiteLoad:
    pop: str
    model: str
    rps: float
    capacity_rps: float  # replicas x the replica's capacity within the SLO
    saturation_rps: float = 0.0  # where every batch slot is taken: the router calls the site full

    @property
    def utilisation(self) -> float:
        return self.rps / self.capacity_rps if self.capacity_rps else float("inf")


@dataclass(frozen=True, slots=True)
class MetroOutcome:
    metro: str
    model: str
    demand_rps: float
    unserved_rps: float
    ttft_p99_ms: float  # worst of the sites serving it, RTT included
    slo_ms: float
    served_by: dict[str, float]  # PoP -> rps

    @property
    def breaches(self) -> bool:
        return self.ttft_p99_ms > self.slo_ms or self.unserved_rps > 1e-9


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    failed: frozenset[str]
    sites: list[SiteLoad] = field(default_factory=list)
    metros: list[MetroOutcome] = field(default_factory=list)
    drained: frozenset[str] = frozenset()  # metros drained: their PoPs take no traffic and announce as drained
    ingress: dict[str, str | None] = field(default_factory=dict)  # client metro -> PoP its connections reach

    @property
    def unserved_rps(self) -> float:
        return sum(m.unserved_rps for m in self.metros)

    def to_json(self) -> dict[str, Any]:
        """The row every scenario shares (scenario, failed, drained, unserved_rps, busiest, ingress: see
        :class:`FastScenario`), then what only routing slice by slice knows: breaches, each site's load, each
        metro's outcome."""
        loads = [(s.pop, use) for s in self.sites if (use := _finite(s.utilisation)) is not None]
        top = max(loads, key=lambda load: load[1], default=None)
        return {
            "scenario": self.name,
            "failed": sorted(self.failed),
            "drained": sorted(self.drained),
            "unserved_rps": round(self.unserved_rps, 3),
            "busiest": {"pop": top[0], "utilisation": top[1]} if top is not None else None,
            "ingress": dict(self.ingress),
            "breaches": [
                {"metro": m.metro, "model": m.model, "ttft_p99_ms": _finite(m.ttft_p99_ms), "slo_ms": m.slo_ms,
                 "unserved_rps": round(m.unserved_rps, 3)}
                for m in self.metros if m.breaches
            ],
            "sites": [
                {"pop": s.pop, "model": s.model, "rps": round(s.rps, 3), "capacity_rps": round(s.capacity_rps, 3),
                 "saturation_rps": round(s.saturation_rps, 3), "utilisation": _finite(s.utilisation)}
                for s in self.sites
            ],
            "metros": [
                {"metro": m.metro, "model": m.model, "demand_rps": m.demand_rps, "ttft_p99_ms": _finite(m.ttft_p99_ms),
                 "slo_ms": m.slo_ms, "unserved_rps": round(m.unserved_rps, 3),
                 "served_by": {p: round(r, 3) for p, r in m.served_by.items()}}
                for m in self.metros
            ],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class FastScenario:
    """A scenario as :func:`fast_scenarios` sees it: loads and unserved demand only (no TTFT, so no breaches)."""

    name: str
    failed: frozenset[str]
    unserved_rps: float
    busiest_pop: str  # the PoP with the highest utilisation (its load over its capacity, summed over models)
    utilisation: float
    drained: frozenset[str] = frozenset()
    ingress: dict[str, str | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The row every scenario shares, full or fast: what the dashboard's summary reads."""
        return {
            "scenario": self.name,
            "failed": sorted(self.failed),
            "drained": sorted(self.drained),
            "unserved_rps": round(self.unserved_rps, 3),
            "busiest": {"pop": self.busiest_pop, "utilisation": round(self.utilisation, 4)},
            "ingress": dict(self.ingress),
        }


def cold_receivers(sites: Iterable[SiteLoad], weights: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """The sites that carry a model's traffic in a scenario without its weights all on disk: they would start
    cold. ``weights``: per model whose weights travel over the fabric, the share each site holds (1.0: complete)."""
    cold = []
    for site in sites:
        held = weights.get(site.model)
        if held is not None and site.rps > 0 and held.get(site.pop, 0.0) < 1.0:
            cold.append({"pop": site.pop, "model": site.model, "held_share": round(held.get(site.pop, 0.0), 4)})
    return sorted(cold, key=lambda row: (row["pop"], row["model"]))


def _finite(value: float) -> float | None:
    return None if value == float("inf") else round(value, 3)


def with_placement(fleet: Fleet, placement: Iterable[tuple[str, str, int]]) -> Fleet:
    """The fleet with another placement ((model, pop, replicas), summed per model and PoP)."""
    merged: dict[tuple[str, str], int] = {}
    for model, pop, replicas in placement:
        merged[model, pop] = merged.get((model, pop), 0) + replicas
    entries = [PlacementEntry(model=m, pop=p, replicas=n) for (m, p), n in merged.items() if n > 0]
    return fleet.model_copy(update={"placement": entries})


def single_failures(fleet: Fleet, *, pairs: bool = False) -> list[tuple[str, frozenset[str]]]:
    """No failure, each PoP, each metro; with ``pairs``, each pair of metros too."""
    out: list[tuple[str, frozenset[str]]] = [("no failure", frozenset())]
    out += [(f"pop {p.code}", frozenset({p.code})) for p in fleet.pops]
    metro_pops = {m.code: frozenset(p.code for p in fleet.pops_in(m.code)) for m in fleet.metros}
    out += [(f"metro {m}", pops) for m, pops in metro_pops.items()]
    if pairs:
        out += [(f"metros {a}+{b}", metro_pops[a] | metro_pops[b]) for a, b in itertools.combinations(metro_pops, 2)]
    return out


def single_drains(fleet: Fleet) -> list[tuple[str, frozenset[str]]]:
    """Each metro drained on its own: ``("drain metro M", {M})``."""
    return [(f"drain metro {m.code}", frozenset({m.code})) for m in fleet.metros]


def _out_of_service(fleet: Fleet, failed: frozenset[str], drained: frozenset[str]) -> frozenset[str]:
    """The PoPs that take no traffic: the failed ones and every PoP of a drained metro."""
    return failed | frozenset(p.code for p in fleet.pops if p.metro in drained)


def ingress_of(model: IngressModel, failed: frozenset[str], drained: frozenset[str]) -> dict[str, str | None]:
    """Each client metro's ingress PoP once the drains are withdrawn and the failed PoPs gone silent."""
    predicted = model.predict(withdrawn_metros=drained, failed_pops=failed)
    return {metro: ingress.pop for metro, ingress in predicted.items()}


def simulate(
    fleet: Fleet,
    demand: Sequence[Demand],
    failed: frozenset[str],
    name: str = "",
    *,
    drained: frozenset[str] = frozenset(),
    ingress: IngressModel | None = None,
) -> Scenario:
    """Route the demand with ``failed`` PoPs down and the ``drained`` metros' PoPs out of service, the way the
    gateways would, and report loads, TTFT and (with an ``ingress`` model) where each metro's clients enter."""
    entered = ingress_of(ingress, failed, drained) if ingress is not None else {}
    down = _out_of_service(fleet, failed, drained)
    router = Router(fleet)
    mix = {d.model: (d.prompt_tokens, d.output_tokens) for d in demand}
    capacity: dict[tuple[str, str], float] = {}
    replica: dict[tuple[str, str], tuple[ReplicaCapacity, int]] = {}
    for entry in fleet.placement:
        gpu = fleet.best_gpu_type(entry.model, entry.pop)
        if gpu is None or entry.model not in mix:
            continue
        one = replica_capacity(fleet.model_by_name[entry.model], gpu, *mix[entry.model])
        capacity[entry.model, entry.pop] = entry.replicas * one.requests_per_second
        replica[entry.model, entry.pop] = (one, entry.replicas)

    rps: dict[tuple[str, str], float] = dict.fromkeys(capacity, 0.0)
    served: dict[tuple[str, str], dict[str, float]] = {}
    unserved: dict[tuple[str, str], float] = {}

    # The fleet as a gateway's snapshot shows it before any of this demand arrives: the ladders start here.
    idle: dict[str, SiteView] = {}
    for site in fleet.pops:
        models = frozenset(m for m in fleet.models_at(site.code) if (m, site.code) in capacity)
        if site.code in down:
            idle[site.code] = SiteView(site.code, SiteState.DOWN, models, None)
        else:
            idle[site.code] = SiteView(site.code, SiteState.SERVING, models, URL, 0.0, "", dict.fromkeys(models, 0))

    rows = [d for d in demand if d.requests_per_second > 0]
    # The order each client's requests try the sites in: the gateway's own decision, on the idle fleet.
    ladders = {
        (d.metro, d.model): [
            c.pop
            for c in router.decide_for_metro(
                "",
                d.metro,
                "planned",
                d.model,
                idle,
                explain=False,
                prompt_tokens=d.prompt_tokens,
                output_tokens=d.output_tokens,
            ).candidates
        ]
        for d in rows
    }
    # A request that finds every batch slot of a site taken goes on to the next candidate (the router calls
    # the site full). So the sites along a ladder are loss systems in series: each carries what is offered
    # to it times one minus its blocking, and passes the rest on. Solved as a damped fixed point.
    blocking = dict.fromkeys(capacity, 0.0)

    def flow(record: bool) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
        offered = dict.fromkeys(capacity, 0.0)
        carried = dict.fromkeys(capacity, 0.0)
        for d in rows:
            rest = d.requests_per_second
            for pop in ladders[d.metro, d.model]:
                offered[d.model, pop] += rest
                take = rest * (1.0 - blocking[d.model, pop])
                carried[d.model, pop] += take
                rest -= take
                if record and take > 0:
                    by = served.setdefault((d.metro, d.model), {})
                    by[pop] = by.get(pop, 0.0) + take
            if record and rest > 1e-9:
                unserved[d.metro, d.model] = rest
        return offered, carried

    for _ in range(OVERFLOW_ITERATIONS):
        offered, _ = flow(record=False)
        for key in capacity:
            one, replicas = replica[key]
            lost = site_blocking(one.speed, replicas, one.prompt_tokens, one.output_tokens, offered[key])
            blocking[key] = (blocking[key] + lost) / 2
    _, carried = flow(record=True)
    rps.update(carried)
    sites = [
        SiteLoad(p, m, rps[m, p], capacity[m, p], replica[m, p][1] * replica[m, p][0].saturation_rps)
        for (m, p) in capacity
        if p not in down
    ]
    metros = []
    for d in rows:
        spec = fleet.model_by_name[d.model]
        by = served.get((d.metro, d.model), {})
        worst = 0.0
        for pop, _ in by.items():
            gpu = fleet.best_gpu_type(d.model, pop)
            assert gpu is not None
            one = replica_capacity(spec, gpu, d.prompt_tokens, d.output_tokens)
            replicas = fleet.models_at(pop)[d.model]
            ttft = one.ttft_p99_seconds(rps[d.model, pop] / replicas) * 1000.0
            worst = max(worst, ttft + fleet.metro_rtt_ms(d.metro, fleet.pop_by_code[pop].metro))
        metros.append(
            MetroOutcome(d.metro, d.model, d.requests_per_second, unserved.get((d.metro, d.model), 0.0), worst,
                         spec.slo_ttft_ms, by)
        )  # fmt: skip
    return Scenario(name, failed, sites, metros, drained, entered)


def _cases(fleet: Fleet, pairs: bool) -> list[tuple[str, frozenset[str], frozenset[str]]]:
    """(name, failed PoPs, drained metros): every single failure (and pair of metros), then every metro drain."""
    failures = [(name, failed, frozenset[str]()) for name, failed in single_failures(fleet, pairs=pairs)]
    return failures + [(name, frozenset[str](), drained) for name, drained in single_drains(fleet)]


def scenarios(fleet: Fleet, demand: Sequence[Demand], *, pairs: bool = False) -> list[Scenario]:
    """Every single failure (with ``pairs``, every pair of metros), then every single metro drain."""
    model = IngressModel(fleet)
    return [
        simulate(fleet, demand, failed, name, drained=drained, ingress=model)
        for name, failed, drained in _cases(fleet, pairs)
    ]


def fast_scenarios(fleet: Fleet, demand: Sequence[Demand], *, pairs: bool = False) -> list[FastScenario]:
    """Every single failure (with ``pairs``, every pair of metros) and metro drain at once, vectorised along the
    gateway's ladders (:func:`utilisation_matrix`): per scenario the busiest PoP and the demand nobody can serve."""
    cases = _cases(fleet, pairs)
    out_of_service = [(name, _out_of_service(fleet, failed, drained)) for name, failed, drained in cases]
    pops, load, capacity, unserved = utilisation_matrix(fleet, demand, out_of_service)
    model = IngressModel(fleet)
    out = []
    for k, (name, failed, drained) in enumerate(cases):
        use = [float(load[k, i] / capacity[i]) if capacity[i] else 0.0 for i in range(len(pops))]
        top = max(range(len(pops)), key=lambda i: use[i])
        entered = ingress_of(model, failed, drained)
        out.append(FastScenario(name, failed, float(unserved[k]), pops[top], use[top], drained, entered))
    return out


def utilisation_matrix(
    fleet: Fleet,
    demand: Sequence[Demand],
    failures: Sequence[tuple[str, frozenset[str]]],
    *,
    nearest: int = 24,
    router: Router | None = None,
) -> tuple[list[str], Any, Any, Any]:
    """Every scenario at once (numpy), for large fleets: each metro's demand fills the PoPs along the gateway's
    ladder (Router.ladder: scope, then RTT; the first ``nearest`` that serve the model) until the router would
    call them full, all scenarios side by side. Returns the PoP codes, load per (scenario, PoP) in rps summed
    over models, capacity per PoP (rps, summed over models), and unserved rps per scenario. Cheaper than
    :func:`simulate` (no per-slice TTFT re-ranking)."""
    import numpy as np

    router = router or Router(fleet)
    pops = [p.code for p in fleet.pops]
    index = {code: i for i, code in enumerate(pops)}
    down = np.zeros((len(failures), len(pops)), dtype=bool)
    for s, (_, failed) in enumerate(failures):
        for code in failed:
            down[s, index[code]] = True
    load = np.zeros((len(failures), len(pops)))
    total_capacity = np.zeros(len(pops))
    unserved = np.zeros(len(failures))
    mix = {d.model: (d.prompt_tokens, d.output_tokens) for d in demand}
    for model, (prompt, output) in mix.items():
        capacity = np.zeros(len(pops))  # within the SLO, for utilisation
        saturation = np.zeros(len(pops))  # where the gateway calls the site full and moves on
        for entry in fleet.placement:
            if entry.model == model:
                gpu = fleet.best_gpu_type(model, entry.pop)
                if gpu is not None:
                    one = replica_capacity(fleet.model_by_name[model], gpu, prompt, output)
                    capacity[index[entry.pop]] = entry.replicas * one.requests_per_second
                    saturation[index[entry.pop]] = entry.replicas * one.saturation_rps
        total_capacity += capacity
        left = np.where(down, 0.0, saturation[None, :])  # room left before full, per scenario and PoP
        rows = [d for d in demand if d.model == model and d.requests_per_second > 0]
        ladders = {
            d.metro: [index[p] for p, *_ in router.ladder(d.metro) if capacity[index[p]] > 0][:nearest] for d in rows
        }
        need = {d.metro: np.full(len(failures), d.requests_per_second) for d in rows}
        for rung in range(nearest):  # everyone's first choice, then everyone's second, as slices would go
            for d in rows:
                ladder = ladders[d.metro]
                if rung >= len(ladder):
                    continue
                j = ladder[rung]
                take = np.minimum(need[d.metro], left[:, j])
                left[:, j] -= take
                load[:, j] += take
                need[d.metro] -= take
        for d in rows:
            unserved += need[d.metro]
    return pops, load, total_capacity, unserved
