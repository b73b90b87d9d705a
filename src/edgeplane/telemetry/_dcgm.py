"""GPU health in the terms of NVIDIA's DCGM exporter: the Prometheus text it serves at /metrics, one sample per
GPU and field, labelled gpu, UUID, device, modelName and Hostname. The emulator writes that text for a unit's
GPUs (through prometheus_client, as the exporter's own format) and the reader parses it back with
prometheus_client's parser; anything it cannot make sense of reads as stale telemetry, never as an alarm."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from edgeplane.telemetry._errors import TelemetryStale

# DCGM field -> (GpuReading attribute, the exporter's help text).
FIELDS: dict[str, tuple[str, str]] = {
    "DCGM_FI_DEV_GPU_TEMP": ("temp_c", "GPU temperature (in C)."),
    "DCGM_FI_DEV_POWER_USAGE": ("power_w", "Power draw (in W)."),
    "DCGM_FI_DEV_XID_ERRORS": ("xid", "Value of the last XID error encountered."),
    "DCGM_FI_DEV_GPU_UTIL": ("util_percent", "GPU utilization (in %)."),
    "DCGM_FI_DEV_FB_USED": ("fb_used_mib", "Framebuffer memory used (in MiB)."),
}
REQUIRED = ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_XID_ERRORS")
LABELS = ("gpu", "UUID", "device", "modelName", "Hostname")


@dataclass(frozen=True, slots=True)
class GpuReading:
    gpu: str  # index on its server
    uuid: str
    model_name: str
    hostname: str  # the server in the unit
    temp_c: float
    power_w: float
    xid: int  # the last XID error, 0 for none
    util_percent: float = 0.0
    fb_used_mib: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "uuid": self.uuid,
            "model_name": self.model_name,
            "hostname": self.hostname,
            "temp_c": self.temp_c,
            "power_w": self.power_w,
            "xid": self.xid,
            "util_percent": self.util_percent,
            "fb_used_mib": self.fb_used_mib,
        }


class Exporter:
    """What a DCGM exporter serves, for emulated GPUs: one registry kept for its life, values set per scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._gauges = {name: Gauge(name, help_text, LABELS, registry=self.registry)
                        for name, (_, help_text) in FIELDS.items()}  # fmt: skip

    def __repr__(self) -> str:
        return f"<Exporter [Fields: {len(self._gauges)}]>"

    def render(self, gpus: list[GpuReading], *, leave_out: tuple[str, ...] = ()) -> bytes:
        """The /metrics text for these GPUs (``leave_out``: fields missing, as a broken exporter would)."""
        for name, (attribute, _) in FIELDS.items():
            gauge = self._gauges[name]
            for g in gpus:
                gauge.labels(g.gpu, g.uuid, f"nvidia{g.gpu}", g.model_name, g.hostname).set(getattr(g, attribute))
        if leave_out:
            return generate_latest(self.registry.restricted_registry([n for n in FIELDS if n not in leave_out]))
        return generate_latest(self.registry)


def _ours(line: str) -> bool:
    """A sample, HELP or TYPE line of a field we read (exporters serve dozens; the parser reads only these)."""
    if line.startswith("#"):
        parts = line.split(" ", 3)
        return len(parts) > 2 and parts[1] in ("HELP", "TYPE") and parts[2] in FIELDS
    return line.startswith(_PREFIXES)


_PREFIXES = tuple(f"{name}{{" for name in FIELDS) + tuple(f"{name} " for name in FIELDS)


def parse(text: str, source: str) -> tuple[GpuReading, ...]:
    """The GPUs in an exporter's /metrics text; TelemetryStale says what was wrong with it."""
    from prometheus_client.parser import text_string_to_metric_families

    fields: dict[tuple[str, str], dict[str, float]] = {}  # (Hostname, UUID) -> field -> value
    labels: dict[tuple[str, str], dict[str, str]] = {}
    try:
        for family in text_string_to_metric_families("\n".join(filter(_ours, text.splitlines())) + "\n"):
            if family.name not in FIELDS:
                continue
            for sample in family.samples:
                key = (sample.labels.get("Hostname", ""), sample.labels.get("UUID") or sample.labels.get("gpu", ""))
                fields.setdefault(key, {})[family.name] = float(sample.value)
                labels[key] = sample.labels
    except ValueError as error:
        raise TelemetryStale(f"{source}: not Prometheus text ({error})") from None
    if not fields:
        raise TelemetryStale(f"{source}: no DCGM GPU fields")
    gpus = []
    for key, values in sorted(fields.items()):
        missing = [name for name in REQUIRED if name not in values]
        if missing:
            raise TelemetryStale(f"{source}: GPU {key[1] or '?'} has no {', '.join(missing)}")
        if not all(math.isfinite(v) for v in values.values()):
            raise TelemetryStale(f"{source}: GPU {key[1] or '?'} has a reading that is not a number")
        label = labels[key]
        gpus.append(
            GpuReading(
                label.get("gpu", "?"),
                key[1],
                label.get("modelName", ""),
                key[0],
                values["DCGM_FI_DEV_GPU_TEMP"],
                values["DCGM_FI_DEV_POWER_USAGE"],
                int(values["DCGM_FI_DEV_XID_ERRORS"]),
                values.get("DCGM_FI_DEV_GPU_UTIL", 0.0),
                values.get("DCGM_FI_DEV_FB_USED", 0.0),
            )
        )
    return tuple(gpus)
