"""Every fault of the catalogue, and what a client of the faulty metro sees through the gateway."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator

import aiohttp
import openai
import pytest

from edgeplane.faults import FaultKind
from tests.conftest import SMALL_FLEET, RunningFleet, start_fleet, stop_fleet, wait_gateway_trusts
from tests.test_end_to_end import chat

pytestmark = pytest.mark.slow

NYC = "198.18.0.9"  # nyc has one PoP, nyc1; its region's other metro is iad
MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--time-scale", "0.05"]
    argv += ["--first-token-timeout", "1", "--read-timeout", "3"]
    running = start_fleet(argv, tmp_path_factory.mktemp("faults"), fleet_path=SMALL_FLEET, backend="emulator")
    yield running
    stop_fleet(running)


@pytest.fixture
def faulty(fleet: RunningFleet) -> Iterator[RunningFleet]:
    yield fleet
    fleet.cli("fault", "clear", "nyc1", check=False)
    wait_serving(fleet, "nyc1")
    wait_gateway_trusts(fleet, "nyc1")


def wait_serving(fleet: RunningFleet, pop: str, timeout_seconds: float = 30) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        pops = json.loads(fleet.cli("status", "--json").stdout)["pops"]
        if next(p for p in pops if p["code"] == pop)["state"] == "serving":
            return
        time.sleep(0.2)
    raise AssertionError(f"{pop} did not serve again")


def where(headers: dict[str, str]) -> tuple[str, str, str]:
    """Serving metro, scope, and whether the faulty site was tried first ("retried") or already avoided
    because the gateway's health checks had found it failing ("avoided")."""
    attempts = headers["x-edgeplane-attempts"]
    tried = {"1": "direct", "2": "retried"}.get(attempts, attempts)
    if headers["x-edgeplane-metro"] != "nyc" and tried == "direct":
        tried = "avoided"
    return headers["x-edgeplane-metro"], headers["x-edgeplane-scope"], tried


def test_catalogue_is_listed(fleet: RunningFleet) -> None:
    data = json.loads(fleet.cli("fault", "list", "--json").stdout)
    assert {f["fault"] for f in data["catalogue"]} == {k.value for k in FaultKind}
    refused = fleet.cli("fault", "set", "nyc1", "no-such-fault", check=False)
    assert refused.returncode == 1 and "unknown fault" in refused.stdout


@pytest.mark.parametrize("name", ["http-429", "http-503", "error-200"])
@pytest.mark.parametrize("stream", [False, True])
def test_error_answers_are_retried_on_the_next_site(faulty: RunningFleet, name: str, stream: bool) -> None:
    faulty.cli("fault", "set", "nyc1", name)
    headers, text, finish = chat(faulty, NYC, MODEL, stream=stream)
    assert where(headers) in {("iad", "region", "retried"), ("iad", "region", "avoided")}
    assert text and finish in ("stop", "length")


def test_refused_connections_move_the_client_and_come_back(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "refuse-connections", "--seconds", "2")
    headers, _, _ = chat(faulty, NYC, MODEL)
    assert where(headers) in {("iad", "region", "retried"), ("iad", "region", "avoided")}
    time.sleep(2.5)
    wait_gateway_trusts(faulty, "nyc1")
    headers, _, _ = chat(faulty, NYC, MODEL)
    assert where(headers) == ("nyc", "metro", "direct")


def test_a_stall_before_the_first_token_is_cut_off_and_retried(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "stall-first-token")
    headers, _, finish = chat(faulty, NYC, MODEL, stream=True)
    assert where(headers) in {("iad", "region", "retried"), ("iad", "region", "avoided")} and finish
    headers, _, finish = chat(faulty, NYC, MODEL, stream=False)  # after the read timeout
    assert where(headers) in {("iad", "region", "retried"), ("iad", "region", "avoided")} and finish


def test_slow_site_still_answers_in_full(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "slow", "--factor", "3")
    headers, text, finish = chat(faulty, NYC, MODEL, stream=True)
    assert where(headers) == ("nyc", "metro", "direct") and text and finish


def test_a_cut_stream_is_resumed_elsewhere_and_marked(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "cut-stream", "--tokens", "2")
    headers, text, finish = chat(faulty, NYC, MODEL, stream=False)
    assert where(headers) in {("iad", "region", "retried"), ("iad", "region", "avoided")} and finish

    async def raw_stream() -> str:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": True}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                faulty.gateway_url + "/v1/chat/completions", json=body, headers={"X-Forwarded-For": NYC}
            ) as response,
        ):
            assert response.headers["x-edgeplane-metro"] == "nyc"
            return (await response.read()).decode()

    import asyncio

    wait_gateway_trusts(faulty, "nyc1")  # a one-token probe passes the cut, so nyc1 is trusted again
    text = asyncio.run(raw_stream())
    assert ": edgeplane resumed at iad1 after 2 tokens from nyc1" in text
    assert '"finish_reason":"' in text and text.rstrip().endswith("data: [DONE]")
    _, streamed, finish = chat(faulty, NYC, MODEL, stream=True)
    assert streamed and finish in ("stop", "length")


def test_a_cut_stream_that_cannot_be_resumed_ends_with_an_error(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "cut-stream", "--tokens", "2")
    others = ["iad", "ord", "ams"]
    try:
        for metro in others:
            faulty.cli("drain", "metro", metro, "--force")
        time.sleep(0.3)
        with pytest.raises(openai.APIError, match="cut short after 2 tokens"):
            chat(faulty, NYC, MODEL, stream=True)
    finally:
        for metro in others:
            faulty.cli("undrain", "metro", metro)


def test_a_crash_moves_clients_and_up_restarts_the_agent(faulty: RunningFleet) -> None:
    before = {p["code"]: p["pid"] for p in json.loads(faulty.cli("status", "--json").stdout)["pops"]}
    faulty.cli("fault", "set", "nyc1", "crash")
    time.sleep(0.2)
    headers, _, finish = chat(faulty, NYC, MODEL)
    assert headers["x-edgeplane-metro"] == "iad" and finish
    deadline = time.monotonic() + 30
    while True:
        pops = {p["code"]: p for p in json.loads(faulty.cli("status", "--json").stdout)["pops"]}
        if pops["nyc1"]["state"] == "serving" and pops["nyc1"]["pid"] != before["nyc1"]:
            break
        assert time.monotonic() < deadline, "the crashed agent was not restarted"
        time.sleep(0.2)
    wait_gateway_trusts(faulty, "nyc1")
    headers, _, _ = chat(faulty, NYC, MODEL)
    assert where(headers) == ("nyc", "metro", "direct")
    assert "restarting site nyc1" in "".join(faulty.output)


def test_faults_are_audited(fleet: RunningFleet) -> None:
    import urllib.request

    with urllib.request.urlopen(fleet.control_url + "/api/audit") as response:
        audit = json.loads(response.read())["audit"]
    assert any(r["action"] == "fault" and r["target"] == "pop nyc1" for r in audit)
