"""The dashboard: a face of the control plane (floor 4), reading it through the narrow ControlView."""

from edgeplane.dashboard._page import AUDIT_TAIL, CSP, PUSH_SECONDS, RATE_WINDOW_SECONDS, Dashboard, with_dashboard

__all__ = ["AUDIT_TAIL", "CSP", "PUSH_SECONDS", "RATE_WINDOW_SECONDS", "Dashboard", "with_dashboard"]
