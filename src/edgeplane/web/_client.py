"""The HTTP client edgeplane uses to reach sites and model servers; aiohttp errors stop here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from edgeplane._errors import BackendError, ConnectError, ReadError, TimeoutError_


@contextlib.contextmanager
def map_exceptions() -> Iterator[None]:
    """Convert aiohttp's errors into edgeplane's, so callers never catch a foreign exception."""
    try:
        yield
    except aiohttp.ClientConnectorError as error:
        raise ConnectError(f"cannot connect to {error.host}:{error.port}") from error
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as error:
        raise ReadError(f"connection broken: {error.__class__.__name__}") from error
    except (TimeoutError, aiohttp.ServerTimeoutError) as error:
        raise TimeoutError_("timed out") from error
    except aiohttp.ClientError as error:
        raise BackendError(f"HTTP error: {error}") from error


@dataclass(slots=True)
class Reply:
    """An answer whose body is still arriving; ``release`` must be called once it is consumed."""

    status: int
    content_type: str
    _response: aiohttp.ClientResponse

    async def chunks(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            with map_exceptions():
                async for chunk in content.iter_any():
                    yield chunk
        except BackendError:
            # aiohttp raises as soon as the connection breaks, even with bytes still unread; those bytes
            # are what the site said before it broke, so they are passed on before the error.
            buffered = getattr(content, "_buffer", None)
            if buffered:
                leftover = b"".join(buffered)
                buffered.clear()
                yield leftover
            raise

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    async def read(self) -> bytes:
        with map_exceptions():
            return await self._response.read()

    def release(self) -> None:
        self._response.release()

    def close(self) -> None:
        """Drop the connection: the answer will not be read to its end."""
        self._response.close()


class HttpClient:
    """A pooled HTTP client with connect and read time limits."""

    def __init__(
        self,
        *,
        connect_timeout_seconds: float = 2.0,
        read_timeout_seconds: float = 300.0,
        pool_size: int = 1024,
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_seconds, sock_read=read_timeout_seconds
        )
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        send = {"Content-Type": "application/json"}
        if headers:
            send.update(headers)
        with map_exceptions():
            response = await self.session.post(url, data=body, headers=send)
        return Reply(response.status, response.headers.get("Content-Type", ""), response)

    async def get_text(self, url: str, timeout_seconds: float = 5.0) -> str:
        return (await self.fetch_text(url, timeout_seconds))[1]

    async def fetch_text(self, url: str, timeout_seconds: float = 5.0) -> tuple[int, str]:
        with map_exceptions():
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as response:
                return response.status, await response.text()

    async def request_json(
        self,
        method: str,
        url: str,
        payload: Any = None,
        timeout_seconds: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = orjson.dumps(payload) if payload is not None else None
        send = {"Content-Type": "application/json"} if data is not None else {}
        if headers:
            send.update(headers)
        with map_exceptions():
            async with self.session.request(
                method, url, data=data, headers=send, timeout=aiohttp.ClientTimeout(total=timeout_seconds)
            ) as response:
                raw = await response.read()
                try:
                    return response.status, orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    return response.status, {"error": {"message": raw.decode("utf-8", "replace")}}

    async def request_bytes(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_seconds: float = 60.0,
        max_bytes: int = 1 << 30,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """A whole binary answer (the fabric's chunks), refused past ``max_bytes``: a site that sends more than it
        was asked for is cut off rather than buffered."""
        with map_exceptions():
            async with self.session.request(
                method, url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_seconds)
            ) as response:
                if (response.content_length or 0) > max_bytes:
                    raise ReadError(f"answer of {response.content_length} bytes, more than the {max_bytes} expected")
                parts, total = [], 0
                async for piece in response.content.iter_any():
                    total += len(piece)
                    if total > max_bytes:
                        raise ReadError(f"answer longer than the {max_bytes} bytes expected")
                    parts.append(piece)
                return response.status, response.headers, b"".join(parts)
