"""What the control plane's rooms refuse with."""

from __future__ import annotations


class UnknownTarget(LookupError):
    pass
