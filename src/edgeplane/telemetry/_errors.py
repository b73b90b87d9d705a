"""What telemetry raises: readings gone stale, and units' addresses refused."""

from __future__ import annotations

from typing import Literal

from edgeplane._errors import ConfigError


class TelemetryStale(Exception):
    """A unit's telemetry could not be read or made no sense: its readings are stale, not alarming."""


class UnitAddressError(ConfigError):
    """A unit's telemetry address (UNIT=URL) names no unit of the PoP or no URL, or a unit has two."""

    def __init__(self, source: Literal["redfish", "dcgm"], message: str) -> None:
        super().__init__(message)
        self.source = source  # which service the address was for: an option's name, say
