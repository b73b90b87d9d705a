"""Placement uses the fabric: on a small fleet served by real llama.cpp servers, `plan placement --apply` places a
model at a site that lacks its weights; the GGUF travels over the fabric's (slow) link, the site reports the
weights' progress while it waits, and answers the official openai SDK for that model only once the file arrived
and verified."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, SMALL_FLEET, RunningFleet, start_fleet, stop_fleet

pytestmark = pytest.mark.slow

LINK_SCALE = 2e-6  # 400 Gbit/s runs at 100 kB/s: the tiny GGUF (about 0.5 MB) takes seconds
MODEL = "tiny-chat"  # placed at nyc1 and ams1 by the fleet file; the demand below moves it to iad1 too


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[RunningFleet]:
    tmp = tmp_path_factory.mktemp("fabric-llamacpp")
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--backend", "llamacpp"]
    argv += ["--gguf", str(tiny_gguf), "--link-scale", str(LINK_SCALE)]
    running = start_fleet(argv, tmp, fleet_path=SMALL_FLEET, backend="llamacpp")
    yield running
    stop_fleet(running)


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())


def pop_status(fleet: RunningFleet, pop: str) -> dict[str, Any]:
    return dict(next(p for p in get(fleet.control_url + "/api/status")["pops"] if p["code"] == pop))


def test_a_placed_model_serves_only_once_its_gguf_arrived_over_the_fabric(
    fleet: RunningFleet, tiny_gguf: Path, tmp_path: Path
) -> None:
    from openai import NotFoundError, OpenAI

    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    pushed = fleet.cli(
        "fabric", "push", str(tiny_gguf), "--name", MODEL, "--from", "nyc1", "--to", "nyc1", "--chunk-bytes", "65536",
        "--json",
    )  # fmt: skip
    assert json.loads(pushed.stdout)["sha256"] == sha
    iad1 = pop_status(fleet, "iad1")
    assert MODEL not in iad1["models"]
    agent = OpenAI(base_url=iad1["url"] + "/v1", api_key="unused", max_retries=0)
    OPEN_CLIENTS.append(agent)

    demand = tmp_path / "demand.csv"
    demand.write_text(
        "metro,model,requests_per_second,prompt_tokens,output_tokens\nnyc,tiny-llama,1,100,20\nord,tiny-chat,3,100,20\n"
    )
    applied = fleet.cli("plan", "placement", "--fleet", str(SMALL_FLEET), "--demand", str(demand), "--apply", "--json")
    assert f"{MODEL}@iad1" in json.loads(applied.stdout)["applied"]["added"]

    seen_waiting = False

    def served() -> bool:
        nonlocal seen_waiting
        try:
            agent.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        except NotFoundError:
            # Refused; and the site says (after it refused, so also when it refused) its weights are not all here.
            waiting = get(iad1["url"] + "/api/state")["loading_weights"]
            if waiting is not None and waiting["bytes_held"] < (waiting["size_bytes"] or 1):
                seen_waiting = True
            return False
        return True

    wait_for(f"{MODEL} served at iad1", served, timeout_seconds=120, every=0.2)
    assert seen_waiting, "iad1 reported the weights on their way before it served the model"
    answer = agent.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert answer.choices[0].message is not None

    def reported() -> bool:  # the control plane hears it with iad1's next report
        held = json.loads(fleet.cli("fabric", "status", MODEL, "--json").stdout)["objects"][0]
        return {s["pop"]: s["sha256"] for s in held["sites"] if s["complete"]}.get("iad1") == sha

    wait_for("iad1 reports the weights it holds, hashed from its disk", reported, timeout_seconds=30)


def test_a_drain_that_would_send_traffic_to_a_site_without_the_weights_is_refused(
    fleet: RunningFleet, tmp_path: Path
) -> None:
    """tiny-llama serves at nyc1 and iad1 (the placement above); its weights are pushed now, so iad1, which takes
    nyc's traffic when nyc is drained, is cold until they arrive over the slow link."""
    weights = tmp_path / "tiny-llama.bin"
    weights.write_bytes(os.urandom(1_500_000))  # about 15 s over the link
    fleet.cli("fabric", "push", str(weights), "--name", "tiny-llama", "--from", "nyc1", "--to", "nyc1", "--no-wait")

    refused = fleet.cli("drain", "metro", "nyc", check=False)
    assert refused.returncode == 1
    assert "tiny-llama of nyc1 would go to iad1" in refused.stderr and "start cold" in refused.stderr
    assert "--force" in refused.stderr

    demand = tmp_path / "demand.csv"
    demand.write_text("metro,model,requests_per_second,prompt_tokens,output_tokens\nnyc,tiny-llama,1,100,20\n")
    plan = ["plan", "scenarios", "--fleet", str(SMALL_FLEET), "--demand", str(demand), "--json"]
    rows = json.loads(fleet.cli(*plan).stdout)["scenarios"]
    drained = next(row for row in rows if row["scenario"] == "drain metro nyc")
    assert any(c["pop"] == "iad1" and c["model"] == "tiny-llama" and c["held_share"] < 1 for c in drained["cold"])

    def warm() -> bool:
        held = json.loads(fleet.cli("fabric", "status", "tiny-llama", "--json").stdout)["objects"][0]
        return any(s["pop"] == "iad1" and s["complete"] for s in held["sites"])

    wait_for("iad1 holds tiny-llama's weights", warm, timeout_seconds=120, every=0.5)
    rows = json.loads(fleet.cli(*plan).stdout)["scenarios"]  # (the fleet file places it at ord1 and ams1 too)
    drained = next(row for row in rows if row["scenario"] == "drain metro nyc")
    assert not [c for c in drained["cold"] if c["pop"] == "iad1"]
    accepted = fleet.cli("drain", "metro", "nyc", "--json")
    assert json.loads(accepted.stdout)["drained"] is True
    fleet.cli("undrain", "metro", "nyc")
