"""What a fabric object is: its files, its chunks and their hashes, parsed hard where a manifest enters."""

from __future__ import annotations

import bisect
import hashlib
import math
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from edgeplane._errors import EdgeplaneError

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
MIN_CHUNK_BYTES = 4096
MAX_CHUNK_BYTES = 64 * 1024 * 1024
MAX_CHUNKS = 1_000_000
MAX_FILES = 100_000
MAX_OBJECT_BYTES = MAX_CHUNKS * MAX_CHUNK_BYTES
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4096
READ_BYTES = 1024 * 1024  # one read of a file while hashing it

# C0, DEL and C1: no name or path from the network may carry a character a terminal or a log would act on.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEX64 = r"^[0-9a-f]{64}$"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

Sha256 = Annotated[str, Field(strict=True, min_length=64, max_length=64, pattern=_HEX64)]
ByteCount = Annotated[int, Field(strict=True, ge=0, le=MAX_OBJECT_BYTES)]


class FabricError(EdgeplaneError):
    """Base of the fabric's errors: a short message saying what went wrong and where."""


class ManifestError(FabricError):
    """A manifest that cannot describe an object, or a path that cannot be one."""


class ChunkRejected(FabricError):
    """Bytes that do not match their chunk's length or hash (or an object whose bytes on disk do not)."""


class StoreFull(FabricError):
    """The object does not fit: the disk is full, or the store's own byte limit would be passed."""


