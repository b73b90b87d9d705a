"""What telemetry reading raises."""

from __future__ import annotations


class TelemetryStale(Exception):
    """A unit's telemetry could not be read or made no sense: its readings are stale, not alarming."""
