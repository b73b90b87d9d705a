"""The community scheme: BGP large communities (RFC 8092) under the network's ASN."""

from __future__ import annotations

import enum

LargeCommunity = tuple[int, int, int]
Community = tuple[int, int]

GRACEFUL_SHUTDOWN: Community = (65535, 0)  # RFC 8326: attached before a planned withdrawal


class Kind(enum.IntEnum):
    """The second field of a large community: what the third one means."""

    ORIGIN_METRO = 1
    ORIGIN_REGION = 2
    ORIGIN_CONTINENT = 3
    ORIGIN_POP = 4
    ROUTE_TYPE = 5
    SCOPE = 10
    NO_EXPORT_TO = 20  # do not announce to that transit's ASN
    PREPEND_1 = 21
    PREPEND_2 = 22
    PREPEND_3 = 23


class RouteType(enum.IntEnum):
    ANYCAST = 1
    POP_UNICAST = 2
    INFRASTRUCTURE = 3
    BACKUP = 4
    BLACKHOLE = 5


def large(asn: int, kind: Kind, value: int) -> LargeCommunity:
    return (asn, int(kind), value)


def prepend(asn: int, transit_asn: int, times: int) -> LargeCommunity:
    """Ask the edge to prepend our ASN ``times`` (1 to 3) toward one transit."""
    if not 1 <= times <= 3:
        raise ValueError("prepends go from 1 to 3")
    return (asn, int(Kind.PREPEND_1) + times - 1, transit_asn)


def no_export_to(asn: int, transit_asn: int) -> LargeCommunity:
    return (asn, int(Kind.NO_EXPORT_TO), transit_asn)


def format_large(community: LargeCommunity) -> str:
    return ":".join(str(part) for part in community)


ACTIONS = ("no-export", "prepend-1", "prepend-2", "prepend-3")


def action_community(asn: int, transit_asn: int, action: str) -> LargeCommunity:
    """The action community for ``no-export`` or ``prepend-N`` toward one transit."""
    if action == "no-export":
        return no_export_to(asn, transit_asn)
    if action.startswith("prepend-") and action[-1] in "123":
        return prepend(asn, transit_asn, int(action[-1]))
    raise ValueError(f"unknown action {action!r}; expected one of: {', '.join(ACTIONS)}, none")


def parse_community(text: str) -> Community | LargeCommunity:
    """``A:B`` (RFC 1997) or ``A:B:C`` (RFC 8092), each part in range."""
    parts = text.strip().split(":")
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not a community: expected A:B or A:B:C with numbers") from None
    if len(numbers) == 2 and all(0 <= n <= 0xFFFF for n in numbers):
        return (numbers[0], numbers[1])
    if len(numbers) == 3 and all(0 <= n <= 0xFFFFFFFF for n in numbers):
        return (numbers[0], numbers[1], numbers[2])
    raise ValueError(f"{text!r} is not a community: expected A:B (16-bit parts) or A:B:C (32-bit parts)")
