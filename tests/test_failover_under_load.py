"""kill -9 of a site agent under steady load from every metro: nothing lost, nothing falsely complete."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from edgeplane.fleet import load_default_fleet
from tests._time import wait_for
from tests.conftest import start_fleet, stop_fleet, wait_gateway_trusts
from tests.test_end_to_end import sdk

pytestmark = pytest.mark.slow

MODEL = "llama-3.1-8b-instruct"
VICTIM, VICTIM_METRO = "lon1", "lon"


@dataclass
class Result:
    client_metro: str
    stream: bool
    started: float
    ended: float
    outcome: str  # "complete", "error event" (a stream the client saw fail), "failed" (no answer)
    metro: str = ""
    attempts: str = ""


def run_client(gateway: str, client: str, metro: str, stream: bool, stop: threading.Event, out: list[Result]) -> None:
    from tests.conftest import RunningFleet

    api = sdk(RunningFleet(None, gateway, "", Path("."), None, "emulator"), client)  # type: ignore[arg-type]
    messages = [{"role": "user", "content": f"hello from {metro}"}]
    while not stop.is_set():
        started = time.monotonic()
        try:
            raw = api.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=messages,
                max_tokens=24,
                stream=stream,  # type: ignore[arg-type]
            )
            where = (raw.headers["x-edgeplane-metro"], raw.headers["x-edgeplane-attempts"])
            if stream:
                finish = None
                for chunk in raw.parse():
                    for choice in chunk.choices:
                        finish = choice.finish_reason or finish
                outcome = "complete" if finish else "ended without a finish"
            else:
                outcome = "complete" if raw.parse().choices[0].finish_reason else "ended without a finish"
            out.append(Result(metro, stream, started, time.monotonic(), outcome, *where))
        except openai.APIStatusError as error:
            out.append(Result(metro, stream, started, time.monotonic(), f"failed ({error.status_code})"))
        except openai.APIError:
            out.append(Result(metro, stream, started, time.monotonic(), "error event"))


def test_kill_9_of_a_site_agent_under_load(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "edgeplane", "up", "--time-scale", "0.3"]
    running = start_fleet(argv, tmp_path, fleet_path=None, backend="emulator")
    try:
        fleet = load_default_fleet()
        stop = threading.Event()
        results: list[Result] = []
        threads = []
        for metro in fleet.metros:
            client = str(ipaddress.ip_network(metro.client_prefixes[0]).network_address + 11)
            for stream in (False, True):
                threads.append(
                    threading.Thread(
                        target=run_client,
                        args=(running.gateway_url, client, metro.code, stream, stop, results),
                        daemon=True,
                    )
                )
        for thread in threads:
            thread.start()
        wait_for(
            "every client has had an answer",
            lambda: (
                {(r.client_metro, r.stream) for r in results if r.outcome == "complete"}
                == {(m.code, stream) for m in fleet.metros for stream in (False, True)}
            ),
        )
        pid = next(p["pid"] for p in json.loads(running.cli("status", "--json").stdout)["pops"] if p["code"] == VICTIM)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # Not a wait for a condition: the load goes on for 4 s after the kill, past the window looked at below.
        time.sleep(4.0)
        stop.set()
        for thread in threads:
            thread.join(60)

        # Nothing that had not started streaming was lost, and nothing ended looking complete when it was not.
        assert results
        assert [r for r in results if r.outcome.startswith("failed")] == []
        assert [r for r in results if r.outcome == "ended without a finish"] == []
        errors = [r for r in results if r.outcome == "error event"]
        assert all(r.stream and r.client_metro == VICTIM_METRO for r in errors)
        # Within a second of the failure, London's requests no longer pay a try at the dead site.
        later = [
            r for r in results if r.client_metro == VICTIM_METRO and killed_at + 1.0 <= r.started <= killed_at + 3.0
        ]
        assert later and all(r.attempts == "1" for r in later), [(r.metro, r.attempts) for r in later]
        assert any(r.metro != VICTIM_METRO for r in later)
        # Other metros never noticed.
        others = [r for r in results if r.client_metro != VICTIM_METRO]
        assert all(r.metro == r.client_metro for r in others), [
            (r.client_metro, r.metro, r.attempts) for r in others if r.metro != r.client_metro
        ]

        # up restarts the agent; once it passes its rise count, London is served in London again.
        wait_gateway_trusts(running, VICTIM)
        london = sdk(running, "198.18.96.11")

        def served_in_london() -> bool:
            raw = london.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "back?"}], max_tokens=2
            )
            return raw.headers["x-edgeplane-metro"] == VICTIM_METRO

        wait_for("London served in London again", served_in_london, every=0.3)
        assert f"restarting site {VICTIM}" in "".join(running.output)
    finally:
        stop_fleet(running)
