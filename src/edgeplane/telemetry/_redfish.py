"""Redfish for one modular unit: an emulator of its facility equipment (DMTF's example documents at the unit's
paths, readings that move, faults injected over HTTP) and the reader a site agent polls it with.

Served paths (all under /redfish/v1): the service root; Chassis/UNIT with the unit's fire suppression as an OEM
property (Redfish has no schema for it); Chassis/UNIT/EnvironmentMetrics (inlet air); ThermalEquipment/CDUs/1
(a CoolingUnit), its SecondaryCoolantConnectors/A (coolant supply) and LeakDetection; PowerEquipment/RackPDUs/1
and its Metrics (PowerDistributionMetrics). GPU health is at /metrics, as NVIDIA's DCGM exporter serves it.
Faults: POST /redfish/v1/Oem/Edgeplane/Fault {"kind": ...}, DELETE to clear."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import functools
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from edgeplane._errors import BackendError
from edgeplane.catalog import GPU_SPECS
from edgeplane.telemetry._dcgm import Exporter, GpuReading, parse
from edgeplane.telemetry._errors import TelemetryStale
from edgeplane.web import HttpClient, admin, browser_guard, json_errors

MOCKUPS = Path(__file__).resolve().parent / "mockups"
ROOT = "/redfish/v1"
CDU = f"{ROOT}/ThermalEquipment/CDUs/1"
PDU = f"{ROOT}/PowerEquipment/RackPDUs/1"
FIRE_STATES = ("Normal", "Armed", "Discharged")


class FaultKind(enum.StrEnum):
    COOLANT = "coolant"  # coolant supply temperature climbs (a failing chiller or pump)
    LEAK = "leak"  # a leak detector trips
    INLET = "inlet"  # inlet air too hot
    PDU = "pdu"  # rack PDU near its limit
    FIRE_ARMED = "fire-armed"
    FIRE_DISCHARGED = "fire-discharged"
    XID = "xid"  # a GPU reports XID 79: fallen off the bus
    GPU_HOT = "gpu-hot"  # a GPU runs at 94 °C
    MALFORMED = "malformed"  # answers that are not JSON
    MISSING = "missing"  # readings left out
    SILENT = "silent"  # stops answering


@functools.cache
def _mockup(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((MOCKUPS / f"{name}.json").read_bytes())
    return data


class RedfishEmulator:
    """One unit's facility equipment, deterministic under a seed; readings drift slowly around DMTF's values."""

    def __init__(
        self,
        unit: str,
        *,
        power_kw: float = 400.0,
        gpus: Mapping[str, int] | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
        admin_token: str | None = None,
    ) -> None:
        """``gpus``: GPU type -> count in the unit (8 to a server), whose health /metrics serves as DCGM would."""
        self.unit = unit
        self.power_kw = power_kw
        self.gpus = dict(gpus or {"H100": 8})
        self._exporter = Exporter()
        self.clock = clock
        self.fault: FaultKind | None = None
        self.admin_token = admin_token  # faults need it, as every admin action of a site does
        self._phase = random.Random(f"{seed}\0{unit}").uniform(0, 2 * math.pi)
        self._stopping = asyncio.Event()

    def __repr__(self) -> str:
        return f"<RedfishEmulator {self.unit} fault={self.fault}>"

    def _wave(self, base: float, amplitude: float, period_seconds: float) -> float:
        return round(base + amplitude * math.sin(self.clock() / period_seconds * 2 * math.pi + self._phase), 2)

    def readings(self) -> dict[str, Any]:
        """What the documents say now."""
        fault = self.fault
        load = 0.97 if fault is FaultKind.PDU else self._wave(0.6, 0.02, 30)
        fire = {FaultKind.FIRE_ARMED: "Armed", FaultKind.FIRE_DISCHARGED: "Discharged"}
        return {
            "inlet_c": 41.0 if fault is FaultKind.INLET else self._wave(24.0, 1.0, 60),
            "coolant_supply_c": 33.0 if fault is FaultKind.COOLANT else self._wave(14.8, 0.3, 45),
            "leak": fault is FaultKind.LEAK,
            "pdu_power_w": round(self.power_kw * 1000 * load),
            "fire": fire.get(fault, "Normal") if fault else "Normal",
        }

    def gpu_readings(self) -> list[GpuReading]:
        """The unit's GPUs now, 8 to a server; faults land on the first GPU."""
        load = self._wave(0.6, 0.05, 30)
        gpus: list[GpuReading] = []
        for gpu_type, count in sorted(self.gpus.items()):
            tdp_w = GPU_SPECS[gpu_type].power_kw * 1000 * 0.55 if gpu_type in GPU_SPECS else 700.0
            memory_mib = (GPU_SPECS[gpu_type].memory_gb if gpu_type in GPU_SPECS else 80) * 1024
            for n in range(count):
                first = not gpus
                gpus.append(
                    GpuReading(
                        gpu=str(n % 8),
                        uuid=f"GPU-{uuid.uuid5(uuid.NAMESPACE_OID, f'{self.unit}/{gpu_type}/{n}')}",
                        model_name=f"NVIDIA {gpu_type}",
                        hostname=f"{self.unit}-{gpu_type.lower()}-{n // 8 + 1}",
                        temp_c=94.0 if first and self.fault is FaultKind.GPU_HOT else self._wave(52 + n % 5, 2, 40),
                        power_w=round(tdp_w * load, 1),
                        xid=79 if first and self.fault is FaultKind.XID else 0,
                        util_percent=round(load * 100, 1),
                        fb_used_mib=round(memory_mib * 0.9),
                    )
                )
        return gpus

    def document(self, path: str) -> dict[str, Any] | None:
        path = path.rstrip("/")
        now = self.readings()
        chassis = f"{ROOT}/Chassis/{self.unit}"
        doc: dict[str, Any] | None
        if path == ROOT:
            doc = {
                "@odata.type": "#ServiceRoot.v1_17_0.ServiceRoot",
                "@odata.id": ROOT,
                "Id": "RootService",
                "Name": f"edgeplane Redfish emulator for unit {self.unit}",
                "RedfishVersion": "1.20.0",
                "Chassis": {"@odata.id": f"{ROOT}/Chassis"},
                "ThermalEquipment": {"@odata.id": f"{ROOT}/ThermalEquipment"},
                "PowerEquipment": {"@odata.id": f"{ROOT}/PowerEquipment"},
            }
        elif path == chassis:
            doc = {
                "@odata.type": "#Chassis.v1_25_0.Chassis",
                "@odata.id": chassis,
                "Id": self.unit,
                "Name": f"Modular unit {self.unit}",
                "ChassisType": "Module",
                "EnvironmentMetrics": {"@odata.id": f"{chassis}/EnvironmentMetrics"},
                "Oem": {"Edgeplane": {"FireSuppression": {"State": now["fire"]}}},
            }
        elif path == f"{chassis}/EnvironmentMetrics":
            doc = copy.deepcopy(_mockup("EnvironmentMetrics"))
            doc.update({"@odata.id": path, "Name": f"Unit {self.unit} inlet air"})
            doc["TemperatureCelsius"]["Reading"] = now["inlet_c"]
            doc["PowerWatts"]["Reading"] = now["pdu_power_w"]
        elif path == CDU:
            doc = copy.deepcopy(_mockup("CoolingUnit"))
        elif path == f"{CDU}/SecondaryCoolantConnectors/A":
            doc = copy.deepcopy(_mockup("CoolantConnector"))
            doc["SupplyTemperatureCelsius"]["Reading"] = now["coolant_supply_c"]
            returned = round(now["coolant_supply_c"] + 23.4, 2)
            doc["ReturnTemperatureCelsius"]["Reading"] = returned
        elif path == f"{CDU}/LeakDetection":
            doc = copy.deepcopy(_mockup("LeakDetection"))
            if now["leak"]:
                doc["Status"]["Health"] = "Critical"
                group = doc["LeakDetectorGroups"][0]
                group["Status"]["Health"] = "Critical"
                group["Detectors"][0]["DetectorState"] = "Critical"
        elif path == f"{PDU}/Metrics":
            doc = copy.deepcopy(_mockup("PowerDistributionMetrics"))
            doc["PowerWatts"]["Reading"] = now["pdu_power_w"]
        else:
            return None
        if self.fault is FaultKind.MISSING:
            _drop_readings(doc)
        return doc

    def app(self) -> web.Application:
        # A fault here drains a unit: no web page may send one (see edgeplane.web).
        app = web.Application(middlewares=[json_errors, browser_guard(admin_token=self.admin_token)])
        self._stopping = asyncio.Event()

        async def stopping(_: web.Application) -> None:
            self._stopping.set()

        app.on_shutdown.append(stopping)
        app.router.add_post(f"{ROOT}/Oem/Edgeplane/Fault", self._set_fault)
        app.router.add_delete(f"{ROOT}/Oem/Edgeplane/Fault", self._clear_fault)
        app.router.add_get(ROOT + "{tail:.*}", self._get)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _silent(self) -> None:
        """No answer until the fault clears or the server stops; the client gives up first."""
        while self.fault is FaultKind.SILENT and not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._stopping.wait()

    async def _metrics(self, _: web.Request) -> web.Response:
        """GPU health as the DCGM exporter serves it."""
        await self._silent()
        if self.fault is FaultKind.MALFORMED:
            return web.Response(body=b'DCGM_FI_DEV_GPU_TEMP{gpu="0" 4', content_type="text/plain")
        leave_out = ("DCGM_FI_DEV_GPU_TEMP",) if self.fault is FaultKind.MISSING else ()
        body = self._exporter.render(self.gpu_readings(), leave_out=leave_out)
        return web.Response(body=body, content_type="text/plain")

    async def _get(self, request: web.Request) -> web.StreamResponse:
        await self._silent()
        doc = self.document(request.path)
        if doc is None:
            return web.json_response({"error": {"code": "Base.1.0.ResourceMissingAtURI", "message": request.path}},
                                     status=404)  # fmt: skip
        if self.fault is FaultKind.MALFORMED:
            return web.Response(
                body=b'{"@odata.id": "' + request.path.encode() + b'", "Reading": ', content_type="application/json"
            )
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    @admin
    async def _set_fault(self, request: web.Request) -> web.Response:
        try:
            kind = FaultKind(str(orjson.loads(await request.read())["kind"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            kinds = ", ".join(k.value for k in FaultKind)
            return web.json_response({"error": {"message": f'Expected {{"kind": one of {kinds}}}.'}}, status=400)
        self.fault = kind
        return web.json_response({"unit": self.unit, "fault": str(kind)})

    @admin
    async def _clear_fault(self, request: web.Request) -> web.Response:
        self.fault = None
        return web.json_response({"unit": self.unit, "fault": None})


def _drop_readings(doc: Any) -> None:
    if isinstance(doc, dict):
        doc.pop("Reading", None)
        for value in doc.values():
            _drop_readings(value)
    elif isinstance(doc, list):
        for value in doc:
            _drop_readings(value)


@dataclass(frozen=True, slots=True)
class FacilityReading:
    unit: str
    inlet_c: float
    coolant_supply_c: float
    leak: bool
    pdu_power_w: float
    fire: str  # Normal | Armed | Discharged
    at: float  # unix seconds
    gpus: tuple[GpuReading, ...] = ()  # from the unit's DCGM exporter, where it has one

    @property
    def gpu_temp_max_c(self) -> float:
        return max((g.temp_c for g in self.gpus), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """The facility readings and a summary of the GPUs (each GPU's fields are on the agent's /metrics)."""
        return {
            "unit": self.unit,
            "inlet_c": self.inlet_c,
            "coolant_supply_c": self.coolant_supply_c,
            "leak": self.leak,
            "pdu_power_w": self.pdu_power_w,
            "fire": self.fire,
            "at": self.at,
            "gpus": len(self.gpus),
            "gpu_temp_max_c": self.gpu_temp_max_c,
            "gpu_power_w": round(sum(g.power_w for g in self.gpus), 1),
            "gpu_xid": [
                {"gpu": g.gpu, "hostname": g.hostname, "uuid": g.uuid, "xid": g.xid} for g in self.gpus if g.xid
            ],
        }


async def read_gpus(client: HttpClient, url: str, *, timeout_seconds: float = 2.0) -> tuple[GpuReading, ...]:
    """One scrape of a DCGM exporter's /metrics."""
    try:
        status, text = await client.fetch_text(url, timeout_seconds=timeout_seconds)
    except BackendError as error:
        raise TelemetryStale(f"{url}: no answer ({error})") from None
    if status != 200:
        raise TelemetryStale(f"{url}: HTTP {status}")
    return parse(text, url)


async def read_unit(
    client: HttpClient,
    base_url: str,
    unit: str,
    *,
    dcgm_urls: Sequence[str] = (),
    timeout_seconds: float = 2.0,
) -> FacilityReading:
    """One poll of a unit's Redfish service, and of its DCGM exporters (one per GPU server, or one for the unit)
    where it has them; TelemetryStale says what was wrong (no answer, not JSON, a reading missing)."""
    chassis = f"{ROOT}/Chassis/{unit}"

    async def get(path: str) -> dict[str, Any]:
        try:
            status, doc = await client.request_json("GET", base_url.rstrip("/") + path, timeout_seconds=timeout_seconds)
        except BackendError as error:
            raise TelemetryStale(f"{path}: no answer ({error})") from None
        if status != 200 or not isinstance(doc, dict) or "@odata.id" not in doc:
            raise TelemetryStale(f"{path}: not a Redfish document (HTTP {status})")
        return doc

    def reading(doc: dict[str, Any], name: str, path: str) -> float:
        value = (doc.get(name) or {}).get("Reading") if isinstance(doc.get(name), dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise TelemetryStale(f"{path}: {name} has no reading")
        return float(value)

    async def all_gpus() -> tuple[GpuReading, ...]:
        pages = await asyncio.gather(*(read_gpus(client, url, timeout_seconds=timeout_seconds) for url in dcgm_urls))
        return tuple(gpu for page in pages for gpu in page)

    environment, connector, leaks, pdu, box, gpus = await asyncio.gather(
        get(f"{chassis}/EnvironmentMetrics"),
        get(f"{CDU}/SecondaryCoolantConnectors/A"),
        get(f"{CDU}/LeakDetection"),
        get(f"{PDU}/Metrics"),
        get(chassis),
        all_gpus(),
    )
    groups = leaks.get("LeakDetectorGroups")
    if not isinstance(groups, list):
        raise TelemetryStale(f"{CDU}/LeakDetection: no LeakDetectorGroups")
    tripped = any(
        isinstance(d, dict) and d.get("DetectorState") not in (None, "OK")
        for g in groups
        if isinstance(g, dict)
        for d in (g.get("Detectors") or [])
    )
    fire = ((box.get("Oem") or {}).get("Edgeplane") or {}).get("FireSuppression", {}).get("State")
    if fire not in FIRE_STATES:
        raise TelemetryStale(f"{chassis}: Oem.Edgeplane.FireSuppression.State is {fire!r}")
    return FacilityReading(
        unit,
        reading(environment, "TemperatureCelsius", f"{chassis}/EnvironmentMetrics"),
        reading(connector, "SupplyTemperatureCelsius", f"{CDU}/SecondaryCoolantConnectors/A"),
        tripped,
        reading(pdu, "PowerWatts", f"{PDU}/Metrics"),
        str(fire),
        time.time(),
        gpus,
    )
