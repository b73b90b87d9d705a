"""The model catalog: what each model needs and how fast it runs on each GPU type."""

from edgeplane.catalog._gpus import GPU_SPECS, GPU_TYPES, GpuType
from edgeplane.catalog._model import ModelSpec
from edgeplane.catalog._speed import DEFAULT_OUTPUT_TOKENS, ReplicaSpeed

__all__ = ["DEFAULT_OUTPUT_TOKENS", "GPU_SPECS", "GPU_TYPES", "GpuType", "ModelSpec", "ReplicaSpeed"]
