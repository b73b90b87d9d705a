"""The watch over one PoP's units as its site agent runs it: which units are read from given addresses, which
are emulated here, and how often they are polled."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from prometheus_client import CollectorRegistry

from edgeplane.fleet import Fleet, Unit
from edgeplane.telemetry._errors import UnitAddressError
from edgeplane.telemetry._watch import UnitWatch


def pop_watch(
    fleet: Fleet,
    pop: str,
    registry: CollectorRegistry,
    *,
    redfish: Sequence[str] = (),
    dcgm: Sequence[str] = (),
    emulate: bool = False,
    time_scale: float = 1.0,
    seed: int = 0,
    admin_token: str | None = None,
) -> UnitWatch | None:
    """The units of ``pop`` to watch: those given a Redfish service (``redfish``: UNIT=URL, one per unit) with
    their DCGM exporters (``dcgm``: UNIT=URL, one per GPU server), and with ``emulate`` the rest, emulated here;
    None if neither. Polled every 0.5 to 1 s (faster when ``time_scale`` speeds the emulated fleet up), alarm
    holds scaled alike. A UNIT=URL that names no unit of ``pop`` or no URL, or a unit given two Redfish
    services, raises UnitAddressError."""
    units = {u.code: u for u in fleet.pop_by_code[pop].units} if pop in fleet.pop_by_code else {}
    given = _addresses(pop, units, redfish, "redfish")
    if twice := sorted(code for code, urls in given.items() if len(urls) > 1):
        raise UnitAddressError("redfish", f"one Redfish service per unit; given twice: {', '.join(twice)}")
    urls: dict[str, str | None] = {code: given_urls[0] for code, given_urls in given.items()}
    exporters = _addresses(pop, units, dcgm, "dcgm")
    if emulate:
        urls.update({code: None for code in units if code not in urls})
    if not urls:
        return None
    scale = time_scale if time_scale > 0 else 1.0
    return UnitWatch(
        urls,
        {code: unit.power_kw for code, unit in units.items()},
        registry,
        dcgm=exporters,
        gpus={code: unit.gpus_by_type() for code, unit in units.items()},
        interval_seconds=min(1.0, max(0.5, scale * 5)),
        hold_scale=scale,
        seed=seed,
        admin_token=admin_token,
    )


def _addresses(
    pop: str, units: Mapping[str, Unit], items: Sequence[str], source: Literal["redfish", "dcgm"]
) -> dict[str, list[str]]:
    urls: dict[str, list[str]] = {}
    for item in items:
        code, _, url = item.partition("=")
        if code not in units or not url.startswith(("http://", "https://")):
            raise UnitAddressError(source, f"expected UNIT=URL with a unit of {pop} ({', '.join(units)}), not {item!r}")
        urls.setdefault(code, []).append(url)
    return urls
