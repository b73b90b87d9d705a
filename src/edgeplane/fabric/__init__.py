"""The fabric: the content-addressed object store of a site, filled chunk by chunk and checked from disk."""

from edgeplane.fabric._manifest import (
    DEFAULT_CHUNK_BYTES,
    ChunkRejected,
    FabricError,
    FileEntry,
    Manifest,
    ManifestError,
    StoreFull,
    build_manifest,
)
from edgeplane.fabric._node import FABRIC_POP_HEADER, FabricNode, FetchState, Source
from edgeplane.fabric._store import ObjectState, ObjectStore

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "FABRIC_POP_HEADER",
    "ChunkRejected",
    "FabricError",
    "FabricNode",
    "FetchState",
    "FileEntry",
    "Manifest",
    "ManifestError",
    "ObjectState",
    "ObjectStore",
    "Source",
    "StoreFull",
    "build_manifest",
]
