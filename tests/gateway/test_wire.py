"""What the gateway answers outside the happy path, on the wire: OpenAI-shaped JSON for every refusal its HTTP
stack makes (no route, wrong method, too large, malformed, a header or request line too long), the SDK's
models.retrieve, a tool choice naming no tool the request defines, and a /healthz that is not ok while no site
can serve."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from edgeplane.fleet import load_fleet
from edgeplane.gateway import Gateway, GatewayOptions, RoutingState, SnapshotWatcher
from edgeplane.routing import Router, SiteState, SiteView, Snapshot
from edgeplane.web import serve
from tests.conftest import SMALL_FLEET, free_port


async def gateway(state: SiteState) -> AsyncIterator[str]:
    fleet = load_fleet(SMALL_FLEET)
    dead = f"http://127.0.0.1:{free_port()}"
    sites = {p.code: SiteView(p.code, state, frozenset(fleet.models_at(p.code)), dead) for p in fleet.pops}
    watcher = SnapshotWatcher("http://127.0.0.1:9")
    watcher.state = RoutingState(fleet, Router(fleet), Snapshot(1, time.time(), "x", sites), time.monotonic(), {})
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    app = Gateway(watcher, options=GatewayOptions(max_attempts=1)).app()
    task = asyncio.create_task(serve(app, "127.0.0.1", 0, on_ready=ready.set_result, stop=stop))
    try:
        yield await ready
    finally:
        stop.set()
        await task
        await watcher.close()


@pytest.fixture
async def serving_url() -> AsyncIterator[str]:
    async for url in gateway(SiteState.SERVING):
        yield url


@pytest.fixture
async def all_down_url() -> AsyncIterator[str]:
    async for url in gateway(SiteState.DOWN):
        yield url


async def raw(url: str, request: bytes) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not_found"),
        (b"DELETE /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n"
         + b" " * 5_000_000, 413, "request_too_large"),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431,
         "request_header_fields_too_large"),
        (b"GET /v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400, "bad_request"),
    ],
    ids=["404", "405", "413", "431", "414", "garbage", "bad-length"],
)  # fmt: skip
async def test_every_refusal_is_openai_shaped_json(
    serving_url: str, request_bytes: bytes, status: int, code: str
) -> None:
    got, headers, body = await raw(serving_url, request_bytes)
    assert (got, body["error"]["code"]) == (status, code), body
    assert headers["content-type"].startswith("application/json")
    assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error"


async def test_the_sdk_retrieves_a_model_and_is_told_of_one_that_does_not_exist(serving_url: str) -> None:
    async with AsyncOpenAI(base_url=serving_url + "/v1", api_key="x", max_retries=0) as sdk:
        model = await sdk.models.retrieve("tiny-llama")
        assert (model.id, model.object) == ("tiny-llama", "model")
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.models.retrieve("no-such-model")
        assert missing.value.code == "model_not_found"


async def test_the_sdk_is_told_a_tool_choice_names_no_tool_it_gave(serving_url: str) -> None:
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    nope: Any = {"type": "function", "function": {"name": "nope"}}
    async with AsyncOpenAI(base_url=serving_url + "/v1", api_key="x", max_retries=0) as sdk:
        for kwargs in ({"tools": tools, "tool_choice": nope}, {"tool_choice": nope}, {"tool_choice": "required"}):
            with pytest.raises(openai.BadRequestError) as refused:
                await sdk.chat.completions.create(
                    model="tiny-llama", messages=[{"role": "user", "content": "hi"}], **kwargs
                )
            assert refused.value.param == "tool_choice", (kwargs, refused.value.body)


async def test_health_is_not_ok_while_no_site_can_serve(serving_url: str, all_down_url: str) -> None:
    status, _, body = await raw(serving_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body["status"]) == (200, "ok")
    status, _, body = await raw(all_down_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body["status"]) == (503, "no_site_available")
    # Sites the snapshot calls serving but this gateway found dead count as down too.
    async with AsyncOpenAI(base_url=serving_url + "/v1", api_key="x", max_retries=0) as sdk:
        for _ in range(4):
            with pytest.raises(openai.APIStatusError):
                await sdk.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}])
    status, _, body = await raw(serving_url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body["status"]) == (503, "no_site_available"), body
