"""Inbound balance: from traffic per transit, suggest prepends or action communities and predict their effect. Pure."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeplane._errors import ConfigError
from edgeplane.fleet import Fleet

# Share of a transit's inbound traffic that one more prepend moves away (a planning figure: networks
# measure their own; `bgp balance --shift-per-prepend` sets it).
SHIFT_PER_PREPEND = 0.3
TOLERANCE = 0.1  # utilisation spread (max - min) left alone


@dataclass(frozen=True, slots=True)
class Suggestion:
    pop: str
    transit_asn: int | None  # None: balanced already
    action: str  # prepend-1..3 | no-export | none
    before: dict[int, float]  # utilisation per transit ASN
    after: dict[int, float]
    gbps_before: dict[int, float]
    gbps_after: dict[int, float]

    def to_json(self) -> dict[str, Any]:
        def keyed(values: Mapping[int, float]) -> dict[str, float]:
            return {str(k): round(v, 4) for k, v in values.items()}

        return {
            "pop": self.pop,
            "transit_asn": self.transit_asn,
            "action": self.action,
            "utilisation_before": keyed(self.before),
            "utilisation_after": keyed(self.after),
            "gbps_before": keyed(self.gbps_before),
            "gbps_after": keyed(self.gbps_after),
        }


def read_traffic(path: Path, fleet: Fleet) -> dict[str, dict[int, float]]:
    """A CSV ``pop,transit_asn,gbps`` (inbound, one row per PoP and transit); errors name file, line and field."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the traffic file ({error.strerror})") from None
    rows = csv.DictReader(io.StringIO(text))
    if rows.fieldnames is None or not {"pop", "transit_asn", "gbps"} <= set(rows.fieldnames):
        raise ConfigError(f"{path}:1: header: expected pop,transit_asn,gbps")
    traffic: dict[str, dict[int, float]] = {}
    for number, row in enumerate(rows, start=2):
        pop = (row.get("pop") or "").strip()
        site = fleet.pop_by_code.get(pop)
        if site is None:
            raise ConfigError(f"{path}:{number}: pop: unknown PoP {pop!r}")
        try:
            asn = int(row["transit_asn"])
        except (TypeError, ValueError):
            raise ConfigError(f"{path}:{number}: transit_asn: expected a number, got {row['transit_asn']!r}") from None
        if asn not in {t.asn for t in site.transits}:
            raise ConfigError(f"{path}:{number}: transit_asn: AS{asn} is not a transit of {pop}")
        try:
            gbps = float(row["gbps"])
        except (TypeError, ValueError):
            raise ConfigError(f"{path}:{number}: gbps: expected a number, got {row['gbps']!r}") from None
        if gbps < 0:
            raise ConfigError(f"{path}:{number}: gbps: must not be negative, got {gbps}")
        traffic.setdefault(pop, {})[asn] = gbps
    return traffic


def _move(traffic: Mapping[int, float], capacity: Mapping[int, float], away: int, share: float) -> dict[int, float]:
    moved = traffic[away] * share
    others = [a for a in traffic if a != away]
    total_capacity = sum(capacity[a] for a in others)
    after = dict(traffic)
    after[away] -= moved
    for a in others:  # the moved traffic arrives over the other transits in proportion to their size
        after[a] += moved * capacity[a] / total_capacity
    return after


def suggest(
    fleet: Fleet,
    pop: str,
    traffic: Mapping[int, float],
    *,
    shift_per_prepend: float = SHIFT_PER_PREPEND,
    tolerance: float = TOLERANCE,
) -> Suggestion:
    """The one action on the most loaded transit that brings the PoP's transits closest to equal utilisation."""
    capacity = {t.asn: t.capacity_gbps for t in fleet.pop_by_code[pop].transits}
    gbps = {asn: float(traffic.get(asn, 0.0)) for asn in capacity}

    def utilisation(values: Mapping[int, float]) -> dict[int, float]:
        return {a: values[a] / capacity[a] for a in values}

    before = utilisation(gbps)
    if len(capacity) < 2 or max(before.values()) - min(before.values()) <= tolerance:
        return Suggestion(pop, None, "none", before, before, gbps, gbps)
    hot = max(before, key=lambda a: before[a])
    options = {f"prepend-{n}": 1 - (1 - shift_per_prepend) ** n for n in (1, 2, 3)}
    options["no-export"] = 1.0
    best_action, best_after = "none", gbps
    for action, share in options.items():
        after = _move(gbps, capacity, hot, share)
        spread = max(utilisation(after).values()) - min(utilisation(after).values())
        best_spread = max(utilisation(best_after).values()) - min(utilisation(best_after).values())
        if spread < best_spread - 1e-9:
            best_action, best_after = action, after
    return Suggestion(pop, hot, best_action, before, utilisation(best_after), gbps, best_after)
