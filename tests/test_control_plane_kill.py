"""Under load from every metro, `kill -9` of the control plane: gateways and agents serve on, `up` brings it
back, and what it kept (drains, keys, revocations) is in force before, during and after."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, SMALL_FLEET, RunningFleet, gateway_health, start_fleet, stop_fleet
from tests.test_up_restart import healthy, service_pid, wait_restarted

pytestmark = pytest.mark.slow

CLIENTS = {"nyc": "198.18.0.9", "iad": "198.18.16.9", "ord": "198.18.32.9", "ams": "198.18.48.9"}
HELLO: Any = [{"role": "user", "content": "Say hello from the edge."}]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--time-scale", "0.05"]
    running = start_fleet(
        [*argv, "--auth", "on"], tmp_path_factory.mktemp("control-kill"), fleet_path=SMALL_FLEET,
        backend="emulator", env={"EDGEPLANE_ADMIN_TOKEN": "kill-admin-token"},
    )  # fmt: skip
    yield running
    stop_fleet(running)


def sdk(fleet: RunningFleet, key: str, metro: str) -> OpenAI:
    made = OpenAI(
        base_url=fleet.gateway_url + "/v1", api_key=key, max_retries=0, timeout=30,
        default_headers={"X-Forwarded-For": CLIENTS[metro]},
    )  # fmt: skip
    OPEN_CLIENTS.append(made)
    return made


def test_a_killed_control_plane_loses_no_request_and_comes_back_with_what_it_kept(fleet: RunningFleet) -> None:
    key = json.loads(fleet.cli("keys", "create", "--tenant", "steady", "--json").stdout)["key"]
    revoked = json.loads(fleet.cli("keys", "create", "--tenant", "gone", "--json").stdout)
    fleet.cli("keys", "revoke", revoked["id"])
    fleet.cli("drain", "metro", "ord", "--force")

    def refused(secret: str) -> bool:
        try:
            sdk(fleet, secret, "nyc").chat.completions.create(model="tiny-llama", messages=HELLO, max_tokens=2)
        except openai.AuthenticationError:
            return True
        return False

    def ord_elsewhere() -> bool:
        answer = sdk(fleet, key, "ord").chat.completions.with_raw_response.create(
            model="tiny-llama", messages=HELLO, max_tokens=2
        )
        return answer.headers["x-edgeplane-metro"] != "ord"

    wait_for("the gateway took the key", lambda: not refused(key))
    wait_for("the gateway saw the revocation", lambda: refused(revoked["key"]))
    wait_for("the drain reached the gateway", ord_elsewhere)

    stop = threading.Event()
    served: list[tuple[str, str]] = []  # (client metro, serving metro)
    failures: list[str] = []

    def load(metro: str) -> None:
        client = sdk(fleet, key, metro)
        while not stop.is_set():
            for model, stream in (("tiny-llama", False), ("tiny-chat", True), ("tiny-llama", True)):
                try:
                    answer = client.chat.completions.with_raw_response.create(
                        model=model, messages=HELLO, max_tokens=8, stream=stream
                    )
                    if stream:
                        finish = [c.choices[0].finish_reason for c in answer.parse() if c.choices]
                        assert finish and finish[-1] in ("stop", "length"), finish
                    served.append((metro, answer.headers["x-edgeplane-metro"]))
                except (openai.APIError, AssertionError) as error:
                    failures.append(f"{metro} {model}: {error!r}")

    threads = [threading.Thread(target=load, args=(metro,)) for metro in CLIENTS for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_for("every metro's clients are served", lambda: {metro for metro, _ in served} == set(CLIENTS))
        before = len(served)
        victim = service_pid(fleet, "control")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_for("the killed control plane stops answering", lambda: not healthy(fleet.control_url), every=0.02)
        wait_restarted(fleet, "control", fleet.control_url, victim, within_seconds=30)
        back_seconds = time.monotonic() - killed
        # The gateway takes its snapshots again: the restarted plane's versions begin above every earlier one.
        restarted = json.loads(fleet.cli("status", "--json").stdout)["snapshot_version"]
        wait_for(
            "the gateway takes the restarted control plane's snapshot",
            lambda: (
                (health := gateway_health(fleet))["control_plane_reachable"] and health["snapshot_version"] >= restarted
            ),
        )
        since = len(served)
        wait_for(
            "every metro's clients are served after the restart",
            lambda: {metro for metro, _ in served[since:]} == set(CLIENTS),
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    print(f"control plane back after {back_seconds:.2f} s; {len(served)} requests, {len(failures)} failed")
    assert failures == []
    assert len(served) > before > 0
    assert back_seconds <= 5
    assert all(where != "ord" for metro, where in served if metro == "ord")  # the drain held throughout
    assert not refused(key) and refused(revoked["key"])  # keys and revocations too, after the restart
    drains = json.loads(fleet.cli("status", "--json").stdout)["drains"]
    assert [(d["kind"], d["code"]) for d in drains] == [("metro", "ord")]
    fleet.cli("undrain", "metro", "ord")
