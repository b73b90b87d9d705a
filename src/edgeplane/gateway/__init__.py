"""The OpenAI-compatible gateway: routes each request nearest-first and relays the answer."""

from edgeplane.gateway._app import Gateway, GatewayOptions
from edgeplane.gateway._locate import DEFAULT_TRUSTED_PROXIES, ClientLocator
from edgeplane.gateway._snapshots import RoutingState, SnapshotWatcher

__all__ = ["DEFAULT_TRUSTED_PROXIES", "ClientLocator", "Gateway", "GatewayOptions", "RoutingState", "SnapshotWatcher"]
