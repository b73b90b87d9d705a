"""Shared fixtures: free ports, a tiny GGUF made on the spot, and whole fleets started as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgeplane.site import write_tiny_llama_gguf
from tests._time import wait_for

pytest_plugins = ["tests._postgres"]  # the PostgreSQL cluster fixtures

ROOT = Path(__file__).resolve().parent.parent
SMALL_FLEET = Path(__file__).resolve().parent / "data" / "small-fleet.yaml"


def _ephemeral_ports() -> range:
    try:
        low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_PICKED: set[int] = set()


def free_port() -> int:
    """A free loopback port outside the kernel's ephemeral range. A port the kernel handed out for
    port 0 could be handed again, to a site agent that `up` starts on port 0, before the gateway
    that was told to use it binds it; a port below the range is never handed out that way."""
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(20000, 32768) if p not in ephemeral and p not in _PICKED]
    for port in random.sample(candidates, k=min(200, len(candidates))):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PICKED.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Clients a test made (the openai SDK's among them), closed when it ends.
OPEN_CLIENTS: list[Any] = []


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Close what the test opened, then collect, so that a resource a test leaks is reported against it."""
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()
    gc.collect()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("models") / "tiny-llama.gguf")


@dataclass
class RunningFleet:
    """`edgeplane up` running as a real process tree."""

    process: subprocess.Popen[str]
    gateway_url: str
    control_url: str
    log_path: Path
    fleet_path: Path | None
    backend: str
    output: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.extra_env, "EDGEPLANE_CONTROL_URL": self.control_url}

    def cli(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgeplane", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )


def start_fleet(
    argv: list[str], tmp: Path, *, fleet_path: Path | None, backend: str, env: dict[str, str] | None = None
) -> RunningFleet:
    port, control_port = free_port(), free_port()
    log_path = tmp / "up.log"
    process = subprocess.Popen(
        [*argv, "--port", str(port), "--control-port", str(control_port), "--data-dir", str(tmp / "data")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )
    running = RunningFleet(
        process,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{control_port}",
        log_path,
        fleet_path,
        backend,
        extra_env=dict(env or {}),
    )
    up = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        with log_path.open("w") as log:
            for line in process.stdout:
                running.output.append(line)
                log.write(line)
                log.flush()
                if "edgeplane is up" in line:
                    up.set()

    threading.Thread(target=pump, daemon=True).start()
    with contextlib.suppress(AssertionError):  # said below, with up's output
        wait_for("edgeplane up says it is up (or ends)", lambda: up.is_set() or process.poll() is not None, 180)
    if not up.is_set():
        stop_fleet(running)
        raise RuntimeError("edgeplane up did not come up:\n" + "".join(running.output[-60:]))
    return running


def gateway_health(fleet: RunningFleet) -> dict[str, Any]:
    """The gateway's /healthz JSON (`snapshot_version`, `control_plane_reachable`, `sites` it does not trust),
    also while it answers 503 (no snapshot or no site to send to)."""
    try:
        with urllib.request.urlopen(fleet.gateway_url + "/healthz", timeout=5) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as error:
        with error:
            return dict(json.loads(error.read()))


def wait_gateway_trusts(fleet: RunningFleet, pop: str, timeout_seconds: float = 30) -> None:
    """Until the gateway's own probes have brought the site back (its rise count, after its ejection)."""
    wait_for(f"the gateway takes {pop} back", lambda: pop not in gateway_health(fleet)["sites"], timeout_seconds, 0.2)


def wait_gateway_snapshot(fleet: RunningFleet, version: int, timeout_seconds: float = 30) -> None:
    """Until the gateway routes by the control plane's snapshot ``version`` or a later one."""
    wait_for(
        f"the gateway takes snapshot v{version}",
        lambda: (gateway_health(fleet)["snapshot_version"] or 0) >= version,
        timeout_seconds,
    )


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == sid:
                pids.append(int(entry.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


@contextlib.asynccontextmanager
async def serving(service: Any) -> AsyncIterator[str]:
    """Run a service object (anything with ``run(host, port, on_ready=, stop=)``) on a free loopback port."""
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(service.run("127.0.0.1", 0, on_ready=ready.set_result, stop=stop))
    try:
        yield await ready
    finally:
        stop.set()
        await task


def terminate(process: subprocess.Popen[Any], timeout_seconds: float) -> bool:
    """SIGTERM a process started in its own session, as a user would stop it; if it is not gone in time,
    SIGKILL its whole group as a safety net. True if SIGTERM alone stopped it."""
    if process.poll() is not None:
        return True
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_seconds)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


def stop_fleet(running: RunningFleet) -> int | None:
    """SIGTERM `up` as a user would, and return its exit code; kill whatever it left as a safety net."""
    process = running.process
    terminate(process, 30)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


@pytest.fixture(scope="session")
def emulator_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    """The default fleet as a new user starts it: `scripts/run`, emulator backend."""
    tmp = tmp_path_factory.mktemp("emulator-fleet")
    running = start_fleet(
        [str(ROOT / "scripts" / "run"), "--time-scale", "0.05"], tmp, fleet_path=None, backend="emulator"
    )
    yield running
    stop_fleet(running)


@pytest.fixture(scope="session")
def llamacpp_fleet(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[RunningFleet]:
    """A small fleet whose every site serves through a real llama.cpp server on a tiny GGUF."""
    tmp = tmp_path_factory.mktemp("llamacpp-fleet")
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--backend", "llamacpp"]
    running = start_fleet([*argv, "--gguf", str(tiny_gguf)], tmp, fleet_path=SMALL_FLEET, backend="llamacpp")
    yield running
    stop_fleet(running)
