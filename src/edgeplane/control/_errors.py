"""What the control plane's rooms refuse with."""

from __future__ import annotations

from edgeplane.planning import DrainCheck


class UnknownTarget(LookupError):
    pass


class DrainRefused(Exception):
    """A drain that would overload the receiving sites, or widen the blast radius too far."""

    def __init__(self, reasons: list[str], advice: list[str], check: DrainCheck | None = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons, self.advice, self.check = reasons, advice, check


class PlacementRefused(Exception):
    """A placement that would leave a model with no site, or overload what keeps serving."""

    def __init__(self, reasons: list[str], check: DrainCheck | None = None) -> None:
        super().__init__("; ".join(reasons))
        self.reasons, self.check = reasons, check
