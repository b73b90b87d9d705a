"""Unit telemetry: facility equipment over Redfish, GPU health from DCGM exporters (and an emulator of both for
tests and `edgeplane up`)."""

from edgeplane.telemetry._alarms import RULES, AlarmBook, AlarmEvent, AlarmRule
from edgeplane.telemetry._dcgm import GpuReading
from edgeplane.telemetry._errors import TelemetryStale, UnitAddressError
from edgeplane.telemetry._pop import pop_watch
from edgeplane.telemetry._redfish import FacilityReading, FaultKind, RedfishEmulator, read_gpus, read_unit
from edgeplane.telemetry._watch import UnitWatch

__all__ = [
    "RULES",
    "AlarmBook",
    "AlarmEvent",
    "AlarmRule",
    "FacilityReading",
    "FaultKind",
    "GpuReading",
    "RedfishEmulator",
    "TelemetryStale",
    "UnitAddressError",
    "UnitWatch",
    "pop_watch",
    "read_gpus",
    "read_unit",
]
