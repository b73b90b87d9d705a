"""The fleet description: geography, PoPs and their units, transits, fabric links, models, placement."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from functools import cached_property
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from edgeplane.catalog import GPU_TYPES, ModelSpec
from edgeplane.fleet._geo import great_circle_km

Code = Annotated[str, Field(min_length=1, max_length=24, pattern=r"^[a-z][a-z0-9-]*$")]
Id = Annotated[int, Field(ge=1, le=65535)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_prefixes(value: list[str]) -> list[str]:
    for prefix in value:
        try:
            ipaddress.ip_network(prefix, strict=True)
        except ValueError as error:
            raise ValueError(f"{prefix!r} is not an IPv4 or IPv6 prefix ({error})") from None
    return value


class Continent(_Strict):
    code: Code
    id: Id
    name: str
    aggregates: list[str] = Field(default_factory=list)  # covering prefixes announced at continent scope

    _aggregates = field_validator("aggregates")(_check_prefixes)


class Region(_Strict):
    code: Code
    id: Id
    name: str
    continent: Code
    aggregates: list[str] = Field(default_factory=list)  # covering prefixes announced at region scope

    _aggregates = field_validator("aggregates")(_check_prefixes)


class Metro(_Strict):
    code: Code
    id: Id
    name: str
    region: Code
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    client_prefixes: list[str] = Field(min_length=1)
    service_prefixes: list[str] = Field(default_factory=list)  # the metro's anycast service, metro scope

    _prefixes = field_validator("client_prefixes", "service_prefixes")(_check_prefixes)


class GpuServers(_Strict):
    """Servers of one GPU type inside a unit."""

    gpu_type: str
    servers: PositiveInt
    gpus_per_server: PositiveInt = 8

    @field_validator("gpu_type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in GPU_TYPES:
            raise ValueError(f"unknown GPU type {value!r}; expected one of {', '.join(sorted(GPU_TYPES))}")
        return value

    @property
    def gpus(self) -> int:
        return self.servers * self.gpus_per_server


class _GpuHolder(_Strict):
    gpu_servers: list[GpuServers] = Field(min_length=1)

    def gpus_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for group in self.gpu_servers:
            counts[group.gpu_type] = counts.get(group.gpu_type, 0) + group.gpus
        return counts


class Unit(_GpuHolder):
    """One modular, prefabricated data centre at a PoP."""

    code: Code
    id: Id
    power_kw: PositiveFloat


def _check_community(value: str) -> str:
    parts = value.split(":")
    limit = 0xFFFF if len(parts) == 2 else 0xFFFFFFFF
    if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) <= limit for p in parts):
        raise ValueError(f"{value!r} is not a community: expected A:B (16-bit parts) or A:B:C (32-bit parts)")
    return value


CommunityText = Annotated[str, AfterValidator(_check_community)]


class Transit(_Strict):
    name: str = Field(min_length=1)
    asn: int = Field(ge=1, le=4294967295)
    capacity_gbps: PositiveFloat
    # The transit's own communities for "prepend 1, 2, 3 times toward your peers": where given, our
    # prepend actions toward this transit are sent as these instead of prepending ourselves.
    prepend_communities: list[CommunityText] = Field(default_factory=list, max_length=3)
    # What the transit bills per Mbps of the 95th percentile per month, for the savings a peering would bring.
    price_per_mbps: NonNegativeFloat | None = None


class Pop(_Strict):
    code: Code
    id: Id
    name: str = ""
    metro: Code
    units: list[Unit] = Field(min_length=1)
    transits: list[Transit] = Field(default_factory=list)
    # The routers at this PoP that export NetFlow/IPFIX, by source address: the collector tags their flows.
    flow_exporters: list[IPvAnyAddress] = Field(default_factory=list)

    def gpus_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for unit in self.units:
            for group in unit.gpu_servers:
                counts[group.gpu_type] = counts.get(group.gpu_type, 0) + group.gpus
        return counts


class Link(_Strict):
    """A fabric link between two PoPs."""

    a: Code
    b: Code
    capacity_gbps: PositiveFloat
    rtt_ms: PositiveFloat | None = None


class PlacementEntry(_Strict):
    model: str
    pop: Code
    replicas: PositiveInt


class UnitTemplate(_GpuHolder):
    """What one more modular unit brings, and how long it takes from order to serving."""

    power_kw: PositiveFloat
    # Order, factory assembly and testing, shipping, commissioning.
    lead_time_months: PositiveFloat = 3.0
    cost_usd: NonNegativeFloat = 0.0  # one-off, for reports; the planner counts GPUs' hourly cost


class Fleet(_Strict):
    """The whole fleet; cross-references are checked by :func:`edgeplane.fleet.validate_references`."""

    asn: int = Field(ge=1, le=4294967295)
    aggregates: list[str] = Field(default_factory=list)  # the whole network's covering prefixes, global scope
    route_factor: float = Field(default=1.5, ge=1.0)
    intra_metro_rtt_ms: NonNegativeFloat = 1.0
    continents: list[Continent] = Field(min_length=1)
    regions: list[Region] = Field(min_length=1)
    metros: list[Metro] = Field(min_length=1)
    pops: list[Pop] = Field(min_length=1)
    links: list[Link] = Field(default_factory=list)
    models: list[ModelSpec] = Field(min_length=1)
    placement: list[PlacementEntry] = Field(default_factory=list)
    unit_template: UnitTemplate | None = None  # growth: the unit to order (default: the fleet's most common)

    _aggregates = field_validator("aggregates")(_check_prefixes)

    def own_prefixes(self) -> list[str]:
        """Our own address space: the aggregates of every scope and each metro's service prefixes."""
        prefixes = list(self.aggregates)
        for continent in self.continents:
            prefixes += continent.aggregates
        for region in self.regions:
            prefixes += region.aggregates
        for metro in self.metros:
            prefixes += metro.service_prefixes
        return prefixes

    def new_unit(self) -> UnitTemplate:
        """The unit growth plans order: the fleet file's `unit_template`, or its most common unit."""
        if self.unit_template is not None:
            return self.unit_template
        shapes: dict[str, tuple[int, Unit]] = {}
        for _, unit in self.units():
            key = repr((unit.power_kw, unit.gpu_servers))
            count, first = shapes.get(key, (0, unit))
            shapes[key] = (count + 1, first)
        _, common = max(shapes.values(), key=lambda item: item[0])
        return UnitTemplate(power_kw=common.power_kw, gpu_servers=common.gpu_servers)

    # Indexes built once; the model is frozen so they never go stale.
    @cached_property
    def continent_by_code(self) -> dict[str, Continent]:
        return {c.code: c for c in self.continents}

    @cached_property
    def region_by_code(self) -> dict[str, Region]:
        return {r.code: r for r in self.regions}

    @cached_property
    def metro_by_code(self) -> dict[str, Metro]:
        return {m.code: m for m in self.metros}

    @cached_property
    def pop_by_code(self) -> dict[str, Pop]:
        return {p.code: p for p in self.pops}

    @cached_property
    def model_by_name(self) -> dict[str, ModelSpec]:
        return {m.name: m for m in self.models}

    def pops_in(self, metro: str) -> list[Pop]:
        return [p for p in self.pops if p.metro == metro]

    def region_of(self, metro: str) -> Region:
        return self.region_by_code[self.metro_by_code[metro].region]

    def continent_of(self, metro: str) -> Continent:
        return self.continent_by_code[self.region_of(metro).continent]

    def models_at(self, pop: str) -> dict[str, int]:
        """Model name to replica count placed at a PoP."""
        return {e.model: e.replicas for e in self.placement if e.pop == pop}

    def units(self) -> Iterator[tuple[Pop, Unit]]:
        for pop in self.pops:
            for unit in pop.units:
                yield pop, unit

    def best_gpu_type(self, model: str, pop: str) -> str | None:
        """The GPU type at a PoP on which a model runs fastest, or None if it runs on none of them."""
        spec = self.model_by_name[model]
        types = [t for t in self.pop_by_code[pop].gpus_by_type() if spec.replica_throughput(t) > 0]
        return max(types, key=spec.replica_throughput) if types else None

    def unit_replicas(self, pop: str, model: str, replicas: int) -> dict[str, int]:
        """How a model's replicas at a PoP sit in its units: in proportion to each unit's GPUs of the types the
        model runs on (largest remainder, ties to the first unit). Agents run them so, and routing counts
        what is left when a unit stops carrying traffic."""
        spec = self.model_by_name[model]
        units = self.pop_by_code[pop].units
        weights = {u.code: sum(n for t, n in u.gpus_by_type().items() if spec.replica_throughput(t) > 0) for u in units}
        if not any(weights.values()):
            weights = {u.code: sum(u.gpus_by_type().values()) for u in units}
        total = sum(weights.values())
        quotas = {code: replicas * w / total for code, w in weights.items()}
        split = {code: int(q) for code, q in quotas.items()}
        order = sorted(weights, key=lambda c: split[c] - quotas[c])  # a stable sort: ties to the first unit
        for code in order[: replicas - sum(split.values())]:
            split[code] += 1
        return split

    def metro_rtt_ms(self, a: str, b: str) -> float:
        """Estimated round trip between two metros: great-circle fibre at 200 km/ms, times the route factor."""
        if a == b:
            return self.intra_metro_rtt_ms
        ma, mb = self.metro_by_code[a], self.metro_by_code[b]
        km = great_circle_km(ma.latitude, ma.longitude, mb.latitude, mb.longitude)
        return self.intra_metro_rtt_ms + 2 * km / 200.0 * self.route_factor

    @cached_property
    def _measured_rtt(self) -> dict[frozenset[str], float]:
        return {frozenset((link.a, link.b)): link.rtt_ms for link in self.links if link.rtt_ms is not None}

    def pop_rtt_ms(self, a: str, b: str) -> float:
        """Round trip between two PoPs: measured on a fabric link when known, else estimated by metro."""
        if a == b:
            return 0.0
        measured = self._measured_rtt.get(frozenset((a, b)))
        if measured is not None:
            return measured
        return self.metro_rtt_ms(self.pop_by_code[a].metro, self.pop_by_code[b].metro)
