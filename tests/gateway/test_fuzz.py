"""The gateway's request parsing, fuzzed: 100,000 generated requests, then more over real HTTP.
Nothing crashes, nothing answers 500, and only the documented status codes come back."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeplane.fleet import load_fleet
from edgeplane.gateway import Gateway, GatewayOptions, RoutingState, SnapshotWatcher
from edgeplane.routing import Router, SiteState, SiteView, Snapshot
from edgeplane.tenants import KeyPolicy, key_hash
from edgeplane.web import ApiError, Endpoint, parse_request, serve
from tests.conftest import SMALL_FLEET, free_port

FUZZ_EXAMPLES = 50_000  # per endpoint: 100,000 generated requests in all
DOCUMENTED = {200, 400, 401, 403, 404, 413, 429, 503}
FIELDS = [
    "model",
    "messages",
    "prompt",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stream_options",
    "role",
    "content",
]
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "robot", ""]) | scalars},
        optional={"content": st.text(max_size=30) | values},
    ),
    max_size=3,
)
requests = st.fixed_dictionaries(
    {"model": st.sampled_from(["tiny-llama", "tiny-chat", "", "nope"]) | scalars},
    optional={
        "messages": messages | values,
        "prompt": values,
        "stream": values,
        "max_tokens": values,
        "temperature": values,
        "top_p": values,
        "n": values,
        "stream_options": values,
    },
)
bodies = (
    requests.map(lambda d: json.dumps(d).encode())
    | values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)


# The 100,000 parsing cases use flat values, which hypothesis draws fast; the HTTP cases use nested ones.
flat = (
    st.none()
    | st.booleans()
    | st.integers(-5, 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.lists(st.none() | st.integers() | st.text(max_size=6), max_size=3)
)
flat_requests = st.fixed_dictionaries(
    {"model": st.sampled_from(["tiny-llama", "", "nope"]) | flat},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries({"role": st.sampled_from(["user", "robot"]) | flat}, optional={"content": flat}),
            max_size=2,
        )
        | flat,
        "prompt": flat,
        "stream": flat,
        "max_tokens": flat,
        "temperature": flat,
        "top_p": flat,
        "stream_options": flat,
    },
)
flat_bodies = flat_requests.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=48)


def check_parse(endpoint: Endpoint, raw: bytes) -> None:
    try:
        parsed = parse_request(endpoint, raw)
    except ApiError as error:
        assert error.status == 400
        assert json.loads(error.body())["error"]["message"]
        return
    assert isinstance(parsed.model, str) and parsed.model


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(flat_bodies)
def test_chat_parsing_never_fails_other_than_400(raw: bytes) -> None:
    check_parse(Endpoint.CHAT, raw)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(flat_bodies)
def test_completions_parsing_never_fails_other_than_400(raw: bytes) -> None:
    check_parse(Endpoint.COMPLETIONS, raw)


KEY = "ep-fuzz-key"
CHAT_ONLY = "ep-fuzz-chat-only"


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    """A real gateway over loopback, its routing state fixed: one site whose address answers nothing."""
    fleet = load_fleet(SMALL_FLEET)
    dead = f"http://127.0.0.1:{free_port()}"
    sites = {p.code: SiteView(p.code, SiteState.SERVING, frozenset(fleet.models_at(p.code)), dead) for p in fleet.pops}
    keys = {
        key_hash(KEY): KeyPolicy("key_a", "fuzz", rpm=1_000_000),
        key_hash(CHAT_ONLY): KeyPolicy("key_b", "fuzz", models=frozenset({"tiny-chat"}), rpm=1),
    }
    watcher = SnapshotWatcher("http://127.0.0.1:9")
    watcher.state = RoutingState(fleet, Router(fleet), Snapshot(1, time.time(), "x", sites), time.monotonic(), keys)
    gateway = Gateway(watcher, options=GatewayOptions(auth=True, max_attempts=1, request_budget_seconds=1))
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    url: list[str] = []

    async def main() -> None:
        stop.append(asyncio.Event())

        def up(address: str) -> None:
            url.append(address)
            ready.set()

        await serve(gateway.app(), "127.0.0.1", 0, on_ready=up, stop=stop[0])
        await watcher.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield url[0]
    loop.call_soon_threadsafe(stop[0].set)
    thread.join(10)
    loop.close()


def post(url: str, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url + path, data=raw, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        body = error.read()
        error.close()
        return error.code, json.loads(body)


@settings(max_examples=2_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    bodies,
    st.sampled_from([Endpoint.CHAT.value, Endpoint.COMPLETIONS.value]),
    st.sampled_from([None, KEY, CHAT_ONLY, "ep-unknown", ""]),
    st.integers(0, 19).map(lambda n: n == 0),  # one in twenty bodies is too large
)
def test_the_gateway_answers_fuzz_with_documented_codes_only(
    gateway_url: str, raw: bytes, path: str, key: str | None, big: bool
) -> None:
    headers = {"Content-Type": "application/json", "X-Forwarded-For": "198.18.0.1"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if big:
        raw = raw + b" " * (5 * 1024 * 1024)
    status, body = post(gateway_url, path, raw, headers)
    assert status in DOCUMENTED and status != 500
    if status != 200:
        assert body["error"]["message"] and body["error"]["type"]


F_ONLY = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("tools", "choice", "refused"),
    [
        (None, {"type": "function", "function": {"name": "nope"}}, True),
        ([], {"type": "function", "function": {"name": "f"}}, True),
        (F_ONLY, {"type": "function", "function": {"name": "nope"}}, True),
        (None, "required", True),
        (F_ONLY, {"type": "function", "function": {"name": "f"}}, False),
        (F_ONLY, "required", False),
        (None, "auto", False),
        (None, "none", False),
    ],
)
def test_tool_choice_must_name_a_tool_the_request_defines(tools: Any, choice: Any, refused: bool) -> None:
    """As OpenAI answers: a tool to call that `tools` does not define is a 400 on `tool_choice`."""
    body: dict[str, Any] = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}
    body |= {"tool_choice": choice} | ({"tools": tools} if tools is not None else {})
    if not refused:
        assert parse_request(Endpoint.CHAT, json.dumps(body).encode()).body["tool_choice"] == choice
        return
    with pytest.raises(ApiError) as caught:
        parse_request(Endpoint.CHAT, json.dumps(body).encode())
    error = json.loads(caught.value.body())["error"]
    assert (caught.value.status, error["type"], error["param"]) == (400, "invalid_request_error", "tool_choice")
