"""The project's own short exception hierarchy; foreign errors are converted into it at each boundary."""

from __future__ import annotations


class EdgeplaneError(Exception):
    """Base of every error edgeplane raises on purpose."""


class ConfigError(EdgeplaneError):
    """A configuration (fleet file, flag, environment) is invalid."""


class BackendError(EdgeplaneError):
    """A model backend or site could not answer."""


class ConnectError(BackendError):
    """No connection could be made; nothing was sent, so a retry elsewhere is safe."""


class ReadError(BackendError):
    """The connection broke while reading an answer."""


class TimeoutError_(BackendError):
    """The backend did not answer in time."""


class ControlPlaneError(EdgeplaneError):
    """The control plane refused a request or could not be reached."""


class StreamCut(BackendError):
    """An injected fault: the connection is to be dropped mid-answer, as a crashing server would."""
