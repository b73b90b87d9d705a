"""Connections held to their limits by serve(): request-head and body timeouts, connections per address,
and clients that leave before their answer, all over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp import web

from edgeplane._errors import ConfigError
from edgeplane.web import (
    ApiError,
    ConnectionGuard,
    ConnectionLimits,
    Listener,
    error_response,
    read_body,
    relay_stream,
    serve,
)
from tests._time import wait_for_async

# Short timeouts keep the tests quick; the bounds they are checked against are generous.
QUICK = ConnectionLimits(
    header_timeout_seconds=0.5, body_timeout_seconds=0.5, keepalive_timeout_seconds=1.0, linger_seconds=0.2
)
CLOSED_WITHIN_SECONDS = 10.0
COUNTS: web.AppKey[dict[str, int]] = web.AppKey("counts")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Served:
    port: int
    guard: ConnectionGuard
    counts: dict[str, int]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self, path: str) -> bytes:
        reader, writer = await self.connect()
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
            return await asyncio.wait_for(reader.read(), CLOSED_WITHIN_SECONDS)
        finally:
            writer.close()
            await writer.wait_closed()


async def _chunks() -> AsyncIterator[bytes]:
    await asyncio.sleep(0.05)
    yield b"data: {}\n\n"


def _app() -> web.Application:
    counts = {"in_flight": 0, "handled": 0}

    def counted(handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            counts["in_flight"] += 1
            try:
                return await handler(request)
            finally:
                counts["in_flight"] -= 1
                counts["handled"] += 1

        return handle

    async def plain(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.Response(text="ok")

    async def stream(request: web.Request) -> web.StreamResponse:
        return await relay_stream(request, 200, "text/event-stream", _chunks())

    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.5)  # three header timeouts: the head came, so the timer is off
        return web.Response(text="slow")

    async def echo(request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request)
        except ApiError as error:
            return error_response(error.status, error.message, type=error.type, code=error.code, headers=error.headers)
        return web.json_response({"bytes": len(body)})

    app = web.Application(client_max_size=1024)
    app[COUNTS] = counts
    app.router.add_get("/plain", counted(plain))
    app.router.add_get("/stream", counted(stream))
    app.router.add_get("/slow", counted(slow))
    app.router.add_post("/echo", counted(echo))
    return app


@contextlib.asynccontextmanager
async def served(limits: ConnectionLimits) -> AsyncIterator[Served]:
    app = _app()
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    listeners: list[Listener] = []
    task = asyncio.create_task(
        serve(app, "127.0.0.1", 0, on_ready=ready.set_result, stop=stop, on_listener=listeners.append, limits=limits)
    )
    try:
        url = await asyncio.wait_for(asyncio.shield(ready), 10)
        guard = listeners[0].guard
        assert guard is not None
        yield Served(int(url.rsplit(":", 1)[1]), guard, app[COUNTS])
    finally:
        stop.set()
        await task


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before it closed the connection (a reset counts as closed too)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        async with asyncio.timeout(CLOSED_WITHIN_SECONDS):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


PARTIAL = {
    "silence": b"",
    "partial-head": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Le",
    "partial-body": b'POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"model": ',
}


@pytest.mark.parametrize("kind", list(PARTIAL))
async def test_sixty_stalled_connections_are_all_closed_after_the_timeouts(kind: str) -> None:
    async with served(QUICK) as service:
        connections = [await service.connect() for _ in range(60)]
        for _, writer in connections:
            writer.write(PARTIAL[kind])
        answers = await asyncio.gather(*(_until_closed(reader) for reader, _ in connections))
        for _, writer in connections:
            await _close(writer)
        if kind == "partial-body":
            for answer in answers:  # the handler was told, and said so in OpenAI's shape
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408 ")
                assert b"\r\nConnection: close" in head
                assert orjson.loads(body)["error"] == {
                    "message": "The request body stopped arriving: nothing for 0.5 s after 10 bytes.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "request_timeout",
                }
        else:
            assert answers == [b""] * 60  # closed without a word: there was no request to answer
            assert service.guard.head_timeouts == 60
        assert service.counts["in_flight"] == 0
        # The server sees each close a moment after the client does.
        await wait_for_async("the server sees every connection closed", lambda: service.guard.open == 0)


async def test_a_head_sent_a_byte_at_a_time_is_closed_at_the_header_timeout() -> None:
    head = b"GET /plain HTTP/1.1\r\nHost: t\r\n" + b"X-Pad: " + b"a" * 400 + b"\r\n\r\n"
    async with served(QUICK) as service:
        reader, writer = await service.connect()
        sent = 0
        with contextlib.suppress(ConnectionError):
            for byte in head:  # 400 bytes 25 ms apart: ten seconds of activity, never a whole head
                writer.write(bytes([byte]))
                await writer.drain()
                sent += 1
                if reader.at_eof():
                    break
                await asyncio.sleep(0.025)
        assert await _until_closed(reader) == b""
        await _close(writer)
        assert sent < len(head)
        assert repr(service.guard).endswith("closed: 1 without a request head, 0 over the per-address limit]>")


async def test_a_body_dripped_a_byte_at_a_time_is_cut_at_the_whole_bodys_deadline() -> None:
    limits = ConnectionLimits(
        header_timeout_seconds=0.5, body_timeout_seconds=0.5, body_total_seconds=1.0, keepalive_timeout_seconds=1.0,
        linger_seconds=0.2,
    )  # fmt: skip
    async with served(limits) as service:
        reader, writer = await service.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        sent = 0
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):  # a byte every 0.1 s: never silent for the body timeout, never done
                writer.write(b"x")
                await writer.drain()
                sent += 1
                if reader.at_eof() or reader._buffer:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.1)
        answer = await _until_closed(reader)
        await _close(writer)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and sent < 1000
        assert b"not all of it in 1 s" in body


async def test_requests_within_the_limits_are_served_and_kept_alive_until_the_idle_timeout() -> None:
    async with served(QUICK) as service:
        reader, writer = await service.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: t\r\n")
        await asyncio.sleep(0.2)  # a pause shorter than the header timeout
        writer.write(b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN_SECONDS)
        assert head.startswith(b"HTTP/1.1 200 ") and await reader.readexactly(4) == b"slow"
        # The same connection takes a second request, with a body read by read_body.
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n" + b'{"a": "b"}\n')
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSED_WITHIN_SECONDS)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(13) == b'{"bytes": 11}'
        # Then it idles past the keep-alive timeout and is closed, not by the header timer.
        assert await _until_closed(reader) == b""
        await _close(writer)
        assert service.guard.head_timeouts == 0


async def test_a_body_beyond_the_applications_limit_is_refused_with_413() -> None:
    async with served(QUICK) as service:
        reader, writer = await service.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000)
        answer = await _until_closed(reader)
        await _close(writer)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")
        assert orjson.loads(body)["error"]["code"] == "request_too_large"


async def test_connections_beyond_the_per_address_limit_are_refused_at_once() -> None:
    limits = ConnectionLimits(header_timeout_seconds=60.0, max_connections_per_address=8)
    async with served(limits) as service:
        held = [await service.connect() for _ in range(8)]
        await wait_for_async("eight connections held", lambda: service.guard.open_from("127.0.0.1") == 8, every=0.01)
        extra = [await service.connect() for _ in range(3)]
        for reader, writer in extra:  # closed long before the 60 s header timeout could have done it
            writer.write(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n")
            assert await _until_closed(reader) == b""
            await _close(writer)
        assert service.guard.refused == 3 and service.guard.open_from("127.0.0.1") == 8
        reader, writer = held[0]  # those admitted are served as ever
        writer.write(b"GET /plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert (await _until_closed(reader)).endswith(b"\r\n\r\nok")
        for _, writer in held:
            await _close(writer)
        # Once they are gone, the address may connect again.
        await wait_for_async("the held connections gone", lambda: service.guard.open_from("127.0.0.1") == 0)
        assert (await service.get("/plain")).endswith(b"\r\n\r\nok")
        assert repr(service.guard) == (
            "<ConnectionGuard [open: 0 from 0 addresses | closed: 0 without a request head, "
            "3 over the per-address limit]>"
        )


LEAVING = {
    "plain": b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n",
    "stream": b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n",
    "mid-body": PARTIAL["partial-body"],
}


@pytest.mark.parametrize("kind", list(LEAVING))
async def test_a_thousand_clients_leaving_before_the_answer_log_no_traceback(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with served(ConnectionLimits()) as service:

        async def leave() -> None:
            _, writer = await service.connect()
            writer.write(LEAVING[kind])
            await writer.drain()
            await _close(writer)

        for _ in range(10):
            await asyncio.gather(*(leave() for _ in range(100)))
        await wait_for_async("a thousand requests handled", lambda: service.counts["handled"] == 1000)
        assert (await service.get("/plain")).endswith(b"\r\n\r\nok")
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "edgeplane", "asyncio"))]
    assert [r for r in records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert len(records) <= 1000 and all("\n" not in r.getMessage() for r in records)


@pytest.mark.parametrize(
    "field, value",
    [("header_timeout_seconds", 0.0), ("body_timeout_seconds", -1.0), ("max_connections_per_address", 0)],
)
def test_limits_refuse_values_that_would_disable_or_break_them(field: str, value: float) -> None:
    options: dict[str, Any] = {field: value}
    with pytest.raises(ConfigError, match=field):
        ConnectionLimits(**options)
