"""Manifests: built from real files in one pass, and parsed hard when they come from the network."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane.fabric import DEFAULT_CHUNK_BYTES, FileEntry, Manifest, ManifestError, build_manifest

CHUNK = 4096
FAST = settings(max_examples=150, deadline=None)


def make_tree(root: Path) -> dict[str, bytes]:
    """A directory with nested files, an empty file, and files whose boundaries fall inside chunks."""
    files = {
        "model-00001.safetensors": os.urandom(3 * CHUNK + 100),
        "config.json": b'{"layers": 2}\n',
        "empty": b"",
        "sub/deeper/tokenizer.model": os.urandom(CHUNK - 1),
        "sub/z.bin": os.urandom(2 * CHUNK + 7),
        "a-b/x": os.urandom(50),  # '-' sorts before '/', so this comes before "a/..." would
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "sub" / "empty-dir").mkdir()
    return files


def chunk_hashes(stream: bytes, chunk_bytes: int) -> list[str]:
    return [hashlib.sha256(stream[i : i + chunk_bytes]).hexdigest() for i in range(0, len(stream), chunk_bytes)]


def test_a_single_file_is_one_entry_named_by_its_basename_and_hashes_as_sha256sum(tmp_path: Path) -> None:
    path = tmp_path / "llama.gguf"
    data = os.urandom(5 * CHUNK + 123)
    path.write_bytes(data)
    seen: list[int] = []

    manifest = build_manifest(path, "llama", chunk_bytes=CHUNK, progress=seen.append)

    sha256sum = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout
    assert manifest.sha256 == sha256sum.split()[0] == hashlib.sha256(data).hexdigest()
    assert manifest.files == [FileEntry(path="llama.gguf", size_bytes=len(data))]
    assert manifest.size_bytes == len(data)
    assert manifest.chunks == chunk_hashes(data, CHUNK)
    assert manifest.chunk_count == 6
    assert manifest.chunk_range(5) == (5 * CHUNK, 123)
    assert seen and seen[-1] == len(data) and seen == sorted(seen)


def test_a_directory_is_its_regular_files_sorted_by_path_with_chunks_across_file_boundaries(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "model")
    seen: list[int] = []

    manifest = build_manifest(tmp_path / "model", "model", chunk_bytes=CHUNK, progress=seen.append)

    order = sorted(files)
    assert [entry.path for entry in manifest.files] == order
    assert order[0] == "a-b/x"
    assert [entry.size_bytes for entry in manifest.files] == [len(files[p]) for p in order]
    stream = b"".join(files[p] for p in order)
    assert manifest.sha256 == hashlib.sha256(stream).hexdigest()
    assert manifest.size_bytes == len(stream)
    assert manifest.chunks == chunk_hashes(stream, CHUNK)
    assert seen[-1] == len(stream)
    # Some chunk really does span a boundary, and spans() cuts it the way the stream is laid out.
    spanning = [i for i in range(manifest.chunk_count) if len(manifest.spans(*manifest.chunk_range(i))) > 1]
    assert spanning
    for index in range(manifest.chunk_count):
        offset, length = manifest.chunk_range(index)
        pieces = [files[entry.path][at : at + n] for entry, at, n in manifest.spans(offset, length)]
        assert b"".join(pieces) == stream[offset : offset + length]
        assert all(n > 0 for _, _, n in manifest.spans(offset, length))


def test_spans_skip_empty_files_and_refuse_ranges_outside_the_stream() -> None:
    manifest = Manifest(
        name="m",
        sha256=hashlib.sha256(b"x" * 10).hexdigest(),
        size_bytes=10,
        chunk_bytes=CHUNK,
        files=[FileEntry(path="a", size_bytes=0), FileEntry(path="b", size_bytes=4), FileEntry(path="c", size_bytes=0),
               FileEntry(path="d", size_bytes=6)],
        chunks=[hashlib.sha256(b"x" * 10).hexdigest()],
    )  # fmt: skip
    assert [(e.path, at, n) for e, at, n in manifest.spans(0, 10)] == [("b", 0, 4), ("d", 0, 6)]
    assert [(e.path, at, n) for e, at, n in manifest.spans(4, 3)] == [("d", 0, 3)]
    assert manifest.spans(10, 0) == []
    with pytest.raises(ValueError):
        manifest.spans(8, 3)
    with pytest.raises(IndexError):
        manifest.chunk_range(1)


def test_an_empty_file_is_an_object_of_no_bytes_and_no_chunks(tmp_path: Path) -> None:
    (tmp_path / "nothing").write_bytes(b"")
    manifest = build_manifest(tmp_path / "nothing", "nothing")
    assert manifest.size_bytes == 0 and manifest.chunks == [] and manifest.chunk_bytes == DEFAULT_CHUNK_BYTES
    assert manifest.sha256 == hashlib.sha256(b"").hexdigest()


def test_a_manifest_goes_through_json_unchanged(tmp_path: Path) -> None:
    make_tree(tmp_path)
    manifest = build_manifest(tmp_path, "tree", chunk_bytes=CHUNK)
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert json.loads(manifest.to_json())["files"][0] == {"path": "a-b/x", "size_bytes": 50}


def test_build_refuses_what_cannot_be_an_object_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ManifestError, match="link: is a symlink"):
        build_manifest(tmp_path / "link", "m")
    with pytest.raises(ManifestError, match="missing"):
        build_manifest(tmp_path / "missing", "m")

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a").write_bytes(b"a")
    (tree / "sub" / "inner").symlink_to(tmp_path / "real")
    with pytest.raises(ManifestError, match="inner: is a symlink"):
        build_manifest(tree, "m")
    (tree / "sub" / "inner").unlink()
    os.mkfifo(tree / "sub" / "fifo")
    with pytest.raises(ManifestError, match="fifo: not a regular file"):
        build_manifest(tree, "m")

    (tmp_path / "empty" / "also-empty").mkdir(parents=True)
    with pytest.raises(ManifestError, match="holds no files"):
        build_manifest(tmp_path / "empty", "m")
    with pytest.raises(ManifestError, match="chunk_bytes"):
        build_manifest(tmp_path / "real", "m", chunk_bytes=100)
    with pytest.raises(ManifestError, match="name"):
        build_manifest(tmp_path / "real", "bad\nname")


# -- manifests from the network ---------------------------------------------------------------------------------


def valid(**changes: Any) -> dict[str, Any]:
    """A small valid manifest as JSON data: two files, three chunks."""
    data = b"a" * 5000 + b"b" * 5000
    document: dict[str, Any] = {
        "name": "tiny",
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "chunk_bytes": CHUNK,
        "files": [{"path": "dir/a.bin", "size_bytes": 5000}, {"path": "b.bin", "size_bytes": 5000}],
        "chunks": chunk_hashes(data, CHUNK),
    }
    document.update(changes)
    return document


def parse(document: Any) -> Manifest:
    return Manifest.from_json(json.dumps(document).encode())


def with_path(path: str) -> dict[str, Any]:
    return valid(files=[{"path": path, "size_bytes": 5000}, {"path": "b.bin", "size_bytes": 5000}])


def test_the_valid_manifest_parses() -> None:
    manifest = parse(valid())
    assert manifest.chunk_count == 3 and manifest.files[0].path == "dir/a.bin"


@pytest.mark.parametrize(
    "path",
    [
        "../x", "/etc/passwd", "a/../../b", "a\\b", "a/./b", "a\x00b", ".", "..", "", "a//b", "a/", "./a",
        "a\nb", "a\x7fb", "a\x85b", "x" * 256, "a/" * 2049 + "b", "a/..", "\\\\server\\share",
    ],
)  # fmt: skip
def test_paths_that_could_leave_the_object_are_refused(path: str) -> None:
    with pytest.raises(ManifestError, match=r"manifest: files\.0\.path: "):
        parse(with_path(path))


@pytest.mark.parametrize("path", ["a", "..a", "a..", ".hidden", "dir/.x/y", "ünïcode/名前.bin", "x" * 255, "a b"])
def test_paths_that_stay_inside_are_accepted(path: str) -> None:
    assert parse(with_path(path)).files[0].path == path


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"chunks": valid()["chunks"][:2]}, "make 3 chunks, but 2 are listed"),
        ({"chunks": [*valid()["chunks"], "0" * 64]}, "make 3 chunks, but 4 are listed"),
        ({"size_bytes": 10001}, "the files add up to 10000 bytes"),
        ({"chunk_bytes": 4095}, "chunk_bytes: "),
        ({"chunk_bytes": 64 * 1024 * 1024 + 1}, "chunk_bytes: "),
        ({"chunk_bytes": 4096.0}, "chunk_bytes: "),
        ({"size_bytes": "10000"}, "size_bytes: "),
        ({"size_bytes": True}, "size_bytes: "),
        ({"sha256": "A" * 64}, "sha256: "),
        ({"sha256": "a" * 63}, "sha256: "),
        ({"chunks": [*valid()["chunks"][:2], "g" * 64]}, r"chunks\.2: "),
        ({"name": ""}, "name: "),
        ({"name": "x" * 201}, "name: "),
        ({"name": "a\x1b[31mred"}, "name: "),
        ({"files": []}, "files: "),
        ({"extra": 1}, "extra: "),
        ({"files": [{"path": "a", "size_bytes": 5000}, {"path": "a", "size_bytes": 5000}]}, "appears twice"),
        ({"files": [{"path": "a", "size_bytes": 5000}, {"path": "a/b", "size_bytes": 5000}]}, "'a' is a file"),
        ({"files": [{"path": "a", "size_bytes": -1}, {"path": "b", "size_bytes": 10001}]}, r"files\.0\.size_bytes"),
        ({"files": [{"path": "a", "size_bytes": 10000, "mode": 420}]}, r"files\.0\.mode"),
    ],
)
def test_a_wrong_manifest_is_refused_naming_the_field(changes: dict[str, Any], where: str) -> None:
    with pytest.raises(ManifestError, match=rf"^manifest: .*{where}"):
        parse(valid(**changes))


def test_a_manifest_that_contradicts_itself_cheaply_is_refused() -> None:
    one = b"x" * 100
    with pytest.raises(ManifestError, match="one chunk"):
        parse(valid(size_bytes=100, files=[{"path": "a", "size_bytes": 100}], chunks=["0" * 64],
                    sha256=hashlib.sha256(one).hexdigest()))  # fmt: skip
    with pytest.raises(ManifestError, match="0 bytes"):
        parse(valid(size_bytes=0, files=[{"path": "a", "size_bytes": 0}], chunks=[], sha256="0" * 64))


def test_a_manifest_that_is_not_json_says_so() -> None:
    with pytest.raises(ManifestError, match=r"^manifest: not valid JSON"):
        Manifest.from_json(b'{"name": "x"')
    with pytest.raises(ManifestError, match=r"^manifest: not valid JSON"):
        Manifest.from_json(b"\xff\xfe")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


def parses_or_refuses(raw: bytes) -> Manifest | None:
    try:
        return Manifest.from_json(raw)
    except ManifestError:
        return None


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_manifest_error_at_worst(raw: bytes) -> None:
    parses_or_refuses(raw)


@FAST
@given(json_values)
def test_arbitrary_json_is_a_manifest_error_at_worst(value: Any) -> None:
    assert parses_or_refuses(json.dumps(value).encode()) is None


@FAST
@given(st.sampled_from(sorted(valid())), json_values)
def test_a_valid_manifest_with_one_field_replaced_is_a_manifest_error_at_worst(key: str, value: Any) -> None:
    parses_or_refuses(json.dumps(valid(**{key: value})).encode())


@FAST
@given(
    st.text(max_size=40)
    | st.lists(st.sampled_from(["a", ".", "..", "", "/", "\\", "\x00", "é"]), max_size=8).map("".join)
)
def test_any_accepted_path_stays_inside_the_object(path: str) -> None:
    manifest = parses_or_refuses(json.dumps(with_path(path)).encode())
    if manifest is None:
        return
    accepted = manifest.files[0].path
    parts = PurePosixPath(accepted).parts
    assert not PurePosixPath(accepted).is_absolute()
    assert ".." not in parts and "." not in accepted.split("/") and "" not in accepted.split("/")
    assert "\\" not in accepted and not any(ord(c) < 0x20 for c in accepted)
