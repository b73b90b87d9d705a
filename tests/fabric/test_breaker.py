"""Hostile and careless requests to a site's fabric endpoints that still get a 500 (or a wrong answer) instead of
the 4xx in OpenAI's error shape the project promises. Each test is a known bug, marked xfail(strict=True): it
passes (and so fails the suite) once the bug is fixed, and the mark should then go. Real sockets, no mocks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edgeplane.fabric import ObjectStore
from tests.fabric.test_node import CHUNK, assert_error, make_object, serving


async def test_an_index_of_thousands_of_digits_is_no_chunk(tmp_path: Path) -> None:
    manifest, chunks = make_object(tmp_path, 2 * CHUNK)
    async with serving(ObjectStore(tmp_path / "store")) as (_, call):
        await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        for index in ("9" * 5000, "0" * 5000):
            for method in ("GET", "PUT"):
                status, body = await call(method, f"/fabric/chunks/{manifest.sha256}/{index}", data=chunks[0])
                assert status == 404 and isinstance(body, dict) and "error" in body, (method, len(index), body)


async def test_the_last_chunk_of_a_self_contradicting_manifest_is_a_client_error(tmp_path: Path) -> None:
    # Every chunk's hash is right, but the object's sha256 is not the hash of the stream.
    manifest, chunks = make_object(tmp_path, 2 * CHUNK)
    raw = manifest.model_dump()
    raw["sha256"] = "ab" * 32
    async with serving(ObjectStore(tmp_path / "store")) as (_, call):
        status, body = await call("POST", "/api/fabric/objects", json={"manifest": raw})
        assert status == 200, body
        status, body = await call("PUT", f"/fabric/chunks/{raw['sha256']}/0", data=chunks[0])
        assert status == 200, body
        status, body = await call("PUT", f"/fabric/chunks/{raw['sha256']}/1", data=chunks[1])
        assert 400 <= status < 500, (status, body)
        assert_error(status, body, status)
        status, body = await call("GET", f"/api/fabric/objects/{raw['sha256']}")
        assert status == 200 and body["complete"] is False


async def _put_while(port: int, path: str, data: bytes, meanwhile: Any) -> tuple[int, bytes]:
    """PUT ``data`` over a raw socket, running ``meanwhile()`` after half the body was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(data)}\r\n"
        "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )
    half = len(data) // 2
    writer.write(head.encode() + data[:half])
    await writer.drain()
    await asyncio.sleep(0.3)
    await meanwhile()
    writer.write(data[half:])
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


async def test_a_chunk_put_while_its_object_is_removed_is_a_client_error(tmp_path: Path) -> None:
    manifest, chunks = make_object(tmp_path, 2 * CHUNK)
    sha = manifest.sha256
    async with serving(ObjectStore(tmp_path / "store")) as (_, call):
        status, _ = await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        assert status == 200
        port = _port_of(call)

        async def remove() -> None:
            status, body = await call("DELETE", f"/api/fabric/objects/{sha}")
            assert status == 200, body

        status, raw = await _put_while(port, f"/fabric/chunks/{sha}/0", chunks[0], remove)
        assert status in (404, 409, 410), (status, raw)
        assert b'"error"' in raw, raw
        assert not (tmp_path / "store" / "objects" / sha).exists()


def _port_of(call: Any) -> int:
    """The port the in-process node listens on, from the closure of ``serving``'s call."""
    base = next(cell.cell_contents for cell in call.__closure__ if isinstance(cell.cell_contents, str))
    return int(base.rsplit(":", 1)[1])


async def test_a_chunk_put_says_how_many_chunks_are_held_after_it(tmp_path: Path) -> None:
    manifest, chunks = make_object(tmp_path, 2 * CHUNK)
    async with serving(ObjectStore(tmp_path / "store")) as (_, call):
        await call("POST", "/api/fabric/objects", json={"manifest": manifest.model_dump()})
        status, body = await call("PUT", f"/fabric/chunks/{manifest.sha256}/0", data=chunks[0])
        assert status == 200 and body == {"complete": False, "chunks_held": 1}, body
        status, body = await call("PUT", f"/fabric/chunks/{manifest.sha256}/1", data=chunks[1])
        assert status == 200 and body == {"complete": True, "chunks_held": 2}, body
