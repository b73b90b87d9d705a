"""GPU types: memory per GPU and power per GPU with its share of the server (planning figures)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuType:
    memory_gb: float
    power_kw: float  # the GPU plus its share of the server's CPUs, memory, NICs and fans
    cost_per_hour_usd: float  # owned and operated, amortised: only the ratios between types matter to the planner


# Vendor data-sheet memory; power is the server's rated draw divided by its GPUs (for example 10.2 kW
# for an 8-GPU H100 server), which is what a modular unit's power budget has to carry.
GPU_SPECS: dict[str, GpuType] = {
    "A100": GpuType(80, 0.8, 1.2),
    "H100": GpuType(80, 1.3, 2.0),
    "H200": GpuType(141, 1.3, 2.4),
    "GH200": GpuType(96, 1.0, 2.2),
    "B200": GpuType(192, 1.8, 3.4),
    "GB200": GpuType(192, 1.7, 3.8),
    "L40S": GpuType(48, 0.5, 0.8),
    "MI300X": GpuType(192, 1.3, 2.0),
}
GPU_TYPES = frozenset(GPU_SPECS)
