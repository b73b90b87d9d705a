"""Alarms on a unit's facility telemetry: a threshold that must hold for a while before the alarm is raised
(one hot reading is noise), and hold for a while again before it clears (no flapping). A raised alarm takes
the unit out of routing; stale telemetry neither raises nor clears anything, it is only shown as stale.
Pure: the caller brings readings and the time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeplane.telemetry._redfish import FacilityReading


@dataclass(frozen=True, slots=True)
class AlarmRule:
    name: str
    what: str  # the condition, for people: "coolant supply above 25 °C"
    value: Callable[[FacilityReading, float], float]  # (reading, unit power kW) -> the measured value
    threshold: float
    raise_after_seconds: float
    clear_after_seconds: float

    def breached(self, reading: FacilityReading, power_kw: float) -> bool:
        return self.value(reading, power_kw) > self.threshold


# Defaults in the spirit of ASHRAE's allowable inlet range (A1 tops out at 32 °C) and warm-water cooling supply
# limits; a leak or a fire-suppression system that is armed or has discharged drains at once.
def _pdu_percent(reading: FacilityReading, power_kw: float) -> float:
    return reading.pdu_power_w / (power_kw * 10.0)  # W over kW x 1000, as a percentage


def _fire(reading: FacilityReading, _: float) -> float:
    return 0.0 if reading.fire == "Normal" else 1.0


# XID errors that mean the GPU cannot be trusted with work until it is reset or replaced (double-bit ECC, row
# remapping failure, NVLink, fallen off the bus, uncontained ECC, GSP errors); the rest are shown, not acted on.
CRITICAL_XIDS = frozenset({48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120})


def _critical_xids(reading: FacilityReading, _: float) -> float:
    return float(sum(1 for g in reading.gpus if g.xid in CRITICAL_XIDS))


RULES: tuple[AlarmRule, ...] = (
    AlarmRule("inlet-temperature", "inlet air above 35 °C", lambda r, _: r.inlet_c, 35.0, 30.0, 60.0),
    AlarmRule("coolant-supply", "coolant supply above 25 °C", lambda r, _: r.coolant_supply_c, 25.0, 10.0, 30.0),
    AlarmRule("leak", "a leak detector tripped", lambda r, _: 1.0 if r.leak else 0.0, 0.5, 0.0, 60.0),
    AlarmRule("pdu-power", "rack PDUs above 90% of the unit's power", _pdu_percent, 90.0, 60.0, 120.0),
    AlarmRule("fire-suppression", "fire suppression armed or discharged", _fire, 0.5, 0.0, 300.0),
    AlarmRule("gpu-xid", "a GPU reported a critical XID error", _critical_xids, 0.5, 0.0, 60.0),
    AlarmRule("gpu-temperature", "a GPU above 87 °C", lambda r, _: r.gpu_temp_max_c, 87.0, 30.0, 60.0),
)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    unit: str
    rule: str
    kind: str  # "raised" | "cleared"
    at: float
    value: float
    threshold: float
    what: str

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "rule": self.rule,
            "kind": self.kind,
            "at": self.at,
            "value": round(self.value, 3),
            "threshold": self.threshold,
            "what": self.what,
        }


@dataclass
class _Track:
    active: bool = False
    since: float | None = None  # when the condition last began to differ from ``active``


@dataclass
class AlarmBook:
    """Alarm state per unit and rule. ``scale`` shrinks every hold time (tests, emulated time)."""

    rules: tuple[AlarmRule, ...] = RULES
    scale: float = 1.0
    _tracks: dict[tuple[str, str], _Track] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)  # unit -> why its telemetry is stale

    def active(self, unit: str) -> list[str]:
        return [rule for (u, rule), t in self._tracks.items() if u == unit and t.active]

    def alarmed_units(self) -> set[str]:
        return {u for (u, _), t in self._tracks.items() if t.active}

    def mark_stale(self, unit: str, why: str) -> None:
        """The unit could not be read: alarms stay as they are (neither raised nor cleared), holds restart."""
        self.stale[unit] = why
        for (u, _), track in self._tracks.items():
            if u == unit:
                track.since = None

    def update(self, reading: FacilityReading, power_kw: float, now: float) -> list[AlarmEvent]:
        """Take one reading; the alarms raised or cleared by it (after their hold times)."""
        self.stale.pop(reading.unit, None)
        events = []
        for rule in self.rules:
            track = self._tracks.setdefault((reading.unit, rule.name), _Track())
            value = rule.value(reading, power_kw)
            if rule.breached(reading, power_kw) == track.active:
                track.since = None
                continue
            if track.since is None:
                track.since = now
            hold = (rule.clear_after_seconds if track.active else rule.raise_after_seconds) * self.scale
            if now - track.since >= hold:
                track.active = not track.active
                track.since = None
                kind = "raised" if track.active else "cleared"
                events.append(AlarmEvent(reading.unit, rule.name, kind, now, value, rule.threshold, rule.what))
        return events

    def to_json(self) -> Mapping[str, Any]:
        units = sorted({u for u, _ in self._tracks} | set(self.stale))
        return {u: {"alarms": self.active(u), "stale": self.stale.get(u)} for u in units}
