"""Every fault of the catalogue, and what a client of the faulty metro sees through the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from edgeplane.faults import FaultKind
from tests._time import wait_for
from tests.conftest import (
    SMALL_FLEET,
    RunningFleet,
    gateway_health,
    start_fleet,
    stop_fleet,
    wait_gateway_snapshot,
    wait_gateway_trusts,
)
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
    wait_trusted(fleet, "nyc1")


def pops(fleet: RunningFleet) -> dict[str, dict[str, Any]]:
    return {p["code"]: p for p in json.loads(fleet.cli("status", "--json").stdout)["pops"]}


def wait_trusted(fleet: RunningFleet, pop: str) -> None:
    """Until both judges of the site trust it again: the control plane (its probes and the agent's reports) shows
    it serving, the gateway routes by that snapshot or a later one, and the gateway's own probes trust it."""
    status: dict[str, Any] = {}

    def serving() -> bool:
        status.update(json.loads(fleet.cli("status", "--json").stdout))
        return bool(next(p for p in status["pops"] if p["code"] == pop)["state"] == "serving")

    wait_for(f"{pop} serving again", serving)
    wait_gateway_snapshot(fleet, status["snapshot_version"])
    wait_gateway_trusts(fleet, pop)


def gateway_distrusts(fleet: RunningFleet, pop: str) -> bool:
    """The gateway's own health checks have found the site failing (it is in /healthz's `sites`)."""
    return pop in gateway_health(fleet)["sites"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")  # a zombie has exited


def where(headers: dict[str, str]) -> tuple[str, str, str]:
    """Serving metro, scope, and the path the request took: "direct" (served by the first site tried),
    "retried" (the faulty site tried first, then the next: two attempts) or "avoided" (served elsewhere at the
    first attempt: the gateway's health checks had taken the faulty site out already)."""
    attempts = headers["x-edgeplane-attempts"]
    tried = {"1": "direct", "2": "retried"}.get(attempts, attempts)
    if headers["x-edgeplane-metro"] != "nyc" and tried == "direct":
        tried = "avoided"
    return headers["x-edgeplane-metro"], headers["x-edgeplane-scope"], tried


def test_catalogue_is_listed(fleet: RunningFleet) -> None:
    data = json.loads(fleet.cli("fault", "list", "--json").stdout)
    assert {f["fault"] for f in data["catalogue"]} == {k.value for k in FaultKind}
    refused = fleet.cli("fault", "set", "nyc1", "no-such-fault", check=False)
    assert refused.returncode == 1 and "unknown fault" in refused.stderr


# Faults set with --spare-probes are gray failures: the health probes get whole answers, so only clients'
# requests meet the fault and the gateway can learn of it only by trying the site. Those tests prove the retry
# path (two attempts, every time); the tests without it prove the path of a fault the probes find (avoided).


@pytest.mark.parametrize("name", ["http-429", "http-503", "error-200"])
@pytest.mark.parametrize("stream", [False, True])
def test_error_answers_are_retried_on_the_next_site(faulty: RunningFleet, name: str, stream: bool) -> None:
    faulty.cli("fault", "set", "nyc1", name, "--spare-probes")
    headers, text, finish = chat(faulty, NYC, MODEL, stream=stream)
    assert where(headers) == ("iad", "region", "retried")
    assert text and finish in ("stop", "length")


@pytest.mark.parametrize("name", ["http-503", "error-200"])
def test_a_site_the_probes_find_failing_is_avoided(faulty: RunningFleet, name: str) -> None:
    faulty.cli("fault", "set", "nyc1", name)
    wait_for("the gateway's probes find nyc1 failing", lambda: gateway_distrusts(faulty, "nyc1"))
    headers, text, finish = chat(faulty, NYC, MODEL, stream=True)
    assert where(headers) == ("iad", "region", "avoided")
    assert text and finish in ("stop", "length")


def test_refused_connections_move_the_client_and_come_back(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "refuse-connections", "--seconds", "2")
    wait_for("the gateway finds nyc1 refusing", lambda: gateway_distrusts(faulty, "nyc1"))
    headers, _, _ = chat(faulty, NYC, MODEL)
    assert where(headers) == ("iad", "region", "avoided")
    wait_trusted(faulty, "nyc1")  # listening again after 2 s, then its probes' rise count
    wait_for(
        "New York's clients served in New York again",
        lambda: where(chat(faulty, NYC, MODEL)[0]) == ("nyc", "metro", "direct"),
    )


def test_a_stall_before_the_first_token_is_cut_off_and_retried(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "stall-first-token", "--spare-probes")
    headers, _, finish = chat(faulty, NYC, MODEL, stream=True)  # after the first-token timeout
    assert where(headers) == ("iad", "region", "retried") and finish
    wait_trusted(faulty, "nyc1")  # the spared probes answer: nyc1 is tried first again
    headers, _, finish = chat(faulty, NYC, MODEL, stream=False)  # after the read timeout
    assert where(headers) == ("iad", "region", "retried") and finish


def test_slow_site_still_answers_in_full(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "slow", "--factor", "3")
    headers, text, finish = chat(faulty, NYC, MODEL, stream=True)
    assert where(headers) == ("nyc", "metro", "direct") and text and finish


def test_a_cut_stream_is_resumed_elsewhere_and_marked(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "cut-stream", "--tokens", "2", "--spare-probes")
    headers, text, finish = chat(faulty, NYC, MODEL, stream=False)
    assert where(headers) == ("iad", "region", "retried") and finish

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

    wait_trusted(faulty, "nyc1")  # the spared probes answer, so nyc1 is trusted again
    text = asyncio.run(raw_stream())
    assert ": edgeplane resumed at iad1 after 2 tokens from nyc1" in text
    assert '"finish_reason":"' in text and text.rstrip().endswith("data: [DONE]")
    _, streamed, finish = chat(faulty, NYC, MODEL, stream=True)
    assert streamed and finish in ("stop", "length")


def test_a_cut_stream_that_cannot_be_resumed_ends_with_an_error(faulty: RunningFleet) -> None:
    faulty.cli("fault", "set", "nyc1", "cut-stream", "--tokens", "2")
    others = ["iad", "ord", "ams"]
    try:
        drained = [json.loads(faulty.cli("drain", "metro", m, "--force", "--json").stdout) for m in others]
        version = max(d["snapshot_version"] for d in drained)
        wait_for("the gateway routes by the drains", lambda: gateway_health(faulty)["snapshot_version"] >= version)
        with pytest.raises(openai.APIError, match="cut short after 2 tokens"):
            chat(faulty, NYC, MODEL, stream=True)
    finally:
        for metro in others:
            faulty.cli("undrain", "metro", metro)


def test_a_crash_moves_clients_and_up_restarts_the_agent(faulty: RunningFleet) -> None:
    crashed = pops(faulty)["nyc1"]["pid"]
    faulty.cli("fault", "set", "nyc1", "crash")
    wait_for("the agent of nyc1 has exited", lambda: not alive(crashed))
    headers, _, finish = chat(faulty, NYC, MODEL)
    assert headers["x-edgeplane-metro"] == "iad" and finish
    wait_for(
        "the crashed agent restarted and serving",
        lambda: (p := pops(faulty)["nyc1"])["state"] == "serving" and p["pid"] != crashed,
    )
    wait_trusted(faulty, "nyc1")
    headers, _, _ = chat(faulty, NYC, MODEL)
    assert where(headers) == ("nyc", "metro", "direct")
    assert "restarting site nyc1" in "".join(faulty.output)


def test_faults_are_audited(fleet: RunningFleet) -> None:
    with urllib.request.urlopen(fleet.control_url + "/api/audit") as response:
        audit = json.loads(response.read())["audit"]
    assert any(r["action"] == "fault" and r["target"] == "pop nyc1" for r in audit)


def test_a_fault_that_takes_the_whole_agent_away_cannot_spare_probes(fleet: RunningFleet) -> None:
    for name in ("crash", "refuse-connections"):
        refused = fleet.cli("fault", "set", "nyc1", name, "--spare-probes", check=False)
        assert refused.returncode == 1 and "cannot spare probes" in refused.stderr
    assert pops(fleet)["nyc1"]["fault"] is None
