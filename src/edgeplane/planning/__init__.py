"""Planning (pure logic): capacity and failure checks with the same routing code the gateways run."""

from edgeplane.planning._headroom import MAX_UTILISATION, DrainCheck, Overload, check_drain

__all__ = ["MAX_UTILISATION", "DrainCheck", "Overload", "check_drain"]
