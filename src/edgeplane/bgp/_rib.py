"""Routes received from the transits: read from the speaker's file, and looked up by longest match."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import orjson
import radix

from edgeplane._errors import ConfigError
from edgeplane.bgp._decision import Route


def load_routes(path: Path) -> list[Route]:
    """``{"routes": [...]}`` as `bgp run` writes it (or a bare list); a bad entry is named by its index."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the routes ({error.strerror}); is `edgeplane bgp run` up?") from None
    except orjson.JSONDecodeError as error:
        raise ConfigError(f"{path}: not JSON ({error})") from None
    entries = data.get("routes") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ConfigError(f'{path}: expected a list of routes under "routes"')
    routes = []
    for index, entry in enumerate(entries):
        try:
            routes.append(Route.from_json(entry))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{path}: routes[{index}]: {error}") from None
    return routes


def longest_match(routes: Sequence[Route], destination: str) -> tuple[str, list[Route]]:
    """The most specific prefix covering ``destination`` (an address or a prefix), and its routes in order."""
    try:
        network = ipaddress.ip_network(destination, strict=False)
    except ValueError:
        raise ValueError(f"{destination!r} is not an address or a prefix") from None
    tree = radix.Radix()
    for route in routes:
        node = tree.search_exact(route.prefix) or tree.add(route.prefix)
        node.data.setdefault("routes", []).append(route)
    node = tree.search_best(str(network))
    while node is not None and ipaddress.ip_network(node.prefix).prefixlen > network.prefixlen:
        node = node.parent
    if node is None:
        raise ValueError(f"no received route covers {destination}")
    return node.prefix, list(node.data["routes"])
