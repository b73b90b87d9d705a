"""Running an aiohttp service: bind, report the address, own background tasks, stop on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

import orjson
from aiohttp import web

from edgeplane._errors import BackendError, StreamCut
from edgeplane.web._connections import ConnectionGuard, ConnectionLimits, quiet_disconnects
from edgeplane.web._openai import error_body, error_event

log = logging.getLogger("edgeplane")

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when its parent dies, even by SIGKILL (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


Background = Callable[[], Coroutine[Any, Any, None]]


class Listener:
    """The listening socket of a service, which a fault can close and open again on the same port. Its
    connections pass the guard's limits before aiohttp's request handler sees them."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard | None = None) -> None:
        self._runner, self.host, self.port = runner, host, port
        self.guard = guard
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return f"<Listener {self.host}:{self.port} {'listening' if self.listening else 'closed'}>"

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def open(self) -> str:
        if self._server is None:
            server = self._runner.server
            if server is None:
                raise RuntimeError("the runner is not set up")
            factory = self.guard.protocol if self.guard is not None else server
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(factory, self.host, self.port, backlog=1024, reuse_address=True)
            self.port = int(self._server.sockets[0].getsockname()[1])
        return f"http://{self.host if ':' not in self.host else f'[{self.host}]'}:{self.port}"

    async def close(self) -> None:
        """Stop accepting connections; those already open finish."""
        server, self._server = self._server, None
        if server is not None:
            server.close()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], Awaitable[None] | None] | None = None,
    background: Callable[[str], list[Background]] | None = None,
    stop: asyncio.Event | None = None,
    on_listener: Callable[[Listener], None] | None = None,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives; background tasks live and die with it.
    Connections are held to ``limits`` (see ConnectionLimits; handlers read bodies with read_body), and a
    client that leaves before its answer costs a debug line, not a traceback."""
    limits = limits or ConnectionLimits()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=2.0,
        keepalive_timeout=limits.keepalive_timeout_seconds,
        lingering_time=limits.linger_seconds,
    )
    await runner.setup()
    assert runner.server is not None
    listener = Listener(runner, host, port, ConnectionGuard(limits, runner.server))
    with quiet_disconnects():
        try:
            url = await listener.open()
            if on_listener is not None:
                on_listener(listener)
            if on_ready is not None:
                result = on_ready(url)
                if result is not None:
                    await result
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(job()) for job in (background(url) if background else [])]
                await stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await listener.close()
            await runner.cleanup()


def abort(request: web.Request) -> None:
    """Drop the client's connection with no further byte, as a crashing server would. What was written
    is flushed first (a FIN, not a reset), so the client knows exactly how far the answer got."""
    transport = request.transport
    if transport is not None:
        transport.close()


def json_response(data: object, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def error_response(
    status: int, message: str, *, type: str, code: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=error_body(message, type=type, code=code),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def relay_stream(
    request: web.Request,
    status: int,
    content_type: str,
    chunks: AsyncIterator[bytes],
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Pass a server-sent event stream through as it arrives. A break upstream ends the stream with an
    explicit error event, never with a made-up completion."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = content_type.split(";")[0] or "text/event-stream"
    response.headers["Cache-Control"] = "no-cache"
    try:
        await response.prepare(request)  # inside: a client already gone must still free the source upstream
        async for chunk in chunks:
            await response.write(chunk)
    except StreamCut:
        abort(request)
        return response
    except BackendError as error:
        log.warning("stream broken upstream: %s", error)
        event = error_event(f"The stream was cut short: {error}", type="server_error", code="stream_interrupted")
        with contextlib.suppress(ConnectionError):
            await response.write(event)
    except ConnectionError:
        return response  # the client left; closing the source below frees what it held upstream
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
