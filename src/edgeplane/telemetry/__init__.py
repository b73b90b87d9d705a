"""Unit telemetry: facility equipment over Redfish (and an emulator of it for tests and `edgeplane up`)."""

from edgeplane.telemetry._alarms import RULES, AlarmBook, AlarmEvent, AlarmRule
from edgeplane.telemetry._redfish import FacilityReading, FaultKind, RedfishEmulator, TelemetryStale, read_unit
from edgeplane.telemetry._watch import UnitWatch

__all__ = [
    "RULES",
    "AlarmBook",
    "AlarmEvent",
    "AlarmRule",
    "FacilityReading",
    "FaultKind",
    "RedfishEmulator",
    "TelemetryStale",
    "UnitWatch",
    "read_unit",
]
