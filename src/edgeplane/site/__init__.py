"""Site agents and the model backends they serve through: emulator, llama.cpp, upstream URL."""

from edgeplane.faults import CATALOGUE, Fault, FaultError, FaultKind
from edgeplane.site._agent import (
    BACKEND_KINDS,
    DISK_GB_PER_SECOND,
    ModelLoader,
    SiteAgent,
    SiteOptions,
    build_backend,
    build_backends,
    load_seconds,
)
from edgeplane.site._backend import Answer, Backend, Load
from edgeplane.site._emulator import EmulatorBackend, estimate_tokens
from edgeplane.site._llamacpp import LlamaCppBackend
from edgeplane.site._tiny_gguf import write_tiny_llama_gguf
from edgeplane.site._upstream import UpstreamBackend, parse_load

__all__ = [
    "BACKEND_KINDS",
    "CATALOGUE",
    "DISK_GB_PER_SECOND",
    "Answer",
    "Backend",
    "EmulatorBackend",
    "Fault",
    "FaultError",
    "FaultKind",
    "LlamaCppBackend",
    "Load",
    "ModelLoader",
    "SiteAgent",
    "SiteOptions",
    "UpstreamBackend",
    "build_backend",
    "build_backends",
    "estimate_tokens",
    "load_seconds",
    "parse_load",
    "write_tiny_llama_gguf",
]
