"""`up --store postgresql://... --control-replicas 3` under load from every metro (the official openai SDK):
kill -9 of the leading replica loses no request, a new leader is in place within 5 s, and a drain sent to a
surviving replica right after the kill takes effect at the gateway within 2 s."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, SMALL_FLEET, start_fleet, stop_fleet

pytestmark = pytest.mark.slow

CLIENTS = {"nyc": "198.18.0.10", "iad": "198.18.16.10", "ord": "198.18.32.10", "ams": "198.18.48.10"}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


class Load:
    """One thread per metro sending chat completions through the gateway until stopped; every answer's serving
    site and time kept, every failure kept."""

    def __init__(self, gateway_url: str) -> None:
        self.gateway_url = gateway_url
        self.served: list[tuple[str, str, float]] = []  # (client metro, site, when)
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(m,), daemon=True) for m in CLIENTS]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, metro: str) -> None:
        api = OpenAI(
            base_url=self.gateway_url + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=30,
            default_headers={"X-Forwarded-For": CLIENTS[metro]},
        )  # fmt: skip
        OPEN_CLIENTS.append(api)
        while not self._stop.is_set():
            try:
                raw = api.chat.completions.with_raw_response.create(
                    model="tiny-llama", messages=[{"role": "user", "content": "hello"}], max_tokens=4
                )
                raw.parse()
                self.served.append((metro, raw.headers.get("x-edgeplane-site", ""), time.monotonic()))
            except Exception as error:  # every failure is what the test counts
                self.failed.append(f"{metro}: {type(error).__name__}: {error}")


def test_the_leaders_kill_loses_no_request_and_a_drain_at_a_survivor_reaches_the_gateway(
    tmp_path: Path, postgres_url: str
) -> None:
    argv = [
        sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--time-scale", "0.02",
        "--store", postgres_url, "--control-replicas", "3",
    ]  # fmt: skip
    running = start_fleet(argv, tmp_path, fleet_path=SMALL_FLEET, backend="emulator")
    try:
        status = _get(running.control_url + "/api/status")
        assert len(status["control"]) == 3 and [r["leader"] for r in status["control"]].count(True) == 1
        (leader,) = [r for r in status["control"] if r["leader"]]
        survivors = [r["url"] for r in status["control"] if not r["leader"]]
        with Load(running.gateway_url) as load:
            wait_for("load from every metro", lambda: {m for m, _, _ in load.served} == set(CLIENTS), 30)
            os.kill(leader["pid"], signal.SIGKILL)
            killed = time.monotonic()
            _post(survivors[0] + "/api/drains", {"kind": "pop", "code": "ord1", "force": True})
            drained = time.monotonic()

            def ord_moved() -> bool:
                after = [site for metro, site, at in load.served if metro == "ord" and at > drained + 0.1]
                return len(after) >= 3 and "ord1" not in after

            wait_for("ord's clients served elsewhere", ord_moved, 10)
            first_elsewhere = min(
                at for metro, site, at in load.served if metro == "ord" and at > drained and site != "ord1"
            )
            assert first_elsewhere - drained <= 2.0, f"the drain took {first_elsewhere - drained:.2f} s at the gateway"

            def new_leader() -> bool:
                listed = _get(survivors[1] + "/api/status")["control"]
                return any(r["leader"] and r["pid"] != leader["pid"] for r in listed)

            wait_for("a new leader", new_leader, 10)
            took = time.monotonic() - killed
            assert took <= 5.0, f"a new leader after {took:.1f} s"
            time.sleep(1.0)
        assert not load.failed, load.failed[:5]
        assert len(load.served) > 40
    finally:
        stop_fleet(running)
