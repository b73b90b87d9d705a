"""A site's fabric endpoints over real sockets under hostile input: chunks that do not verify, indexes and headers
that name nothing, manifests that would write outside the store or past its limit. Only 2xx and 4xx come back
(507 for a full store), never a 500, and nothing lands outside the store's root."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeplane.fabric import FABRIC_POP_HEADER, FabricNode, Manifest, ObjectStore, build_manifest
from edgeplane.fleet import load_default_fleet
from edgeplane.planning import fabric_links
from edgeplane.web import json_errors

CHUNK = 4096
FLEET = load_default_fleet()
POPS = [pop.code for pop in FLEET.pops]
LINKS = fabric_links(FLEET, 0.001)

Call = Callable[..., Awaitable[tuple[int, Any]]]


@asynccontextmanager
async def serving(store: ObjectStore) -> AsyncIterator[tuple[FabricNode, Call]]:
    node = FabricNode(POPS[0], store, LINKS, pops=POPS)
    app = web.Application(middlewares=[json_errors])
    app.add_routes(node.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    session = aiohttp.ClientSession()

    async def call(method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with session.request(method, base + path, **kwargs) as response:
            raw = await response.read()
            if response.content_type == "application/json":
                return response.status, json.loads(raw)
            return response.status, raw

    try:
        yield node, call
    finally:
        await session.close()
        await runner.cleanup()
        await node.close()


def make_object(tmp: Path, size: int) -> tuple[Manifest, list[bytes]]:
    path = tmp / "model.bin"
    data = os.urandom(size)
    path.write_bytes(data)
    manifest = build_manifest(path, "model", chunk_bytes=CHUNK)
    return manifest, [data[i : i + CHUNK] for i in range(0, size, CHUNK)]


def assert_error(status: int, body: Any, expected: int, code: str | None = None) -> dict[str, Any]:
    assert status == expected, body
    error = body["error"]
    assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str)
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*")}


async def test_chunks_put_and_read_back_and_hostile_requests_refused(tmp_path: Path) -> None:
    manifest, chunks = make_object(tmp_path, 3 * CHUNK + 100)
    sha = manifest.sha256
    async with serving(ObjectStore(tmp_path / "store")) as (node, call):
        status, body = await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        assert status == 200 and body["sha256"] == sha and body["state"] == "waiting", body

        # Wrong bytes: refused, and the chunk stays missing.
        status, body = await call("PUT", f"/fabric/chunks/{sha}/0", data=b"x" * CHUNK)
        assert_error(status, body, 422, "chunk_rejected")
        status, body = await call("PUT", f"/fabric/chunks/{sha}/1", data=chunks[1] + b"extra")
        assert_error(status, body, 422, "chunk_rejected")
        status, body = await call("GET", f"/api/fabric/objects/{sha}")
        assert status == 200 and body["missing"] == [0, 1, 2, 3]

        # Not held yet: a short wait, then 404.
        status, body = await call("GET", f"/fabric/chunks/{sha}/2", params={"wait": "0.2"})
        assert_error(status, body, 404, "chunk_not_held")

        answers = []
        for index in (3, 0, 2, 1):
            status, body = await call("PUT", f"/fabric/chunks/{sha}/{index}", data=chunks[index])
            assert status == 200, body
            answers.append(body["complete"])
        assert answers == [False, False, False, True]
        for index, chunk in enumerate(chunks):
            status, data = await call("GET", f"/fabric/chunks/{sha}/{index}", headers={FABRIC_POP_HEADER: POPS[1]})
            assert status == 200 and data == chunk
        status, body = await call("GET", "/api/fabric/objects")
        assert status == 200 and [row["sha256"] for row in body["objects"]] == [sha]
        assert body["objects"][0]["complete"] is True

        # Names that name nothing.
        names = [f"{'0' * 64}/0", f"{sha}/4", f"{sha}/-1", f"{sha}/abc", f"{sha}/1.0", f"{sha}/0x1", "../../etc/0"]
        for path in (f"/fabric/chunks/{name}" for name in names):
            for method in ("GET", "PUT"):
                status, body = await call(method, path, data=b"")
                assert status == 404 and "error" in body, (method, path, body)
        for method in ("GET", "DELETE"):
            status, body = await call(method, f"/api/fabric/objects/{'f' * 64}")
            assert_error(status, body, 404, "no_object")

        status, body = await call("GET", f"/fabric/chunks/{sha}/0", headers={FABRIC_POP_HEADER: "nowhere"})
        assert FABRIC_POP_HEADER in str(assert_error(status, body, 400))
        for wait in ("abc", "", "1e999x"):
            status, body = await call("GET", f"/fabric/chunks/{sha}/0", params={"wait": wait})
            assert_error(status, body, 400)
            assert "wait" in json.dumps(body)
        for wait in ("nan", "-5", "inf"):  # numbers, if odd ones: clamped, and the chunk is held
            status, data = await call("GET", f"/fabric/chunks/{sha}/0", params={"wait": wait})
            assert status == 200 and data == chunks[0], wait

        status, body = await call("DELETE", f"/api/fabric/objects/{sha}")
        assert status == 200 and body["removed"] == sha
        status, body = await call("GET", f"/fabric/chunks/{sha}/0")
        assert_error(status, body, 404, "no_object")
        assert repr(node).startswith(f"<FabricNode {POPS[0]} [Objects: 0")


async def test_a_manifest_past_the_store_limit_is_507(tmp_path: Path) -> None:
    manifest, _ = make_object(tmp_path, 2 * CHUNK)
    async with serving(ObjectStore(tmp_path / "store", limit_bytes=10)) as (_, call):
        status, body = await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        assert_error(status, body, 507, "store_full")
        status, body = await call("GET", "/api/fabric/objects")
        assert status == 200 and [(row["sha256"], row["state"], row["complete"]) for row in body["objects"]] == [
            (manifest.sha256, "failed", False)
        ]
        assert "limit" in body["objects"][0]["error"]
        assert not (tmp_path / "store" / "objects" / manifest.sha256).exists()


async def test_an_object_the_store_refused_can_be_looked_up(tmp_path: Path) -> None:
    manifest, _ = make_object(tmp_path, 2 * CHUNK)
    async with serving(ObjectStore(tmp_path / "store", limit_bytes=10)) as (_, call):
        status, _ = await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        assert status == 507
        status, body = await call("GET", f"/api/fabric/objects/{manifest.sha256}")
        assert status < 500, body


async def test_an_index_in_other_digits_is_no_chunk(tmp_path: Path) -> None:
    manifest, chunks = make_object(tmp_path, 2 * CHUNK)
    async with serving(ObjectStore(tmp_path / "store")) as (_, call):
        await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        await call("PUT", f"/fabric/chunks/{manifest.sha256}/1", data=chunks[1])
        for index in ("%C2%B2", "%EF%BC%91", "%D9%A1"):
            for method in ("GET", "PUT"):
                status, body = await call(method, f"/fabric/chunks/{manifest.sha256}/{index}", data=b"")
                assert status == 404, (method, index, body)


async def test_another_manifest_under_a_held_sha256_is_a_client_error(tmp_path: Path) -> None:
    manifest, _ = make_object(tmp_path, 2 * CHUNK)
    other = manifest.model_dump()
    other["files"] = [{"path": "elsewhere.bin", "size_bytes": manifest.size_bytes}]
    async with serving(ObjectStore(tmp_path / "store")) as (_, call):
        status, _ = await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        assert status == 200
        status, body = await call("POST", "/api/fabric/objects", json={"manifest": other})
        assert 400 <= status < 500, body


async def test_a_path_too_long_for_the_filesystem_is_a_client_error(tmp_path: Path) -> None:
    manifest, _ = make_object(tmp_path, CHUNK)
    raw = manifest.model_dump()
    raw["files"] = [{"path": "/".join(["d" * 250] * 16), "size_bytes": manifest.size_bytes}]
    async with serving(ObjectStore(tmp_path / "store")) as (_, call):
        status, body = await call("POST", "/api/fabric/objects", json={"manifest": raw})
        assert 400 <= status < 500, body


scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
hostile_paths = st.sampled_from(
    [
        "../../etc/x",
        "/etc/passwd",
        "a/../../b",
        "..",
        ".",
        "a//b",
        "a/",
        "a\\..\\b",
        "a\x00b",
        "\x1b[2J",
        "",
        "ok.bin",
        "d/ok.bin",
        "../" * 40 + "x",
        "a" * 300,
    ]
)
sizes = st.sampled_from([0, 1, CHUNK, 2**31, 2**53, 2**63, -1, 10**30, 64 * 2**20 * 10**6])


@st.composite
def manifests(draw: st.DrawFn) -> Any:
    """A valid small manifest's fields, some replaced by hostile ones; or anything at all."""
    if draw(st.booleans()):
        return draw(values)
    size = draw(st.sampled_from([1, CHUNK, CHUNK + 1]))
    chunks = ["ab" * 32] * -(-size // CHUNK)
    raw: dict[str, Any] = {
        "name": "model",
        "sha256": "ab" * 32 if len(chunks) == 1 else "cd" * 32,
        "size_bytes": size,
        "chunk_bytes": CHUNK,
        "files": [{"path": draw(hostile_paths), "size_bytes": size}],
        "chunks": chunks,
    }
    for key in draw(st.lists(st.sampled_from(sorted(raw)), max_size=3)):
        raw[key] = draw(values | sizes)
    if draw(st.booleans()):
        total = draw(sizes)
        raw["size_bytes"] = total
        raw["files"] = [{"path": draw(hostile_paths), "size_bytes": total}]
    return raw


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries({}, optional={"manifest": manifests(), "sources": values, "extra": values}))
def test_hostile_manifests_are_refused_and_write_nothing_outside_the_store(tmp_path: Path, body: Any) -> None:
    root = tmp_path / "store"
    before = files_under(tmp_path)

    async def run() -> tuple[int, Any]:
        async with serving(ObjectStore(root, limit_bytes=1 << 20)) as (_, call):
            return await call("POST", "/api/fabric/objects", json=body)

    status, answer = asyncio.run(run())
    assert 200 <= status < 500 or (status == 507 and answer["error"]["code"] == "store_full"), answer
    if status >= 400:
        assert_error(status, answer, status)
    outside = {path for path in files_under(tmp_path) - before if not path.is_relative_to(root)}
    assert outside == set()
    for path in files_under(root):
        assert path.resolve().is_relative_to(root.resolve())
