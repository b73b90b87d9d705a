"""The model catalog: what each model needs and how fast it runs on each GPU type."""

from edgeplane.catalog._model import GPU_TYPES, ModelSpec

__all__ = ["GPU_TYPES", "ModelSpec"]
