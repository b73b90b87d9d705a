"""Unit telemetry: facility equipment over Redfish (and an emulator of it for tests and `edgeplane up`)."""

from edgeplane.telemetry._redfish import FacilityReading, FaultKind, RedfishEmulator, TelemetryStale, read_unit

__all__ = ["FacilityReading", "FaultKind", "RedfishEmulator", "TelemetryStale", "read_unit"]
