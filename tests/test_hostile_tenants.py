"""A tenant whose requests make the model server fail cannot take sites away from the others: with real
llama.cpp servers behind `edgeplane up --auth on`, and the official openai SDK."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, SMALL_FLEET, RunningFleet, start_fleet, stop_fleet

pytestmark = pytest.mark.slow

TOKEN = "hostile-admin-token"
CLIENTS = {"nyc": "198.18.0.9", "iad": "198.18.16.9", "ord": "198.18.32.9", "ams": "198.18.48.9"}
HELLO: Any = [{"role": "user", "content": "Say hello from the edge."}]
# Passes every check an OpenAI server makes of its shape, yet llama.cpp answers 500 ("Failed to parse
# messages: Missing tool call type"): the kind of request that used to take every site down.
POISON: Any = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "tool_calls": [{"bad": 1}]}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[RunningFleet]:
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--backend", "llamacpp"]
    argv += ["--gguf", str(tiny_gguf), "--auth", "on"]
    running = start_fleet(
        argv, tmp_path_factory.mktemp("hostile"), fleet_path=SMALL_FLEET, backend="llamacpp",
        env={"EDGEPLANE_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip
    yield running
    stop_fleet(running)


def key(fleet: RunningFleet, tenant: str) -> str:
    return str(json.loads(fleet.cli("keys", "create", "--tenant", tenant, "--json").stdout)["key"])


def sdk(fleet: RunningFleet, api_key: str, metro: str = "nyc") -> OpenAI:
    made = OpenAI(
        base_url=fleet.gateway_url + "/v1", api_key=api_key, max_retries=0, timeout=60,
        default_headers={"X-Forwarded-For": CLIENTS[metro]},
    )  # fmt: skip
    OPEN_CLIENTS.append(made)
    return made


def wait_for_key(client: OpenAI) -> None:
    """Gateways learn new keys with the next snapshot."""

    def served() -> bool:
        try:
            client.models.list()
            client.chat.completions.create(model="tiny-llama", messages=HELLO, max_tokens=1)
        except openai.AuthenticationError:
            return False
        return True

    wait_for("the gateway takes the key", served, every=0.2)


def sites_left_serving(fleet: RunningFleet) -> list[str]:
    """PoPs not serving, as the control plane and as the gateway see them."""
    status = json.loads(fleet.cli("status", "--json").stdout)
    out = [f"{p['code']} {p['state']}" for p in status["pops"] if p["state"] != "serving"]
    with urllib.request.urlopen(fleet.gateway_url + "/healthz", timeout=10) as answer:
        health = json.loads(answer.read())
    return out + [f"{pop} down at the gateway" for pop, state in health["sites"].items() if state == "down"]


def test_a_request_that_fails_at_two_sites_is_the_clients_error_and_costs_no_site(fleet: RunningFleet) -> None:
    bad = sdk(fleet, key(fleet, "careless"))
    wait_for_key(bad)
    for _ in range(8):
        with pytest.raises(openai.BadRequestError) as refused:
            bad.chat.completions.with_raw_response.create(model="tiny-llama", messages=POISON, max_tokens=4)
        assert refused.value.code == "request_not_processable"
        assert refused.value.response.headers["x-edgeplane-attempts"] == "2"
        assert "Missing tool call type" in refused.value.message
    assert sites_left_serving(fleet) == []
    good = sdk(fleet, key(fleet, "careful"))
    wait_for_key(good)
    for metro in CLIENTS:
        for model in ("tiny-llama", "tiny-chat"):
            answer = sdk(fleet, good.api_key, metro).chat.completions.with_raw_response.create(
                model=model, messages=HELLO, max_tokens=4
            )
            assert answer.headers["x-edgeplane-attempts"] == "1", (metro, model)

    # What can be checked before forwarding never reaches a model server.
    tool: Any = [{"type": "function"}]
    image: Any = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,"}}]}]
    no_text: Any = [{"role": "user", "content": [{"type": "text"}]}]
    for kwargs, code, param in [
        ({"messages": HELLO, "tools": tool}, "invalid_request", "tools[0].function"),
        ({"messages": image}, "unsupported_input", "messages"),
        ({"messages": no_text}, "invalid_request", "messages[0].content[0].text"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            good.chat.completions.create(model="tiny-llama", max_tokens=4, **kwargs)
        assert (refused.value.code, refused.value.param) == (code, param)
    # A prompt longer than the context: OpenAI's error, whichever server said it.
    with pytest.raises(openai.BadRequestError) as refused:
        good.chat.completions.create(model="tiny-llama", max_tokens=4,
                                     messages=[{"role": "user", "content": "hello " * 2000}])  # fmt: skip
    assert refused.value.code == "context_length_exceeded" and "maximum context length" in refused.value.message
    assert sites_left_serving(fleet) == []
    with urllib.request.urlopen(fleet.gateway_url + "/metrics", timeout=10) as answer:
        assert "edgeplane_gateway_unprocessable_requests_total 8.0" in answer.read().decode()


def test_other_tenants_are_served_while_one_sends_poison_for_thirty_seconds(fleet: RunningFleet) -> None:
    bad, good = sdk(fleet, key(fleet, "poisoner")), key(fleet, "bystander")
    wait_for_key(bad)
    wait_for_key(sdk(fleet, good))
    stop = threading.Event()
    outcomes: dict[str, list[int]] = {"poison": [0, 0], "good": [0, 0]}  # [answered as expected, other]
    left: list[str] = []

    def poison() -> None:
        while not stop.is_set():
            try:
                bad.chat.completions.create(model="tiny-llama", messages=POISON, max_tokens=4)
                outcomes["poison"][1] += 1
            except openai.BadRequestError:
                outcomes["poison"][0] += 1
            except openai.APIError:
                outcomes["poison"][1] += 1

    def bystander(metro: str) -> None:
        client = sdk(fleet, good, metro)
        while not stop.is_set():
            for model in ("tiny-llama", "tiny-chat"):
                try:
                    client.chat.completions.create(model=model, messages=HELLO, max_tokens=4)
                    outcomes["good"][0] += 1
                except openai.APIError:
                    outcomes["good"][1] += 1

    threads = [threading.Thread(target=poison) for _ in range(2)]
    threads += [threading.Thread(target=bystander, args=(metro,)) for metro in CLIENTS]
    for thread in threads:
        thread.start()
    try:
        # Not a wait for a condition: the load runs for thirty seconds, the sites looked at twice a second.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left += sites_left_serving(fleet)
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    ok, failed = outcomes["good"]
    assert ok > 0 and ok / (ok + failed) >= 0.99, outcomes
    assert outcomes["poison"][0] > 0 and outcomes["poison"][1] == 0, outcomes
    assert left == [], left
