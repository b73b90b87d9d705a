"""Synthetic fleets and demand for the benchmarks: any size, documentation and benchmark address ranges only."""

from __future__ import annotations

import ipaddress
import random

from edgeplane.fleet import Fleet
from edgeplane.planning import Demand

# Shapes of catalog models: (parameters in billions, GPU memory GB, GPUs per replica, H100 tokens/s per GPU,
# H200 tokens/s per GPU, TTFT SLO ms, max concurrency)
SHAPES = [
    (8, 24, 1, 2400, 3000, 300, 128),
    (14, 40, 1, 1500, 1900, 400, 96),
    (32, 80, 2, 900, 1200, 600, 64),
    (70, 160, 4, 450, 600, 900, 48),
    (405, 480, 8, 160, 220, 1500, 32),
]


def synthetic_models(count: int) -> list[dict[str, object]]:
    models = []
    for i in range(count):
        b, memory, gpus, h100, h200, slo, concurrency = SHAPES[i % len(SHAPES)]
        models.append(
            {"name": f"model-{i:03d}-{b}b", "parameters_billions": b, "gpu_memory_gb": memory,
             "gpus_per_replica": gpus, "throughput_tokens_per_second": {"H100": h100, "H200": h200},
             "file_size_gb": b * 2.0, "slo_ttft_ms": slo, "max_concurrency": concurrency}
        )  # fmt: skip
    return models


def synthetic_fleet(
    continents: int = 10,
    regions_per: int = 10,
    metros_per: int = 10,
    pops_per: int = 5,
    *,
    models: int = 3,
    servers_per_unit: int = 1,
    units_per_pop: int = 1,
) -> Fleet:
    """A fleet with a full prefix plan inside 198.18.0.0/15 and 2001:db8::/32; metros of a continent sit
    within a few hundred km of each other, continents far apart, so RTTs look like the real thing."""
    v4, v6 = ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")
    data: dict[str, object] = {"asn": 64496, "aggregates": [str(v4), str(v6)], "models": synthetic_models(models)}
    conts: list[dict[str, object]] = []
    regions: list[dict[str, object]] = []
    metros: list[dict[str, object]] = []
    pops: list[dict[str, object]] = []
    c4, c6 = list(v4.subnets(4)), list(v6.subnets(4))
    for c in range(continents):
        conts.append({"code": f"c{c}", "id": c + 1, "name": f"C{c}", "aggregates": [str(c4[c]), str(c6[c])]})
        r4, r6 = list(c4[c].subnets(4)), list(c6[c].subnets(4))
        for r in range(regions_per):
            rid = len(regions) + 1
            regions.append(
                {"code": f"r{rid}", "id": rid, "name": f"R{rid}", "continent": f"c{c}",
                 "aggregates": [str(r4[r]), str(r6[r])]}
            )  # fmt: skip
            m4, m6 = list(r4[r].subnets(4)), list(r6[r].subnets(4))
            for m in range(metros_per):
                mid = len(metros) + 1
                m6s = list(m6[m].subnets(4))
                latitude = -60 + (c * 37) % 120 + r * 1.5 + m * 0.3
                longitude = -170 + (c * 71) % 340 + r * 2.0 + m * 0.4
                metros.append(
                    {"code": f"m{mid}", "id": mid, "name": f"M{mid}", "region": f"r{rid}",
                     "latitude": latitude, "longitude": longitude,
                     "client_prefixes": [str(m6s[1])], "service_prefixes": [str(m4[m]), str(m6s[0])]}
                )  # fmt: skip
                for _ in range(pops_per):
                    pid = len(pops) + 1
                    units = [
                        {"code": f"u{pid}-{u}", "id": (pid - 1) * units_per_pop + u + 1, "power_kw": 400,
                         "gpu_servers": [{"gpu_type": "H100" if (pid + u) % 2 else "H200",
                                          "servers": servers_per_unit}]}
                        for u in range(units_per_pop)
                    ]  # fmt: skip
                    pops.append(
                        {"code": f"p{pid}", "id": pid, "metro": f"m{mid}", "units": units,
                         "transits": [{"name": "t-a", "asn": 64497, "capacity_gbps": 100},
                                      {"name": "t-b", "asn": 64498, "capacity_gbps": 100}]}
                    )  # fmt: skip
    data.update(continents=conts, regions=regions, metros=metros, pops=pops)
    return Fleet.model_validate(data)


def synthetic_demand(fleet: Fleet, *, models_per_metro: int, rps_per_gpu: float, seed: int = 11) -> list[Demand]:
    """Each metro asks for some models; the total is about ``rps_per_gpu`` requests per second per GPU."""
    draw = random.Random(seed)
    names = [m.name for m in fleet.models]
    gpus = sum(sum(p.gpus_by_type().values()) for p in fleet.pops)
    rows = []
    for metro in fleet.metros:
        for name in draw.sample(names, min(models_per_metro, len(names))):
            rows.append((metro.code, name, draw.uniform(0.5, 1.5)))
    scale = rps_per_gpu * gpus / sum(w for *_, w in rows)
    return [Demand(m, n, w * scale / fleet.model_by_name[n].gpus_per_replica, 500, 200) for m, n, w in rows]