def _utf8(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid UTF-8") from None


class FileEntry(BaseModel):
    """One regular file of an object: its path relative to the object's root, and its size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(strict=True)
    size_bytes: ByteCount

    @field_validator("path")
    @classmethod
    def _safe_path(cls, path: str) -> str:
        # The path comes from the network and names a file the store will create: it must stay below the
        # object's data directory whatever the filesystem makes of it.
        if not path:
            raise ValueError("must not be empty")
        if path.startswith("/"):
            raise ValueError("must be relative (it starts with '/')")
        if "\\" in path:
            raise ValueError("must not contain a backslash")
        if _CONTROL.search(path):
            raise ValueError("must not contain NUL or control characters")
        encoded = _utf8(path, "path")
        if len(encoded) > MAX_PATH_BYTES:
            raise ValueError(f"is {len(encoded)} bytes long; at most {MAX_PATH_BYTES} are allowed")
        for component in path.split("/"):
            if component == "":
                raise ValueError("must not contain an empty component ('//' or a trailing '/')")
            if component in (".", ".."):
                raise ValueError(f"must not contain a {component!r} component")
            if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
                raise ValueError(f"has a component longer than {MAX_COMPONENT_BYTES} bytes")
        return path


class Manifest(BaseModel):
    """An object: its files in stream order, and the SHA-256 of the whole stream and of each chunk of it.

    The stream is the files' bytes concatenated in ``files`` order; chunk ``i`` is bytes
    ``[i * chunk_bytes, min((i + 1) * chunk_bytes, size_bytes))`` of it and may span several files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(strict=True, min_length=1, max_length=200)
    sha256: Sha256
    size_bytes: ByteCount
    chunk_bytes: int = Field(strict=True, ge=MIN_CHUNK_BYTES, le=MAX_CHUNK_BYTES)
    files: list[FileEntry] = Field(min_length=1, max_length=MAX_FILES)
    chunks: list[Sha256] = Field(max_length=MAX_CHUNKS)

    _starts: list[int] = PrivateAttr(default_factory=list)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        if _CONTROL.search(name):
            raise ValueError("must not contain control characters")
        _utf8(name, "name")
        return name

    @field_validator("files")
    @classmethod
    def _distinct_files(cls, files: list[FileEntry]) -> list[FileEntry]:
        paths: set[str] = set()
        for entry in files:
            if entry.path in paths:
                raise ValueError(f"path {entry.path!r} appears twice")
            paths.add(entry.path)
        for path in paths:
            parts = path.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent in paths:
                    raise ValueError(f"{parent!r} is a file, so {path!r} cannot be below it")
        return files

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        total = sum(entry.size_bytes for entry in self.files)
        if total != self.size_bytes:
            raise ValueError(f"the files add up to {total} bytes, but size_bytes is {self.size_bytes}")
        expected = math.ceil(self.size_bytes / self.chunk_bytes)
        if len(self.chunks) != expected:
            raise ValueError(
                f"{self.size_bytes} bytes in chunks of {self.chunk_bytes} make {expected} chunks, "
                f"but {len(self.chunks)} are listed"
            )
        # Two cheap checks that catch a manifest contradicting itself before a byte is fetched for it.
        if self.size_bytes == 0 and self.sha256 != EMPTY_SHA256:
            raise ValueError("an object of 0 bytes has the SHA-256 of no bytes")
        if len(self.chunks) == 1 and self.chunks[0] != self.sha256:
            raise ValueError("an object of one chunk has that chunk's SHA-256 as its own")
        starts, offset = [], 0
        for entry in self.files:
            starts.append(offset)
            offset += entry.size_bytes
        self._starts = starts
        return self

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index`` in the stream."""
        if not 0 <= index < len(self.chunks):
            raise IndexError(f"chunk {index} out of range: {self.name} has {len(self.chunks)} chunks")
        offset = index * self.chunk_bytes
        return offset, min(self.chunk_bytes, self.size_bytes - offset)

    def spans(self, offset: int, length: int) -> list[tuple[FileEntry, int, int]]:
        """(file, offset in that file, length) for each file a range of the stream covers, in order."""
        return [(self.files[i], at, n) for i, at, n in self.file_spans(offset, length)]

    def file_spans(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """As ``spans``, with the file's index in ``files`` instead of the entry."""
        if offset < 0 or length < 0 or offset + length > self.size_bytes:
            raise ValueError(f"range [{offset}, {offset + length}) is outside {self.name} ({self.size_bytes} bytes)")
        index = bisect.bisect_right(self._starts, offset) - 1
        while length > 0:
            at = offset - self._starts[index]
            n = min(length, self.files[index].size_bytes - at)
            if n > 0:
                yield index, at, n
                offset += n
                length -= n
            index += 1

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """The manifest in ``raw``, or ManifestError naming the first fields that are wrong."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as error:
            raise ManifestError(f"manifest: {describe(error)}") from None

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def describe(error: ValidationError) -> str:
    """The first problems pydantic found, each as 'field.path: what is wrong'."""
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for problem in problems[:3]:
        if problem["type"] == "json_invalid":
            parts.append(f"not valid JSON ({problem['msg']})")
            continue
        message = str(problem["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in problem["loc"])
        parts.append(f"{where}: {message}" if where else message)
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(parts) + more


class StreamHasher:
    """The whole stream's SHA-256 and, when ``chunk_bytes`` is given, each chunk's, in one pass."""

    def __init__(self, chunk_bytes: int | None = None) -> None:
        self.whole = hashlib.sha256()
        self._chunk_bytes = chunk_bytes
        self._chunk = hashlib.sha256()
        self._filled = 0
        self.chunks: list[str] = []

    def update(self, view: memoryview) -> None:
        self.whole.update(view)
        if self._chunk_bytes is None:
            return
        while view:
            take = min(len(view), self._chunk_bytes - self._filled)
            self._chunk.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._chunk_bytes:
                self.chunks.append(self._chunk.hexdigest())
                self._chunk, self._filled = hashlib.sha256(), 0

    def finish(self) -> tuple[str, list[str]]:
        if self._filled:
            self.chunks.append(self._chunk.hexdigest())
            self._chunk, self._filled = hashlib.sha256(), 0
        return self.whole.hexdigest(), self.chunks


def open_regular(path: Path) -> int:
    """A read-only descriptor on ``path``, which must be a regular file and not a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise ManifestError(f"{path}: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ManifestError(f"{path}: not a regular file")
    return fd


def _walk(root: Path, here: Path, found: list[tuple[str, Path]]) -> None:
    try:
        entries = list(os.scandir(here))
    except OSError as error:
        raise ManifestError(f"{here}: {error.strerror or error}") from None
    for entry in entries:
        path = Path(entry.path)
        if entry.is_symlink():
            raise ManifestError(f"{path}: is a symlink; an object holds regular files only")
        if entry.is_dir(follow_symlinks=False):
            _walk(root, path, found)
        elif entry.is_file(follow_symlinks=False):
            found.append((path.relative_to(root).as_posix(), path))
            if len(found) > MAX_FILES:
                raise ManifestError(f"{root}: more than {MAX_FILES} files")
        else:
            raise ManifestError(f"{path}: not a regular file (a socket, FIFO or device); an object holds files only")


def _sources(path: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path on disk) of each file of the object at ``path``, in stream order."""
    try:
        mode = path.lstat().st_mode
    except OSError as error:
        raise ManifestError(f"{path}: {error.strerror or error}") from None
    if stat.S_ISLNK(mode):
        raise ManifestError(f"{path}: is a symlink; give the file or directory it points to")
    if stat.S_ISREG(mode):
        return [(path.name, path)]
    if not stat.S_ISDIR(mode):
        raise ManifestError(f"{path}: not a regular file or directory")
    found: list[tuple[str, Path]] = []
    _walk(path, path, found)
    if not found:
        raise ManifestError(f"{path}: the directory holds no files")
    # Sorted by the POSIX path as a string, so the stream's order is the same on every machine.
    return sorted(found)


def build_manifest(
    path: Path,
    name: str,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: Callable[[int], None] | None = None,
) -> Manifest:
    """The manifest of the file or directory at ``path``, read once; ``progress(n)`` after each read with the
    bytes read so far. ManifestError for a path that cannot be an object (missing, a symlink, a special file)."""
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ManifestError(f"chunk_bytes {chunk_bytes} is not between {MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES}")
    sources = _sources(Path(path))
    hasher = StreamHasher(chunk_bytes)
    buffer = bytearray(READ_BYTES)
    view = memoryview(buffer)
    total = 0
    files: list[dict[str, Any]] = []
    for relative, source in sources:
        fd = open_regular(source)
        size = 0
        with open(fd, "rb", buffering=0, closefd=True) as stream:
            while n := stream.readinto(view):
                hasher.update(view[:n])
                size += n
                total += n
                if progress is not None:
                    progress(total)
        files.append({"path": relative, "size_bytes": size})
        if math.ceil(total / chunk_bytes) > MAX_CHUNKS:
            raise ManifestError(f"{path}: more than {MAX_CHUNKS} chunks of {chunk_bytes} bytes")
    whole, chunks = hasher.finish()
    try:
        return Manifest.model_validate(
            {"name": name, "sha256": whole, "size_bytes": total, "chunk_bytes": chunk_bytes, "files": files,
             "chunks": chunks}
        )  # fmt: skip
    except ValidationError as error:
        raise ManifestError(f"{path}: {describe(error)}") from None
