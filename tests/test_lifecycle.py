"""`edgeplane up` as a process tree: a killed site agent is a real failure, and SIGTERM leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests._time import wait_for
from tests.conftest import SMALL_FLEET, session_pids, start_fleet, stop_fleet, wait_gateway_trusts
from tests.test_end_to_end import chat

pytestmark = pytest.mark.slow


def test_killed_site_is_routed_around_restarted_and_sigterm_stops_everything(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--time-scale", "0.05"]
    running = start_fleet(argv, tmp_path, fleet_path=SMALL_FLEET, backend="emulator")
    try:
        pops = {p["code"]: p for p in json.loads(running.cli("status", "--json").stdout)["pops"]}
        os.kill(pops["nyc1"]["pid"], signal.SIGKILL)
        headers, _, _ = chat(running, "198.18.0.9", "tiny-llama")
        assert (headers["x-edgeplane-metro"], headers["x-edgeplane-scope"]) == ("iad", "region")
        assert headers["x-edgeplane-attempts"] in ("1", "2")  # 1 when a probe found it down first

        def restarted() -> bool:
            now = {p["code"]: p for p in json.loads(running.cli("status", "--json").stdout)["pops"]}
            return bool(now["nyc1"]["state"] == "serving" and now["nyc1"]["pid"] != pops["nyc1"]["pid"])

        wait_for("up restarts the killed site agent", restarted)
        wait_gateway_trusts(running, "nyc1")
        headers, _, _ = chat(running, "198.18.0.9", "tiny-llama")
        assert (headers["x-edgeplane-metro"], headers["x-edgeplane-scope"]) == ("nyc", "metro")
    finally:
        sid = os.getsid(running.process.pid)
        code = stop_fleet(running)
    assert code == 0
    assert "stopped" in "".join(running.output)
    assert session_pids(sid) == [], "edgeplane up left processes behind"
