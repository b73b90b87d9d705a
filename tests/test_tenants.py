"""Keys, model limits and residency through the official openai SDK, against `edgeplane up --auth on`."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, SMALL_FLEET, RunningFleet, start_fleet, stop_fleet, wait_gateway_snapshot

pytestmark = pytest.mark.slow

NYC, AMS = "198.18.0.9", "198.18.48.9"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    argv = [
        sys.executable,
        "-m",
        "edgeplane",
        "up",
        "--fleet",
        str(SMALL_FLEET),
        "--time-scale",
        "0.05",
        "--auth",
        "on",
    ]
    # With an admin token, as beyond loopback: agents, gateway and CLI all present it.
    token = {"EDGEPLANE_ADMIN_TOKEN": "tenants-admin-token"}
    running = start_fleet(
        argv, tmp_path_factory.mktemp("tenants"), fleet_path=SMALL_FLEET, backend="emulator", env=token
    )
    yield running
    stop_fleet(running)


SECRETS: list[str] = []  # every key made here, to look for in the logs at the end


def create(fleet: RunningFleet, *args: str) -> dict[str, str]:
    made: dict[str, str] = json.loads(fleet.cli("keys", "create", *args, "--json").stdout)
    SECRETS.append(made["key"])
    return made


def api(fleet: RunningFleet, key: str | None, client: str = NYC) -> OpenAI:
    made = OpenAI(
        base_url=fleet.gateway_url + "/v1",
        api_key=key or "",
        default_headers={"X-Forwarded-For": client},
        max_retries=0,
    )
    OPEN_CLIENTS.append(made)
    return made


def ask(client: OpenAI, model: str = "tiny-llama") -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    raw.parse()
    return raw.headers["x-edgeplane-metro"], raw.headers["x-edgeplane-scope"]


def first_answer(client: OpenAI, model: str = "tiny-llama", *, limited: bool = False) -> tuple[str, str]:
    """The first answer to a new key, once the gateway has it (a 401 until its snapshot brings the key table) and,
    for a ``limited`` key, holds a lease for it (a 429 until the first lease comes)."""
    not_yet: tuple[type[Exception], ...] = (openai.AuthenticationError,)
    if limited:
        not_yet += (openai.RateLimitError,)
    answers: list[tuple[str, str]] = []

    def answered() -> bool:
        try:
            answers.append(ask(client, model))
        except not_yet:
            return False
        return True

    wait_for("the gateway serves the new key", answered)
    return answers[0]


def access_log(fleet: RunningFleet) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (fleet.log_path.parent / "data" / "access.log").read_text().splitlines()]


def test_keys_are_shown_once_and_stored_hashed(fleet: RunningFleet) -> None:
    made = create(fleet, "--tenant", "acme", "--rpm", "100")
    assert set(made) >= {"id", "key"} and made["key"].startswith("ep-")
    listed = fleet.cli("keys", "list", "--json").stdout
    assert made["id"] in listed and made["key"] not in listed
    human = fleet.cli("keys", "list").stdout
    assert "acme" in human and made["key"] not in human
    first_answer(api(fleet, made["key"]))


def test_missing_wrong_and_revoked_keys_get_401(fleet: RunningFleet) -> None:
    # The SDK will not send a request without a key, so this one goes by hand.
    body = json.dumps({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}).encode()
    bare = urllib.request.Request(fleet.gateway_url + "/v1/chat/completions", data=body, method="POST")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(bare)
    assert missing.value.code == 401
    assert json.loads(missing.value.read())["error"]["code"] == "invalid_api_key"
    missing.value.close()
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        ask(api(fleet, "ep-not-a-key"))
    made = create(fleet, "--tenant", "acme")
    first_answer(api(fleet, made["key"]))
    fleet.cli("keys", "revoke", made["id"])

    def refused() -> bool:
        try:
            ask(api(fleet, made["key"]))
        except openai.AuthenticationError as error:
            assert "revoked" in str(error)
            return True
        return False  # the gateway has not taken the revocation yet

    wait_for("the gateway refuses the revoked key", refused)


def test_a_key_limited_to_some_models_gets_403_for_the_others(fleet: RunningFleet) -> None:
    made = create(fleet, "--tenant", "acme", "--models", "tiny-chat")
    first_answer(api(fleet, made["key"]), "tiny-chat")
    # The model list is the key's own, and like every /v1 route it needs a valid key.
    assert [m.id for m in api(fleet, made["key"]).models.list()] == ["tiny-chat"]
    assert api(fleet, made["key"]).models.retrieve("tiny-chat").id == "tiny-chat"
    with pytest.raises(openai.NotFoundError):
        api(fleet, made["key"]).models.retrieve("tiny-llama")
    with pytest.raises(openai.AuthenticationError):
        api(fleet, "ep-not-a-key").models.list()
    with pytest.raises(urllib.error.HTTPError) as missing:  # the SDK sends no request without a key
        urllib.request.urlopen(fleet.gateway_url + "/v1/models")
    assert missing.value.code == 401
    missing.value.close()
    with pytest.raises(openai.PermissionDeniedError) as denied:
        ask(api(fleet, made["key"]), "tiny-llama")
    assert denied.value.code == "model_not_allowed"
    refused = fleet.cli("keys", "create", "--tenant", "acme", "--models", "no-such-model", check=False)
    assert refused.returncode == 1 and "unknown model" in refused.stderr


def test_a_key_over_its_request_or_token_limit_gets_429_with_retry_after(fleet: RunningFleet) -> None:
    limited = create(fleet, "--tenant", "small", "--rpm", "3")
    first_answer(api(fleet, limited["key"]), limited=True)
    served, refused = 1, None
    for _ in range(5):
        try:
            ask(api(fleet, limited["key"]))
            served += 1
        except openai.RateLimitError as error:
            refused = error
            break
        # Not a wait for a condition (a pause between requests): the gateway asks the control plane for a new lease
        # (one request of 3) when it holds fewer than two; how many it holds is not visible from outside.
        time.sleep(0.1)
    assert served == 3 and refused is not None
    assert refused.code == "rate_limit_exceeded" and int(refused.response.headers["Retry-After"]) >= 1

    thrifty = create(fleet, "--tenant", "small", "--tpm", "2")  # less than one request (about 4 tokens)
    first_answer(api(fleet, thrifty["key"]), limited=True)
    # The gateway charges a request's tokens to the key's lease just before it writes the request's access log line.
    wait_for(
        "the gateway charged the first answer's tokens",
        lambda: any(line.get("key_id") == thrifty["id"] and line["status"] == 200 for line in access_log(fleet)),
    )
    with pytest.raises(openai.RateLimitError, match="tokens per minute"):
        ask(api(fleet, thrifty["key"]))


def test_a_pinned_key_is_never_served_outside_its_continent(fleet: RunningFleet) -> None:
    pinned = create(fleet, "--tenant", "eu-bank", "--continent", "eu")["key"]
    free = create(fleet, "--tenant", "anyone")["key"]
    first_answer(api(fleet, pinned, AMS))
    # A New York client with an EU key is served in Europe.
    assert ask(api(fleet, pinned, NYC)) == ("ams", "global")
    try:
        drained = json.loads(fleet.cli("drain", "metro", "ams", "--json").stdout)  # every metro of the eu continent
        wait_gateway_snapshot(fleet, drained["snapshot_version"])
        with pytest.raises(openai.InternalServerError) as caught:
            ask(api(fleet, pinned, AMS))
        assert caught.value.status_code == 503 and caught.value.code == "no_site_in_residency"
        assert "never served outside it" in str(caught.value)
        metro, scope = ask(api(fleet, free, AMS))
        assert scope == "global" and metro in {"nyc", "iad", "ord"}
    finally:
        fleet.cli("undrain", "metro", "ams")
    with urllib.request.urlopen(fleet.gateway_url + "/metrics") as response:
        text = response.read().decode()
    assert 'edgeplane_gateway_residency_decisions_total{outcome="refused",pin="continent eu"}' in text


def test_access_log_has_a_line_per_request_and_no_log_holds_a_key(fleet: RunningFleet) -> None:
    made = create(fleet, "--tenant", "logged")
    first_answer(api(fleet, made["key"], AMS))
    stream = api(fleet, made["key"], AMS).chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
    )
    assert [c for c in stream]
    # The gateway writes a stream's line once it has sent the stream's end, so the client can see the end first.
    wait_for(
        "the stream's access log line",
        lambda: any(line.get("key_id") == made["id"] and line["stream"] for line in access_log(fleet)),
    )
    data_dir = fleet.log_path.parent / "data"
    lines = access_log(fleet)
    mine = [line for line in lines if line.get("key_id") == made["id"] and line["status"] == 200]
    assert len(mine) >= 2 and {line["stream"] for line in mine} == {False, True}
    for line in mine:
        assert line["tenant"] == "logged" and line["client_metro"] == "ams"
        assert (line["metro"], line["site"], line["scope"], line["attempts"]) == ("ams", "ams1", "metro", 1)
        assert line["request_id"].startswith("req-") and line["tokens_in"] > 0 and line["tokens_out"] > 0
    assert any("ttft_ms" in line for line in mine)
    assert any(line["status"] == 401 for line in lines)
    logs = [fleet.log_path, *data_dir.rglob("*.log")]
    text = "".join(path.read_text(errors="replace") for path in logs) + "".join(fleet.output)
    leaked = [key for key in SECRETS if key in text or key.removeprefix("ep-") in text]
    assert SECRETS and leaked == []
