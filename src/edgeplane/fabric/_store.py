"""The content-addressed object store of one site: objects kept as plain files, filled chunk by chunk.

Layout under the store's root (objects are keyed by the SHA-256 of their byte stream):

    objects/<sha256>/manifest.json   the object's manifest, written whole (tmp + rename) by add()
    objects/<sha256>/data/<path>     its files, preallocated by add(), so a loaded GGUF is a normal file
    objects/<sha256>/complete        "<sha256>\\n", written only once the whole object was read back from disk
                                     and hashed right (after its files were fsynced)
    trash/                           objects being removed: renamed here first, then deleted, so a crash
                                     never leaves half an object under objects/; emptied when a store opens

Which chunks of a partial object are held is not written down anywhere: a store that opens hashes each chunk
range on disk, and a chunk whose bytes hash right is held. The site agent calls the store from worker threads
(``asyncio.to_thread``): the bookkeeping is under one lock, hashing and file I/O outside it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from edgeplane._files import write_atomically
from edgeplane.fabric._manifest import (
    READ_BYTES,
    ChunkRejected,
    FabricError,
    Manifest,
    ManifestError,
    StoreFull,
    StreamHasher,
)

log = logging.getLogger("edgeplane.fabric")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_FULL = (errno.ENOSPC, errno.EDQUOT)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@contextlib.contextmanager
def _os_errors(path: Path, doing: str) -> Iterator[None]:
    """OSError -> StoreFull when the disk or quota is full, FabricError naming the path otherwise."""
    try:
        yield
    except OSError as error:
        reason = error.strerror or str(error)
        if error.errno in _FULL:
            raise StoreFull(f"{path}: no space left to {doing} ({reason})") from None
        raise FabricError(f"{path}: cannot {doing}: {reason}") from None


@dataclass(frozen=True)
class ObjectState:
    """What the store holds of one object, as of the call that returned it."""

    manifest: Manifest
    held: frozenset[int]
    complete: bool
    # The SHA-256 of the object's files as last read back from disk (on completion or by verify()); None until
    # then, including for an object found complete when the store opened.
    verified_sha256: str | None = None

    @property
    def bytes_held(self) -> int:
        manifest = self.manifest
        held = len(self.held) * manifest.chunk_bytes
        last = manifest.chunk_count - 1
        if last in self.held:
            held -= manifest.chunk_bytes - manifest.chunk_range(last)[1]
        return held

    def missing(self) -> list[int]:
        """Indices of the chunks not held, in order."""
        return [i for i in range(self.manifest.chunk_count) if i not in self.held]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.manifest.name,
            "sha256": self.manifest.sha256,
            "size_bytes": self.manifest.size_bytes,
            "chunk_count": self.manifest.chunk_count,
            "chunks_held": len(self.held),
            "bytes_held": self.bytes_held,
            "complete": self.complete,
            "verified_sha256": self.verified_sha256,
        }

    def __repr__(self) -> str:
        if self.verified_sha256 is not None and self.verified_sha256 != self.manifest.sha256:
            word = "corrupt"
        elif self.complete:
            word = "verified" if self.verified_sha256 is not None else "complete"
        else:
            word = "partial"
        return (
            f"<ObjectState {self.manifest.name} [{word}: {len(self.held)}/{self.manifest.chunk_count} chunks, "
            f"{_mb(self.bytes_held)} of {_mb(self.manifest.size_bytes)}]>"
        )


@dataclass(eq=False)
class _Object:
    """The store's own record of one object; changed only under the store's lock."""

    manifest: Manifest
    root: Path
    held: set[int] = field(default_factory=set)
    complete: bool = False
    verified_sha256: str | None = None
    # Reading the whole object back (completion, verify) is done by one thread at a time.
    readback: threading.Lock = field(default_factory=threading.Lock)
    # Content addressing: the first index of each chunk hash, and the hashes that occur more than once.
    first: dict[str, int] = field(default_factory=dict)
    repeated: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for index, chunk in enumerate(self.manifest.chunks):
            if self.first.setdefault(chunk, index) != index:
                self.repeated.add(chunk)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def path(self, index: int) -> Path:
        return self.data_dir / self.manifest.files[index].path

    def state(self) -> ObjectState:
        return ObjectState(self.manifest, frozenset(self.held), self.complete, self.verified_sha256)


def _pread(fd: int, length: int, offset: int) -> bytes:
    """Up to ``length`` bytes at ``offset``; fewer only at the end of the file."""
    data = os.pread(fd, length, offset)
    if len(data) == length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length and (more := os.pread(fd, length - got, offset + got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class _Reader:
    """Reads ranges of an object's files in order, keeping the file it read last open. A file that is missing,
    unreadable or too short reads as None: the chunk there is simply not held."""

    def __init__(self, obj: _Object) -> None:
        self._obj = obj
        self._index = -1
        self._fd = -1

    def read(self, index: int, offset: int, length: int) -> bytes | None:
        if index != self._index:
            self.close()
            self._index = index
            with contextlib.suppress(OSError):
                self._fd = os.open(self._obj.path(index), _READ_FLAGS)
        if self._fd < 0:
            return None
        try:
            data = _pread(self._fd, length, offset)
        except OSError:
            return None
        return data if len(data) == length else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._index = -1, -1

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _write_atomically(path: Path, data: bytes) -> None:
    with _os_errors(path, "write it"):
        write_atomically(path, data)


class ObjectStore:
    """The objects of one site under ``root``; ``limit_bytes`` caps the sum of their sizes (None: the disk's)."""

    def __init__(self, root: Path, *, limit_bytes: int | None = None) -> None:
        if limit_bytes is not None and limit_bytes < 0:
            raise ValueError(f"limit_bytes must be >= 0, not {limit_bytes}")
        self.root = Path(root)
        self.limit_bytes = limit_bytes
        self._objects_dir = self.root / "objects"
        self._trash = self.root / "trash"
        self._lock = threading.Lock()
        self._add_lock = threading.Lock()  # add() checks the limit and then allocates: one at a time
        self._objects: dict[str, _Object] = {}
        with _os_errors(self.root, "create the store"):
            self._objects_dir.mkdir(parents=True, exist_ok=True)
            self._trash.mkdir(exist_ok=True)
            for child in list(self._trash.iterdir()):
                shutil.rmtree(child, ignore_errors=True)
            children = sorted(self._objects_dir.iterdir())
        for child in children:
            self._open(child)

    def _open(self, path: Path) -> None:
        """Take up an object found on disk when the store opens, or skip it with a warning."""
        if not _SHA256.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            log.warning("fabric: skipping %s: not an object directory", path)
            return
        try:
            manifest = Manifest.from_json((path / "manifest.json").read_bytes())
        except FileNotFoundError:
            log.warning("fabric: skipping %s: no manifest.json (an add() that did not finish)", path)
            return
        except (OSError, ManifestError) as error:
            log.warning("fabric: skipping %s: %s", path, error)
            return
        if manifest.sha256 != path.name:
            log.warning("fabric: skipping %s: its manifest is for object %s", path, manifest.sha256)
            return
        obj = _Object(manifest, path)
        if (path / "complete").exists():
            obj.held, obj.complete = set(range(manifest.chunk_count)), True
        else:
            obj.held = self._held_on_disk(obj)
        self._objects[manifest.sha256] = obj
        if not obj.complete and len(obj.held) == manifest.chunk_count:
            # Every chunk was written but the store stopped before the object was read back: do that now.
            try:
                self._finish(obj)
            except FabricError as error:
                log.warning("fabric: %s (%s) is not complete: %s", manifest.name, manifest.sha256, error)

    def __repr__(self) -> str:
        with self._lock:
            objects = list(self._objects.values())
        complete = sum(obj.complete for obj in objects)
        used = sum(obj.manifest.size_bytes for obj in objects)
        limit = "no limit" if self.limit_bytes is None else f"a limit of {_mb(self.limit_bytes)}"
        return (
            f"<ObjectStore {self.root} [{len(objects)} objects: {complete} complete, {len(objects) - complete} "
            f"partial | {_mb(used)} of {limit}]>"
        )

    # -- objects ---------------------------------------------------------------------------------------------

    def add(self, manifest: Manifest) -> ObjectState:
        """Make room for the object: write its manifest, preallocate its files. Adding an object held already
        under the same manifest returns its state; under another manifest, FabricError. StoreFull when it does
        not fit (the store's limit, or the disk)."""
        sha = manifest.sha256
        with self._add_lock:
            with self._lock:
                existing = self._objects.get(sha)
                if existing is not None:
                    # The same bytes pushed under another name are the object held: names are labels.
                    if existing.manifest.model_copy(update={"name": manifest.name}) != manifest:
                        raise FabricError(
                            f"object {sha} is held already as {existing.manifest.name!r} under another manifest; "
                            "remove it first"
                        )
                    return existing.state()
                used = sum(obj.manifest.size_bytes for obj in self._objects.values())
            if self.limit_bytes is not None and used + manifest.size_bytes > self.limit_bytes:
                raise StoreFull(
                    f"{manifest.name} needs {_mb(manifest.size_bytes)} ({manifest.size_bytes} bytes); the store "
                    f"holds {_mb(used)} of its {_mb(self.limit_bytes)} limit ({used} of {self.limit_bytes} bytes)"
                )
            obj = _Object(manifest, self._objects_dir / sha)
            targets = self._targets(obj)
            # A directory without a manifest we could read: an add() that did not finish, or a manifest.json
            # that was damaged. Its chunks on disk are reused if they hash right.
            reused = obj.root.exists()
            try:
                with _os_errors(obj.root, "create the object"):
                    obj.data_dir.mkdir(parents=True, exist_ok=True)
                    (obj.root / "complete").unlink(missing_ok=True)
                for entry, target in zip(manifest.files, targets, strict=True):
                    self._allocate(target, entry.size_bytes)
                _write_atomically(obj.root / "manifest.json", manifest.to_json())
            except BaseException:
                if not reused:
                    shutil.rmtree(obj.root, ignore_errors=True)
                raise
            if reused:
                obj.held = self._held_on_disk(obj)
            with self._lock:
                self._objects[sha] = obj
        if len(obj.held) == manifest.chunk_count:  # 0 bytes, or every byte on disk already
            self._finish(obj)
        with self._lock:
            return obj.state()

    def _targets(self, obj: _Object) -> list[Path]:
        # FileEntry's validation keeps every path below data/; this checks it again the filesystem's way.
        base = obj.data_dir.resolve()
        targets = []
        for entry in obj.manifest.files:
            target = obj.data_dir / entry.path
            if not target.resolve().is_relative_to(base):
                raise ManifestError(f"{obj.manifest.name}: file {entry.path!r} would lie outside the object")
            targets.append(target)
        return targets

    @staticmethod
    def _allocate(target: Path, size_bytes: int) -> None:
        with _os_errors(target, f"allocate {size_bytes} bytes"):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, _WRITE_FLAGS, 0o644)
            try:
                if size_bytes:
                    try:
                        os.posix_fallocate(fd, 0, size_bytes)
                    except OSError as error:
                        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                os.ftruncate(fd, size_bytes)  # a file an earlier try left longer
            finally:
                os.close(fd)

    def get(self, sha: str) -> ObjectState | None:
        with self._lock:
            obj = self._objects.get(sha)
            return None if obj is None else obj.state()

    def objects(self) -> list[ObjectState]:
        with self._lock:
            return [obj.state() for obj in self._objects.values()]

    def remove(self, sha: str) -> None:
        """Delete the object and its files; an object that is not there is no error."""
        if not _SHA256.fullmatch(sha):
            raise FabricError(f"not an object id (64 lowercase hex digits): {sha!r}")
        with self._lock:
            self._objects.pop(sha, None)
        path = self._objects_dir / sha
        if not path.exists() and not path.is_symlink():
            return
        doomed = self._trash / f"{sha}.{uuid.uuid4().hex}"
        with _os_errors(path, "remove the object"):
            os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def data_path(self, sha: str) -> Path:
        """The object's file when it is one file at the top level (a GGUF), else its data directory."""
        obj = self._object(sha)
        files = obj.manifest.files
        if len(files) == 1 and "/" not in files[0].path:
            return obj.path(0)
        return obj.data_dir

    def _object(self, sha: str) -> _Object:
        with self._lock:
            obj = self._objects.get(sha)
        if obj is None:
            raise FabricError(f"no object {sha!r} in the store at {self.root}")
        return obj

    # -- chunks ----------------------------------------------------------------------------------------------

    def put_chunk(
        self, sha: str, index: int, data: bytes | bytearray | memoryview, *, on_held: Callable[[], None] | None = None
    ) -> bool:
        """Write chunk ``index`` of object ``sha``; True when it completed the object (which was then read back
        from disk and hashed right). ChunkRejected for bytes that are not the chunk (nothing is written), or for
        a completed object whose bytes on disk hash wrong (the chunks that do are missing again). ``on_held`` is
        called once the chunk can be read, before the whole object is read back: a site passes it on meanwhile."""
        obj = self._object(sha)
        manifest = obj.manifest
        if not 0 <= index < manifest.chunk_count:
            raise FabricError(f"chunk {index} out of range: {manifest.name} has {manifest.chunk_count} chunks")
        with self._lock:
            if index in obj.held:
                return False
        offset, length = manifest.chunk_range(index)
        view = memoryview(data).cast("B")
        if len(view) != length:
            raise ChunkRejected(f"chunk {index} of {manifest.name}: {len(view)} bytes, expected {length}")
        digest = hashlib.sha256(view).hexdigest()
        if digest != manifest.chunks[index]:
            raise ChunkRejected(
                f"chunk {index} of {manifest.name}: its bytes hash to {digest}, expected {manifest.chunks[index]}"
            )
        self._write(obj, index, offset, view)
        with self._lock:
            if index in obj.held:
                return False
            obj.held.add(index)
            last = len(obj.held) == manifest.chunk_count  # only the thread that adds the last chunk sees it
        if on_held is not None:
            on_held()
        return self._finish(obj) if last else False

    def _write(self, obj: _Object, index: int, offset: int, view: memoryview) -> None:
        position = 0
        for file_index, at, length in obj.manifest.file_spans(offset, len(view)):
            target = obj.path(file_index)
            piece = view[position : position + length]
            with _os_errors(target, f"write chunk {index}"):
                # O_CREAT makes a file again, never a directory: a removed object does not come back.
                fd = os.open(target, _WRITE_FLAGS, 0o644)
                try:
                    while piece:
                        written = os.pwrite(fd, piece, at)
                        piece, at = piece[written:], at + written
                finally:
                    os.close(fd)
            position += length

    def _finish(self, obj: _Object) -> bool:
        """Read the whole object back from disk: complete it, or drop the chunks that hash wrong there."""
        manifest = obj.manifest
        with obj.readback:
            whole = self._hash_files(obj, fsync=True)
            if whole == manifest.sha256:
                _write_atomically(obj.root / "complete", f"{whole}\n".encode())
                with self._lock:
                    obj.complete, obj.verified_sha256 = True, whole
                return True
            good = self._held_on_disk(obj)
            with self._lock:
                dropped = sorted(obj.held - good)
                obj.held &= good
                obj.verified_sha256 = whole
        if not dropped:
            raise ManifestError(
                f"{manifest.name}: every chunk hashes right, but the whole object hashes to {whole}, not "
                f"{manifest.sha256}: the manifest contradicts itself"
            )
        shown = ", ".join(str(i) for i in dropped[:10]) + (", ..." if len(dropped) > 10 else "")
        raise ChunkRejected(
            f"{manifest.name}: read back from disk it hashes to {whole}, not {manifest.sha256}; "
            f"{len(dropped)} chunks there were wrong and are missing again ({shown})"
        )

    def read_chunk(self, sha: str, index: int) -> bytes:
        """The bytes of a held chunk."""
        obj = self._object(sha)
        manifest = obj.manifest
        with self._lock:
            if index not in obj.held:
                raise FabricError(f"chunk {index} of {manifest.name} is not held")
        offset, length = manifest.chunk_range(index)
        parts = []
        for file_index, at, n in manifest.file_spans(offset, length):
            target = obj.path(file_index)
            with _os_errors(target, f"read chunk {index}"):
                fd = os.open(target, _READ_FLAGS)
                try:
                    part = _pread(fd, n, at)
                finally:
                    os.close(fd)
            if len(part) != n:
                raise FabricError(f"{target}: shorter than its manifest says; chunk {index} cannot be read")
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def find_chunk(self, chunk_sha256: str) -> tuple[str, int] | None:
        """(object sha256, index) of a held chunk with these bytes, if any object holds one."""
        with self._lock:
            for sha, obj in self._objects.items():
                index = obj.first.get(chunk_sha256)
                if index is None:
                    continue
                if index in obj.held:
                    return sha, index
                if chunk_sha256 in obj.repeated:
                    for other, chunk in enumerate(obj.manifest.chunks):
                        if chunk == chunk_sha256 and other in obj.held:
                            return sha, other
        return None

    # -- reading back ----------------------------------------------------------------------------------------

    def verify(self, sha: str) -> str:
        """Hash the object's files on disk now; the hash is returned and kept as its ``verified_sha256``. When it
        is not the manifest's, the chunks that hash wrong on disk are no longer held and the object is no
        longer complete, so fetching the missing chunks again repairs it."""
        obj = self._object(sha)
        with obj.readback:
            whole = self._hash_files(obj, fsync=False)
            if whole == obj.manifest.sha256:
                with self._lock:
                    # Every chunk held but not complete: the marker could not be written when the last came.
                    promote = not obj.complete and len(obj.held) == obj.manifest.chunk_count
                if promote:
                    _write_atomically(obj.root / "complete", f"{whole}\n".encode())
                with self._lock:
                    obj.complete = obj.complete or promote
                    obj.verified_sha256 = whole
                return whole
            with _os_errors(obj.root, "mark the object incomplete"):
                (obj.root / "complete").unlink(missing_ok=True)
            good = self._held_on_disk(obj)
            with self._lock:
                obj.held &= good
                obj.complete, obj.verified_sha256 = False, whole
        log.warning("fabric: %s (%s) hashes to %s on disk; it is incomplete again", obj.manifest.name, sha, whole)
        return whole

    @staticmethod
    def _hash_files(obj: _Object, *, fsync: bool) -> str:
        """SHA-256 of the bytes the object's files hold, in manifest order (a missing file holds none)."""
        hasher = StreamHasher()
        buffer = bytearray(READ_BYTES)
        view = memoryview(buffer)
        for file_index in range(len(obj.manifest.files)):
            target = obj.path(file_index)
            with _os_errors(target, "read it back"):
                try:
                    fd = os.open(target, _READ_FLAGS)
                except FileNotFoundError:
                    continue
                with open(fd, "rb", buffering=0, closefd=True) as stream:
                    while n := stream.readinto(view):
                        hasher.update(view[:n])
                    if fsync:
                        os.fsync(fd)
        return hasher.finish()[0]

    @staticmethod
    def _held_on_disk(obj: _Object) -> set[int]:
        """The chunks whose bytes on disk hash right."""
        manifest = obj.manifest
        held = set()
        with _Reader(obj) as reader:
            for index, expected in enumerate(manifest.chunks):
                offset, length = manifest.chunk_range(index)
                digest = hashlib.sha256()
                for file_index, at, n in manifest.file_spans(offset, length):
                    data = reader.read(file_index, at, n)
                    if data is None:
                        break
                    digest.update(data)
                else:
                    if digest.hexdigest() == expected:
                        held.add(index)
        return held
