"""What a client's connection may hold: time to send its request head and body, connections per address,
and a disconnect before the answer that costs one debug line, not a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_request import BaseRequest

from edgeplane._errors import ConfigError
from edgeplane.web._openai import ApiError, error_body

log = logging.getLogger("edgeplane.connections")

# aiohttp's RequestHandler logs what a handler raised with this logger, a client that left included.
_SERVER_LOGGER = "aiohttp.server"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """How long and how many connections a client may hold open.

    ``header_timeout_seconds`` bounds the time from accepting a connection to its first complete request
    head; between requests on a kept-alive connection ``keepalive_timeout_seconds`` bounds the silence and
    the next head together (aiohttp's own idle timer). 75 s, as nginx has it, outlasts the 60 s idle
    timeout of common proxies and load balancers, so a proxy in front closes an idle connection before we
    do and never sends a request on a connection we are closing. ``body_timeout_seconds`` is the silence
    allowed while a handler reads the body with :func:`read_body`, and ``body_total_seconds`` the time for the whole
    body (a client that drips a byte now and then is cut too). ``linger_seconds`` is how long aiohttp
    reads and drops a body its handler left unread (after a 413, 401 or a body timeout) before it closes.

    ``max_connections_per_address`` counts every open connection of a peer address, loopback included; a
    connection beyond it is closed at once. 256 leaves four times the 64 concurrent connections the load
    tests open from 127.0.0.1, yet keeps one address to a small share of the process's descriptors.
    Services that many clients reach through one address (a gateway's pool to a site agent, a reverse
    proxy in front of the gateway) need it raised to that pool's size; ``None`` removes the limit."""

    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    body_total_seconds: float = 120.0
    keepalive_timeout_seconds: float = 75.0
    linger_seconds: float = 10.0
    max_connections_per_address: int | None = 256

    def __post_init__(self) -> None:
        for name in (
            "header_timeout_seconds",
            "body_timeout_seconds",
            "body_total_seconds",
            "keepalive_timeout_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {getattr(self, name)!r}")
        if not self.linger_seconds >= 0:
            raise ConfigError(f"linger_seconds must be zero or more, got {self.linger_seconds!r}")
        limit = self.max_connections_per_address
        if limit is not None and limit < 1:
            raise ConfigError(f"max_connections_per_address must be at least 1 or None, got {limit!r}")


_DEFAULT_LIMITS = ConnectionLimits()
_LIMITS = web.RequestKey("edgeplane_connection_limits", ConnectionLimits)


async def read_body(request: BaseRequest, timeout_seconds: float | None = None) -> bytes:
    """The whole request body, read with at most ``timeout_seconds`` of silence between two pieces of it
    (default: the ``body_timeout_seconds`` of the limits ``serve()`` was given, else 30 s).

    Raises ApiError: 408 ``request_timeout`` (with ``Connection: close``, since the rest of the body may
    still come) when the client falls silent, 413 ``request_too_large`` beyond the application's
    ``client_max_size``, 400 ``invalid_body`` for a body that breaks its framing. A client that leaves
    mid-body raises ConnectionResetError, which serve() keeps out of the logs. Call it once, instead of
    ``request.read()``: it does not fill the cache ``request.read()``/``json()`` would read again."""
    limits = request.get(_LIMITS) or _DEFAULT_LIMITS
    if timeout_seconds is None:
        timeout_seconds = limits.body_timeout_seconds
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.body_total_seconds  # a body dripped a byte at a time ends too
    limit = request.client_max_size
    body = bytearray()
    while True:
        wait = min(timeout_seconds, deadline - loop.time())
        try:
            async with asyncio.timeout(max(0.0, wait)):
                chunk = await request.content.readany()
        except TimeoutError:
            said = (
                f"nothing for {timeout_seconds:g} s after {len(body)} bytes"
                if wait == timeout_seconds
                else f"not all of it in {limits.body_total_seconds:g} s ({len(body)} bytes came)"
            )
            raise ApiError(
                408,
                f"The request body stopped arriving: {said}.",
                type="invalid_request_error",
                code="request_timeout",
                headers={"Connection": "close"},
            ) from None
        except web.RequestPayloadError as error:
            raise ApiError(
                400, f"The request body is malformed: {error}.", type="invalid_request_error", code="invalid_body"
            ) from None
        if not chunk:
            return bytes(body)
        body.extend(chunk)
        if limit and len(body) > limit:
            raise ApiError(
                413,
                f"Request body too large (limit {limit} bytes).",
                type="invalid_request_error",
                code="request_too_large",
            )


def _address(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and peer and isinstance(peer[0], str):
        return peer[0]
    return None


class ConnectionGuard:
    """Counts the open connections of each peer address, refuses those beyond the limit and closes any
    that send no complete request head in time. It wraps aiohttp's protocol factory (``runner.server``),
    so aiohttp's request handler never sees a refused connection."""

    def __init__(self, limits: ConnectionLimits, server: web.Server) -> None:
        self.limits = limits
        self._server = server
        self._open: Counter[str | None] = Counter()
        self._watching: dict[web.RequestHandler, _Guarded] = {}
        self.refused = 0
        self.head_timeouts = 0
        handler = server.request_handler

        async def handle(request: BaseRequest) -> web.StreamResponse:
            guarded = self._watching.pop(request.protocol, None)
            if guarded is not None:
                guarded.head_received()
            request[_LIMITS] = limits
            return await handler(request)

        # RequestHandler copies this when it is made, so it is set before the first connection.
        server.request_handler = handle

    def __repr__(self) -> str:
        return (
            f"<ConnectionGuard [open: {self.open} from {len(self._open)} addresses | "
            f"closed: {self.head_timeouts} without a request head, {self.refused} over the per-address limit]>"
        )

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def open_from(self, address: str) -> int:
        return self._open[address]

    def protocol(self) -> asyncio.Protocol:
        """A protocol for one new connection (``loop.create_server``'s factory)."""
        return _Guarded(self)

    def _admit(self, address: str | None) -> bool:
        limit = self.limits.max_connections_per_address
        if limit is not None and address is not None and self._open[address] >= limit:
            self.refused += 1
            log.debug("refused a connection from %s: %d already open", address, self._open[address])
            return False
        self._open[address] += 1
        return True

    def _release(self, address: str | None, handler: web.RequestHandler) -> None:
        self._watching.pop(handler, None)
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def _make_handler(self, guarded: _Guarded) -> web.RequestHandler:
        handler = self._server()
        handler.__class__ = _JsonErrorHandler  # the same handler, answering its own errors in JSON
        self._watching[handler] = guarded
        return handler


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp's request handler, with the answers it makes itself (a malformed request, a header or request
    line too long, a handler that raised) in OpenAI's JSON error shape instead of text/plain or HTML. A
    malformed request is the client's doing: one debug line, not a traceback."""

    __slots__ = ()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if isinstance(exc, BadHttpMessage):
            log.debug("refused a malformed request from %s: %s", request.remote, exc)
        else:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        code: str | None = None
        if isinstance(exc, LineTooLong):
            line = exc.args[0] if exc.args else b""
            target = bytes(line) if isinstance(line, bytes | bytearray) else str(line).encode()
            status = 414 if target.startswith(b"/") or b"Status line" in target else 431  # the path, or a header
            code = "uri_too_long" if status == 414 else "request_header_fields_too_large"
            message = "The request line is too long." if status == 414 else "A request header is too long."
        elif isinstance(exc, BadHttpMessage):
            code, message = "bad_request", f"Malformed HTTP request: {exc.message}"
        else:
            code, message = "internal_error", "The server failed to answer this request."
        kind = "server_error" if status >= 500 else "invalid_request_error"
        response = web.Response(body=error_body(message, type=kind, code=code), status=status,
                                content_type="application/json")  # fmt: skip
        response.force_close()
        return response


class _Guarded(asyncio.Protocol):
    """One connection: aiohttp's request handler behind an admission check and a request-head timer."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._handler: web.RequestHandler | None = None
        self._address: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._address = _address(transport)
        if not self._guard._admit(self._address):
            cast(asyncio.Transport, transport).abort()
            return
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.limits.header_timeout_seconds, self._head_late)
        self._handler = self._guard._make_handler(self)
        self._handler.connection_made(transport)

    def head_received(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_late(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._guard.head_timeouts += 1
            log.debug(
                "closed a connection from %s: no request head in %g s",
                self._address,
                self._guard.limits.header_timeout_seconds,
            )
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._handler is not None:
            self._handler.data_received(data)

    def eof_received(self) -> bool | None:
        if self._handler is not None:
            self._handler.eof_received()
        return None  # as aiohttp's handler answers: a client that half-closes is closed

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_received()
        handler, self._handler, self._transport = self._handler, None, None
        if handler is not None:
            self._guard._release(self._address, handler)
            handler.connection_lost(exc)


class _QuietDisconnects(logging.Filter):
    """Turns aiohttp's traceback for a client that left before its answer into one debug line.

    aiohttp logs, with its traceback, whatever a handler raises; a handler that starts its answer (a
    stream's ``prepare``) after the client left raises ConnectionResetError ("Cannot write to closing
    transport"), about 25 lines each time. Only these errors are dropped; every other one passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ConnectionResetError | BrokenPipeError):
            log.debug("%s: the client left (%s)", record.getMessage(), error)
            return False
        return True


_quiet = _QuietDisconnects()
_quiet_users = 0


@contextlib.contextmanager
def quiet_disconnects() -> Iterator[None]:
    """Keep client disconnects out of aiohttp's error log while any service runs in this process."""
    global _quiet_users
    logger = logging.getLogger(_SERVER_LOGGER)
    _quiet_users += 1
    logger.addFilter(_quiet)
    try:
        yield
    finally:
        _quiet_users -= 1
        if _quiet_users == 0:
            logger.removeFilter(_quiet)
