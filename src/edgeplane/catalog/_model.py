"""One model of the catalog, with units in every field name."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from edgeplane.catalog._gpus import GPU_SPECS, GPU_TYPES


class ModelSpec(BaseModel):
    """A model in the catalog. Throughput is output tokens per second per GPU at full batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    parameters_billions: PositiveFloat
    gpu_memory_gb: PositiveFloat
    gpus_per_replica: PositiveInt
    throughput_tokens_per_second: dict[str, PositiveFloat] = Field(min_length=1)
    file_size_gb: PositiveFloat
    slo_ttft_ms: PositiveFloat
    max_concurrency: PositiveInt = 64
    context_tokens: PositiveInt = 8192
    # What a request's content may carry besides text; a part of another kind is refused before forwarding.
    inputs: tuple[Literal["text", "image", "audio", "file"], ...] = ("text",)

    @field_validator("throughput_tokens_per_second")
    @classmethod
    def _known_gpu_types(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - GPU_TYPES)
        if unknown:
            raise ValueError(f"unknown GPU type {unknown[0]!r}; expected one of {', '.join(sorted(GPU_TYPES))}")
        return value

    def replica_throughput(self, gpu_type: str) -> float:
        """Aggregate output tokens per second of one replica on this GPU type (0 if it cannot run there)."""
        return self.throughput_tokens_per_second.get(gpu_type, 0.0) * self.gpus_per_replica

    def fits(self, gpu_type: str) -> bool:
        """True if a replica's weights and cache fit in its GPUs' memory and the catalog has its speed there."""
        spec = GPU_SPECS.get(gpu_type)
        return (
            spec is not None
            and gpu_type in self.throughput_tokens_per_second
            and (self.gpu_memory_gb <= spec.memory_gb * self.gpus_per_replica)
        )
