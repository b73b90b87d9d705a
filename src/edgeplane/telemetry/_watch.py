"""A site agent's watch over its units: poll each unit's Redfish service and DCGM exporter, keep the alarms,
export the readings as Prometheus gauges, and hand the control plane what it needs to drain an alarmed unit.
Units given no Redfish address get an emulator of their own (one listener per unit, serving both), as
`edgeplane up` runs them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from edgeplane.telemetry._alarms import RULES, AlarmBook, AlarmEvent
from edgeplane.telemetry._dcgm import FIELDS, GpuReading
from edgeplane.telemetry._errors import TelemetryStale
from edgeplane.telemetry._redfish import FacilityReading, RedfishEmulator, read_unit
from edgeplane.web import HttpClient

log = logging.getLogger("edgeplane.telemetry")


class _Gauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        unit = ["unit"]
        self.inlet = Gauge("edgeplane_unit_inlet_celsius", "Inlet air temperature.", unit, registry=registry)
        self.coolant = Gauge(
            "edgeplane_unit_coolant_supply_celsius", "Coolant supply temperature (CDU).", unit, registry=registry
        )
        self.pdu = Gauge("edgeplane_unit_pdu_power_watts", "Rack PDU power.", unit, registry=registry)
        self.leak = Gauge(
            "edgeplane_unit_leak_detected", "1 while a leak detector is tripped.", unit, registry=registry
        )
        self.fire = Gauge(
            "edgeplane_unit_fire_suppression", "1 for the fire suppression state the unit is in.", [*unit, "state"],
            registry=registry,
        )  # fmt: skip
        self.stale = Gauge(
            "edgeplane_unit_telemetry_stale", "1 while the unit's telemetry cannot be read.", unit, registry=registry
        )
        self.alarm = Gauge("edgeplane_unit_alarm", "1 while an alarm is raised.", [*unit, "rule"], registry=registry)
        # Each GPU in the DCGM exporter's own terms, with the unit it is in.
        self.gpu = {
            name: Gauge(name, help_text, [*unit, "gpu", "UUID", "modelName", "Hostname"], registry=registry)
            for name, (_, help_text) in FIELDS.items()
        }

    def gpus(self, unit: str, gpus: tuple[GpuReading, ...]) -> None:
        for name, (attribute, _) in FIELDS.items():
            for g in gpus:
                self.gpu[name].labels(unit, g.gpu, g.uuid, g.model_name, g.hostname).set(getattr(g, attribute))


class UnitWatch:
    def __init__(
        self,
        units: Mapping[str, str | None],
        power_kw: Mapping[str, float],
        registry: CollectorRegistry,
        *,
        dcgm: Mapping[str, Sequence[str]] | None = None,
        gpus: Mapping[str, Mapping[str, int]] | None = None,
        interval_seconds: float = 1.0,
        hold_scale: float = 1.0,
        seed: int = 0,
        admin_token: str | None = None,
    ) -> None:
        """``units``: unit code -> its Redfish base URL, or None to emulate it here (with its DCGM exporter, for
        the GPUs ``gpus`` gives it: type -> count). ``dcgm``: unit code -> its DCGM exporters' /metrics URLs (one
        per GPU server, or one for the unit)."""
        self.urls: dict[str, str | None] = dict(units)
        self.dcgm: dict[str, list[str]] = {unit: list(urls) for unit, urls in (dcgm or {}).items()}
        self.gpus = {unit: dict(counts) for unit, counts in (gpus or {}).items()}
        self.power_kw = dict(power_kw)
        self.interval_seconds = interval_seconds
        self.book = AlarmBook(scale=hold_scale)
        self.readings: dict[str, FacilityReading] = {}
        self.emulators: dict[str, RedfishEmulator] = {}
        self._admin_token = admin_token  # what the emulators' fault routes ask for
        self._seed = seed
        self._events: list[AlarmEvent] = []
        self._gauges = _Gauges(registry)
        self._runners: list[web.AppRunner] = []

    def __repr__(self) -> str:
        return f"<UnitWatch [Units: {len(self.urls)}, alarmed: {len(self.book.alarmed_units())}]>"

    async def _emulate(self) -> None:
        for unit, url in self.urls.items():
            if url is not None:
                continue
            power = self.power_kw.get(unit, 400.0)
            emulator = RedfishEmulator(
                unit, power_kw=power, gpus=self.gpus.get(unit), seed=self._seed, admin_token=self._admin_token
            )
            runner = web.AppRunner(emulator.app(), shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.urls[unit] = f"http://127.0.0.1:{runner.addresses[0][1]}"
            self.dcgm.setdefault(unit, [f"{self.urls[unit]}/metrics"])
            self.emulators[unit] = emulator
            self._runners.append(runner)

    async def forever(self) -> None:
        client = HttpClient(connect_timeout_seconds=1.0, read_timeout_seconds=5.0)
        try:
            await self._emulate()
            loop = asyncio.get_running_loop()
            while True:
                await self.poll(client, loop.time())
                await asyncio.sleep(self.interval_seconds)
        finally:
            await client.close()
            for runner in self._runners:
                with contextlib.suppress(Exception):
                    await runner.cleanup()

    async def poll(self, client: HttpClient, now: float) -> None:
        """Read every unit once; bad telemetry marks that unit stale and touches nothing else."""
        timeout = max(0.5, min(2.0, self.interval_seconds * 2))
        units = [u for u, url in self.urls.items() if url is not None]
        results = await asyncio.gather(
            *(
                read_unit(client, str(self.urls[u]), u, dcgm_urls=self.dcgm.get(u, ()), timeout_seconds=timeout)
                for u in units
            ),
            return_exceptions=True,
        )
        g = self._gauges
        for unit, result in zip(units, results, strict=True):
            if isinstance(result, TelemetryStale):
                if unit not in self.book.stale:
                    log.warning("unit %s: telemetry stale: %s", unit, result)
                self.book.mark_stale(unit, str(result))
                g.stale.labels(unit).set(1)
            elif isinstance(result, FacilityReading):
                self.readings[unit] = result
                for event in self.book.update(result, self.power_kw.get(unit, 400.0), now):
                    log.warning("unit %s: alarm %s %s (%s: %s)", unit, event.rule, event.kind, event.what, event.value)
                    self._events.append(event)
                g.stale.labels(unit).set(0)
                g.inlet.labels(unit).set(result.inlet_c)
                g.coolant.labels(unit).set(result.coolant_supply_c)
                g.pdu.labels(unit).set(result.pdu_power_w)
                g.leak.labels(unit).set(1 if result.leak else 0)
                for state in ("Normal", "Armed", "Discharged"):
                    g.fire.labels(unit, state).set(1 if result.fire == state else 0)
                g.gpus(unit, result.gpus)
            else:  # an error of ours, not the unit's: keep watching the others
                log.error("unit %s: cannot poll: %r", unit, result)
                self.book.mark_stale(unit, f"poll failed: {result!r}")
                g.stale.labels(unit).set(1)
            active = set(self.book.active(unit))
            for rule in RULES:
                g.alarm.labels(unit, rule.name).set(1 if rule.name in active else 0)

    def take_events(self) -> list[dict[str, Any]]:
        """Alarm changes since last taken (put them back with :meth:`put_back` if they could not be sent)."""
        events, self._events = self._events, []
        return [e.to_json() for e in events]

    def put_back(self, events: list[dict[str, Any]]) -> None:
        self._events = [AlarmEvent(**e) for e in events] + self._events

    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for unit, url in self.urls.items():
            reading = self.readings.get(unit)
            out[unit] = {
                "redfish": url,
                "dcgm": self.dcgm.get(unit, []),
                "reading": reading.to_json() if reading is not None else None,
                "stale": self.book.stale.get(unit),
                "alarms": self.book.active(unit),
            }
        return out
