"""The object store on real files: chunks in any order, read back from disk, resumed after a restart."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgeplane.fabric import (
    ChunkRejected,
    FabricError,
    Manifest,
    ManifestError,
    ObjectStore,
    StoreFull,
    build_manifest,
)
from tests.fabric.test_manifest import CHUNK, make_tree


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, dict[str, bytes], Manifest]:
    files = make_tree(tmp_path / "source")
    return tmp_path / "source", files, build_manifest(tmp_path / "source", "tree", chunk_bytes=CHUNK)


def chunks_of(root: Path, manifest: Manifest) -> list[bytes]:
    stream = b"".join((root / entry.path).read_bytes() for entry in manifest.files)
    return [stream[i : i + manifest.chunk_bytes] for i in range(0, len(stream), manifest.chunk_bytes)]


def test_chunks_in_any_order_make_the_object_byte_for_byte(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    root, files, manifest = source
    chunks = chunks_of(root, manifest)
    store = ObjectStore(tmp_path / "fabric")
    state = store.add(manifest)
    assert state.held == frozenset() and not state.complete and state.missing() == list(range(len(chunks)))
    assert repr(state) == f"<ObjectState tree [partial: 0/{len(chunks)} chunks, 0.0 MB of 0.0 MB]>"

    order = list(range(len(chunks)))
    random.Random(16).shuffle(order)
    first = order[0]
    corrupt = bytearray(chunks[first])
    corrupt[0] ^= 1
    with pytest.raises(ChunkRejected, match=f"chunk {first} of tree: its bytes hash to"):
        store.put_chunk(manifest.sha256, first, bytes(corrupt))
    with pytest.raises(ChunkRejected, match=f"chunk {first} of tree: .* bytes, expected"):
        store.put_chunk(manifest.sha256, first, chunks[first] + b"x")
    assert store.get(manifest.sha256).held == frozenset()  # type: ignore[union-attr]

    completions = [store.put_chunk(manifest.sha256, index, chunks[index]) for index in order]
    assert completions == [False] * (len(chunks) - 1) + [True]
    assert store.put_chunk(manifest.sha256, first, chunks[first]) is False  # held already: nothing to do

    for relative, data in files.items():
        assert (tmp_path / "fabric" / "objects" / manifest.sha256 / "data" / relative).read_bytes() == data
    state = store.get(manifest.sha256)
    assert state is not None and state.complete and state.verified_sha256 == manifest.sha256
    assert state.bytes_held == manifest.size_bytes and state.missing() == []
    assert repr(state).startswith(f"<ObjectState tree [verified: {len(chunks)}/{len(chunks)} chunks")
    assert state.to_json() == {
        "name": "tree", "sha256": manifest.sha256, "size_bytes": manifest.size_bytes, "chunk_count": len(chunks),
        "chunks_held": len(chunks), "bytes_held": manifest.size_bytes, "complete": True,
        "verified_sha256": manifest.sha256,
    }  # fmt: skip
    assert store.verify(manifest.sha256) == manifest.sha256
    assert store.data_path(manifest.sha256) == tmp_path / "fabric" / "objects" / manifest.sha256 / "data"
    assert (tmp_path / "fabric" / "objects" / manifest.sha256 / "complete").read_text() == manifest.sha256 + "\n"
    assert [store.read_chunk(manifest.sha256, i) for i in range(len(chunks))] == chunks
    assert store.find_chunk(manifest.chunks[2]) == (manifest.sha256, 2)
    assert store.find_chunk("0" * 64) is None
    assert repr(store).endswith("[1 objects: 1 complete, 0 partial | 0.0 MB of no limit]>")


def test_a_single_file_object_is_a_normal_file(tmp_path: Path) -> None:
    data = os.urandom(10 * CHUNK + 1)
    (tmp_path / "llama.gguf").write_bytes(data)
    manifest = build_manifest(tmp_path / "llama.gguf", "llama.gguf", chunk_bytes=CHUNK)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    done = [store.put_chunk(manifest.sha256, i, data[i * CHUNK : (i + 1) * CHUNK]) for i in range(11)]
    assert done.count(True) == 1
    path = store.data_path(manifest.sha256)
    assert path.name == "llama.gguf" and path.read_bytes() == data
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest.sha256


def test_a_store_reopened_holds_the_chunks_on_disk_that_hash_right(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    root, _, manifest = source
    chunks = chunks_of(root, manifest)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    half = set(range(0, len(chunks), 2))
    for index in sorted(half):
        store.put_chunk(manifest.sha256, index, memoryview(chunks[index]))

    assert ObjectStore(tmp_path / "fabric").get(manifest.sha256).held == half  # type: ignore[union-attr]

    # One held chunk damaged on disk while the store was down is simply not held after the restart.
    damaged = 4
    entry, at, _ = manifest.spans(*manifest.chunk_range(damaged))[0]
    with open(tmp_path / "fabric" / "objects" / manifest.sha256 / "data" / entry.path, "r+b") as file:
        file.seek(at)
        file.write(b"\xff")
    reopened = ObjectStore(tmp_path / "fabric")
    state = reopened.get(manifest.sha256)
    assert state is not None and state.held == half - {damaged} and not state.complete
    assert reopened.find_chunk(manifest.chunks[damaged]) is None
    with pytest.raises(FabricError, match=f"chunk {damaged} of tree is not held"):
        reopened.read_chunk(manifest.sha256, damaged)

    assert [reopened.put_chunk(manifest.sha256, i, chunks[i]) for i in state.missing()][-1] is True
    after_restart = ObjectStore(tmp_path / "fabric").get(manifest.sha256)
    assert after_restart is not None and after_restart.complete and after_restart.verified_sha256 is None
    assert repr(after_restart).startswith("<ObjectState tree [complete: ")

    # Every chunk on disk but no marker (the store stopped while reading the object back): completed on opening.
    (tmp_path / "fabric" / "objects" / manifest.sha256 / "complete").unlink()
    finished = ObjectStore(tmp_path / "fabric").get(manifest.sha256)
    assert finished is not None and finished.complete and finished.verified_sha256 == manifest.sha256
    assert (tmp_path / "fabric" / "objects" / manifest.sha256 / "complete").exists()


def test_verify_finds_a_damaged_complete_object_and_the_damaged_chunk_can_be_fetched_again(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    root, _, manifest = source
    chunks = chunks_of(root, manifest)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    for index, chunk in enumerate(chunks):
        store.put_chunk(manifest.sha256, index, chunk)
    entry, at, _ = manifest.spans(*manifest.chunk_range(1))[0]
    with open(tmp_path / "fabric" / "objects" / manifest.sha256 / "data" / entry.path, "r+b") as file:
        file.seek(at + 10)
        file.write(b"rot")

    found = store.verify(manifest.sha256)

    assert found != manifest.sha256
    state = store.get(manifest.sha256)
    assert state is not None and not state.complete and state.missing() == [1] and state.verified_sha256 == found
    assert repr(state).startswith("<ObjectState tree [corrupt: ")
    assert not (tmp_path / "fabric" / "objects" / manifest.sha256 / "complete").exists()
    assert store.put_chunk(manifest.sha256, 1, chunks[1]) is True
    assert store.verify(manifest.sha256) == manifest.sha256


def test_bytes_damaged_before_the_last_chunk_are_found_when_it_arrives(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    root, _, manifest = source
    chunks = chunks_of(root, manifest)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    for index in range(len(chunks) - 1):
        store.put_chunk(manifest.sha256, index, chunks[index])
    entry, _, _ = manifest.spans(*manifest.chunk_range(0))[0]
    with open(tmp_path / "fabric" / "objects" / manifest.sha256 / "data" / entry.path, "r+b") as file:
        file.write(b"\x00\x01")

    with pytest.raises(ChunkRejected, match=r"1 chunks there were wrong and are missing again \(0\)"):
        store.put_chunk(manifest.sha256, len(chunks) - 1, chunks[-1])

    assert store.get(manifest.sha256).missing() == [0]  # type: ignore[union-attr]
    assert store.put_chunk(manifest.sha256, 0, chunks[0]) is True


def test_a_manifest_whose_chunks_do_not_make_its_sha256_never_completes(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK)
    (tmp_path / "f").write_bytes(data)
    honest = build_manifest(tmp_path / "f", "liar", chunk_bytes=CHUNK)
    liar = honest.model_copy(update={"sha256": "ab" * 32})
    store = ObjectStore(tmp_path / "fabric")
    store.add(liar)
    store.put_chunk(liar.sha256, 0, data[:CHUNK])
    store.put_chunk(liar.sha256, 1, data[CHUNK : 2 * CHUNK])
    with pytest.raises(ManifestError, match="the manifest contradicts itself"):
        store.put_chunk(liar.sha256, 2, data[2 * CHUNK :])
    assert not store.get(liar.sha256).complete  # type: ignore[union-attr]


def test_an_object_over_the_limit_is_refused_and_leaves_nothing(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    _, _, manifest = source
    store = ObjectStore(tmp_path / "fabric", limit_bytes=manifest.size_bytes - 1)
    with pytest.raises(StoreFull, match=rf"tree needs .*\({manifest.size_bytes} bytes\); the store holds 0.0 MB"):
        store.add(manifest)
    assert store.get(manifest.sha256) is None and store.objects() == []
    assert list((tmp_path / "fabric" / "objects").iterdir()) == []

    roomy = ObjectStore(tmp_path / "fabric", limit_bytes=manifest.size_bytes + 10)
    roomy.add(manifest)
    (tmp_path / "small").write_bytes(b"x" * 11)
    small = build_manifest(tmp_path / "small", "small", chunk_bytes=CHUNK)
    with pytest.raises(StoreFull, match=f"holds .* of its .* limit \\({manifest.size_bytes} of"):
        roomy.add(small)
    assert [state.manifest.name for state in roomy.objects()] == ["tree"]


def test_add_is_idempotent_and_an_empty_object_is_complete_at_once(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    _, _, manifest = source
    store = ObjectStore(tmp_path / "fabric")
    assert store.add(manifest) == store.add(manifest)
    # The same bytes under another name are the object held (names are labels); under other files they are not.
    assert store.add(manifest.model_copy(update={"name": "other"})).manifest.name == "tree"
    moved = [entry.model_copy(update={"path": f"x-{entry.path}"}) for entry in manifest.files]
    with pytest.raises(FabricError, match="held already as 'tree' under another manifest"):
        store.add(manifest.model_copy(update={"files": moved}))

    (tmp_path / "empty").write_bytes(b"")
    empty = build_manifest(tmp_path / "empty", "empty")
    state = store.add(empty)
    assert state.complete and state.verified_sha256 == empty.sha256 and state.bytes_held == 0
    assert store.data_path(empty.sha256).read_bytes() == b""
    assert [s.manifest.name for s in store.objects()] == ["tree", "empty"]


def test_wrong_calls_are_fabric_errors(tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]) -> None:
    _, _, manifest = source
    store = ObjectStore(tmp_path / "fabric")
    with pytest.raises(FabricError, match="no object"):
        store.put_chunk("0" * 64, 0, b"")
    store.add(manifest)
    with pytest.raises(FabricError, match="out of range"):
        store.put_chunk(manifest.sha256, manifest.chunk_count, b"")
    with pytest.raises(FabricError, match="out of range"):
        store.put_chunk(manifest.sha256, -1, b"")
    with pytest.raises(FabricError, match="not an object id"):
        store.remove("../../etc")
    with pytest.raises(FabricError, match="no object"):
        store.verify("1" * 64)


def test_remove_deletes_the_object(tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]) -> None:
    root, _, manifest = source
    chunks = chunks_of(root, manifest)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    store.put_chunk(manifest.sha256, 0, chunks[0])
    store.remove(manifest.sha256)
    store.remove(manifest.sha256)  # gone already: no error
    assert store.get(manifest.sha256) is None and store.find_chunk(manifest.chunks[0]) is None
    assert list((tmp_path / "fabric" / "objects").iterdir()) == []
    assert list((tmp_path / "fabric" / "trash").iterdir()) == []
    with pytest.raises(FabricError, match="no object"):
        store.put_chunk(manifest.sha256, 1, chunks[1])
    assert ObjectStore(tmp_path / "fabric").objects() == []


def test_what_is_not_an_object_on_disk_is_skipped_with_a_warning(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, manifest = source
    ObjectStore(tmp_path / "fabric").add(manifest)
    objects = tmp_path / "fabric" / "objects"
    (objects / ("e" * 64)).mkdir()
    (objects / ("e" * 64) / "manifest.json").write_bytes(b'{"name": ')
    (objects / ("f" * 64)).mkdir()  # an add() that stopped before its manifest
    (objects / "stray").write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="edgeplane.fabric"):
        store = ObjectStore(tmp_path / "fabric")

    assert [state.manifest.sha256 for state in store.objects()] == [manifest.sha256]
    messages = [record.getMessage() for record in caplog.records]
    assert any("e" * 64 in m and "not valid JSON" in m for m in messages)
    assert any("f" * 64 in m and "no manifest.json" in m for m in messages)
    assert any("stray: not an object directory" in m for m in messages)


def test_an_add_that_stopped_before_its_manifest_reuses_the_chunks_on_disk(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    root, _, manifest = source
    chunks = chunks_of(root, manifest)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    for index in (1, 2):
        store.put_chunk(manifest.sha256, index, chunks[index])
    (tmp_path / "fabric" / "objects" / manifest.sha256 / "manifest.json").write_bytes(b"garbage")

    reopened = ObjectStore(tmp_path / "fabric")
    assert reopened.objects() == []
    assert reopened.add(manifest).held == {1, 2}


def test_chunks_put_from_many_threads_complete_the_object_once(
    tmp_path: Path, source: tuple[Path, dict[str, bytes], Manifest]
) -> None:
    root, _, manifest = source
    chunks = chunks_of(root, manifest)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    work = [(i, chunk) for i, chunk in enumerate(chunks)] * 2
    random.Random(7).shuffle(work)
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda item: store.put_chunk(manifest.sha256, *item), work))
    assert done.count(True) == 1
    assert store.get(manifest.sha256).complete  # type: ignore[union-attr]


def test_a_big_object_in_big_chunks(tmp_path: Path) -> None:
    data = os.urandom(24 * 1024 * 1024 + 5)
    (tmp_path / "big.gguf").write_bytes(data)
    manifest = build_manifest(tmp_path / "big.gguf", "big.gguf", chunk_bytes=1024 * 1024)
    store = ObjectStore(tmp_path / "fabric")
    store.add(manifest)
    view = memoryview(data)
    done = [store.put_chunk(manifest.sha256, i, view[i * 1024 * 1024 : (i + 1) * 1024 * 1024]) for i in range(25)]
    assert done == [False] * 24 + [True]
    assert store.verify(manifest.sha256) == hashlib.sha256(data).hexdigest()
    assert repr(store.get(manifest.sha256)) == "<ObjectState big.gguf [verified: 25/25 chunks, 25.2 MB of 25.2 MB]>"
