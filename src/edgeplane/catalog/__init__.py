"""The model catalog: what each model needs and how fast it runs on each GPU type."""

from edgeplane.catalog._model import GPU_TYPES, ModelSpec
from edgeplane.catalog._speed import DEFAULT_OUTPUT_TOKENS, ReplicaSpeed

__all__ = ["DEFAULT_OUTPUT_TOKENS", "GPU_TYPES", "ModelSpec", "ReplicaSpeed"]
