"""`edgeplane up` restarts a dead control plane or gateway like a site agent, and keeps running itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._time import wait_for
from tests.conftest import ROOT, SMALL_FLEET, RunningFleet, free_port, start_fleet, stop_fleet

pytestmark = pytest.mark.slow

UP = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--time-scale", "0.05"]


def children(pid: int) -> dict[int, list[str]]:
    """The processes whose parent is ``pid``, with their command lines, read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        # The command name in parentheses may hold spaces; the parent pid is the second field after it.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def service_pid(running: RunningFleet, service: str) -> int:
    """The pid of up's child running `edgeplane SERVICE run`."""
    for pid, argv in children(running.process.pid).items():
        if (
            "edgeplane" in argv
            and service in argv
            and argv[argv.index(service) + 1 : argv.index(service) + 2] == ["run"]
        ):
            return pid
    raise AssertionError(f"up has no {service} child")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=1) as response:
            return bool(json.loads(response.read())["status"] == "ok")
    except (OSError, ValueError, KeyError):
        return False


def wait_restarted(running: RunningFleet, service: str, url: str, killed: int, within_seconds: float) -> float:
    """Seconds until a new process of ``service`` answers at ``url``; fails past ``within_seconds``."""

    def restarted() -> bool:
        assert running.process.poll() is None, "up ended:\n" + "".join(running.output[-30:])
        try:
            return service_pid(running, service) != killed and healthy(url)
        except AssertionError:
            return False  # between the death and the restart up has no such child

    return wait_for(f"a new {service} at {url}", restarted, within_seconds)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    """Started on a wiped store with --reset-store, which only the control plane's first start may act on."""
    tmp = tmp_path_factory.mktemp("up-restart")
    (tmp / "data").mkdir()
    (tmp / "data" / "edgeplane.db").write_bytes(b"")
    running = start_fleet([*UP, "--reset-store"], tmp, fleet_path=SMALL_FLEET, backend="emulator")
    yield running
    assert stop_fleet(running) == 0


def test_up_says_it_is_up_once_every_agent_has_reported(fleet: RunningFleet) -> None:
    status = json.loads(fleet.cli("status", "--json").stdout)
    assert [(p["code"], p["state"]) for p in status["pops"] if p["pid"] is None or p["state"] != "serving"] == []
    assert {p["pid"] for p in status["pops"]} <= set(children(fleet.process.pid))


def test_a_killed_control_plane_is_restarted_on_its_port_with_its_drains(fleet: RunningFleet) -> None:
    fleet.cli("drain", "pop", "iad1", "--force")
    killed = service_pid(fleet, "control")
    os.kill(killed, signal.SIGKILL)
    wait_restarted(fleet, "control", fleet.control_url, killed, within_seconds=10)
    assert fleet.process.poll() is None
    drains = json.loads(fleet.cli("status", "--json").stdout)
    assert {p["code"]: p["state"] for p in drains["pops"]}["iad1"] == "drained"
    output = "".join(fleet.output)
    assert f"control (pid {killed}) exited with status -9" in output and "restarting control" in output
    data = fleet.log_path.parent / "data"  # where start_fleet put it
    assert len(list(data.glob("edgeplane.db.broken-*"))) == 1  # the restart did not reset the store again
    fleet.cli("undrain", "pop", "iad1")


def test_a_killed_gateway_is_restarted_on_its_port(fleet: RunningFleet) -> None:
    killed = service_pid(fleet, "gateway")
    os.kill(killed, signal.SIGKILL)
    wait_restarted(fleet, "gateway", fleet.gateway_url, killed, within_seconds=10)
    assert fleet.process.poll() is None
    assert f"gateway (pid {killed}) exited with status -9" in "".join(fleet.output)


def test_a_control_plane_that_cannot_start_ends_up(tmp_path: Path) -> None:
    """A taken port: up tries a few times with back-off, then says why and stops, starting nothing else."""
    control_port = free_port()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        taken.bind(("127.0.0.1", control_port))
        taken.listen()
        argv = [*UP, "--data-dir", str(tmp_path / "data"), "--port", str(free_port())]
        done = subprocess.run(
            [*argv, "--control-port", str(control_port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "200"},
        )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "control exited with status 1 3 times while starting" in output
    assert output.count(f"cannot listen on 127.0.0.1:{control_port}") == 3
    assert "Traceback" not in output and "edgeplane is up" not in output
