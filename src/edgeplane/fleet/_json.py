"""The fleet as people and scripts read it (`fleet show --json`): metros holding their PoPs, with what follows
from the units (GPUs per type, power) and the placement (models per PoP) worked out once, here."""

from __future__ import annotations

from typing import Any

from edgeplane.fleet._model import Fleet


def fleet_json(fleet: Fleet) -> dict[str, Any]:
    """The nested shape (continents, regions, metros with their PoPs, links, models, placement); the flat one a
    fleet file is written in stays ``fleet.model_dump(mode="json")``."""
    metros = []
    for metro in fleet.metros:
        pops = []
        for pop in fleet.pops_in(metro.code):
            pops.append(
                {
                    "code": pop.code,
                    "id": pop.id,
                    "name": pop.name,
                    "gpus": pop.gpus_by_type(),
                    "power_kw": sum(u.power_kw for u in pop.units),
                    "units": [u.model_dump(mode="json") for u in pop.units],
                    "transits": [t.model_dump(mode="json") for t in pop.transits],
                    "models": fleet.models_at(pop.code),
                }
            )
        metros.append(
            {
                "code": metro.code,
                "id": metro.id,
                "name": metro.name,
                "region": metro.region,
                "continent": fleet.region_of(metro.code).continent,
                "latitude": metro.latitude,
                "longitude": metro.longitude,
                "client_prefixes": list(metro.client_prefixes),
                "pops": pops,
            }
        )
    return {
        "asn": fleet.asn,
        "continents": [c.model_dump(mode="json") for c in fleet.continents],
        "regions": [r.model_dump(mode="json") for r in fleet.regions],
        "metros": metros,
        "links": [link.model_dump(mode="json") for link in fleet.links],
        "models": [m.model_dump(mode="json") for m in fleet.models],
        "placement": [p.model_dump(mode="json") for p in fleet.placement],
    }
