"""Where a client is: its address, read through the proxies this gateway trusts."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from edgeplane.web import Address, address_of

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")


class ClientLocator:
    """The client's address: the peer, or, when the peer is a trusted proxy, the rightmost X-Forwarded-For
    address that is not itself a trusted proxy. Proxies append to the header, so everything left of the
    last address a trusted proxy wrote is whatever the client chose to send."""

    def __init__(self, trusted_proxies: Sequence[str] = DEFAULT_TRUSTED_PROXIES) -> None:
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    def locate(self, peer: str | None, forwarded_for: str | None) -> str:
        peer = peer or ""
        if not forwarded_for or not self._is_trusted(address_of(peer)):
            return peer
        chosen = peer
        for hop in reversed(forwarded_for.split(",")):
            address = address_of(hop)
            if address is None:
                break  # an unparsable entry must not move the client anywhere
            chosen = str(address)
            if not self._is_trusted(address):
                break
        return chosen
