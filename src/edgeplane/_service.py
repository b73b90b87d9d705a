"""Running an aiohttp service: bind, report the address, own background tasks, stop on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

import orjson
from aiohttp import web

from edgeplane._api import error_body
from edgeplane._errors import BackendError

log = logging.getLogger("edgeplane")

Background = Callable[[], Coroutine[Any, Any, None]]


def bound_url(runner: web.AppRunner, host: str) -> str:
    for address in runner.addresses:
        if isinstance(address, tuple):
            port = address[1]
            shown = host if ":" not in host else f"[{host}]"
            return f"http://{shown}:{port}"
    raise RuntimeError("the service is not bound to a TCP address")


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], Awaitable[None] | None] | None = None,
    background: Callable[[str], list[Background]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives; background tasks live and die with it."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        await site.start()
        url = bound_url(runner, host)
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
        await runner.cleanup()


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
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except BackendError as error:
        log.warning("stream broken upstream: %s", error)
        event = error_body(f"The stream was cut short: {error}", type="server_error", code="stream_interrupted")
        with contextlib.suppress(ConnectionError):
            await response.write(b"data: " + event + b"\n\n")
    except ConnectionError:
        return response  # the client left; closing the source below frees what it held upstream
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
    with contextlib.suppress(ConnectionError):
        await response.write_eof()
    return response
