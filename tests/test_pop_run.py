"""`edgeplane pop run` as a PoP host runs it: a control plane of its own, two PoPs of the small fleet as real
process trees on loopback, the official openai SDK against each PoP's gateway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openai import OpenAI

from edgeplane.cli import cli
from tests._time import wait_for
from tests.bgp._bird import transit
from tests.conftest import OPEN_CLIENTS, ROOT, SMALL_FLEET, free_port, session_pids, terminate

pytestmark = pytest.mark.slow

AMS_CLIENT = "198.18.48.7"  # in Amsterdam's client prefix (the small fleet)


@dataclass
class Running:
    """One process started in its own session, its stdout read line by line."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == name:
                    found.append(event)
        return found


def start(argv: list[str], log: Path) -> Running:
    with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "edgeplane", *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    running = Running(process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return running


def stop(running: Running) -> None:
    terminate(running.process, 30)
    if running.process.stdout is not None:
        running.process.stdout.close()


def get(url: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


@dataclass
class Pop:
    code: str
    gateway_url: str
    running: Running
    log: Path


@dataclass
class Edge:
    control_url: str
    pops: dict[str, Pop]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgeplane", "--control", self.control_url, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )


def start_pop(control_url: str, code: str, tmp: Path, *extra: str) -> Pop:
    port, agent_port = free_port(), free_port()
    argv = ["--control", control_url, "pop", "run", "--pop", code, "--fleet", str(SMALL_FLEET), "--json"]
    argv += ["--port", str(port), "--agent-port", str(agent_port), "--data-dir", str(tmp / code)]
    log = tmp / f"pop-{code}.log"
    running = start([*argv, "--time-scale", "0.05", *extra], log)
    pop = Pop(code, f"http://127.0.0.1:{port}", running, log)
    with contextlib.suppress(AssertionError):
        wait_for(f"pop {code} ready", lambda: running.events("ready") or running.process.poll() is not None, 90)
    if not running.events("ready"):
        stop(running)
        raise RuntimeError(f"pop run --pop {code} did not become ready:\n{''.join(running.lines)}{log.read_text()}")
    return pop


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("pop-run")
    control_port = free_port()
    control_url = f"http://127.0.0.1:{control_port}"
    control = start(
        [
            "control",
            "run",
            "--fleet",
            str(SMALL_FLEET),
            "--port",
            str(control_port),
            "--data-dir",
            str(tmp / "control"),
        ],
        tmp / "control.log",
    )
    pops: dict[str, Pop] = {}
    try:
        wait_for("the control plane", lambda: _answers(control_url + "/healthz"), 60)
        for code in ("nyc1", "ams1"):
            pops[code] = start_pop(control_url, code, tmp)
        yield Edge(control_url, pops)
    finally:
        for pop in pops.values():
            stop(pop.running)
        stop(control)


def _answers(url: str) -> bool:
    try:
        get(url)
    except OSError:
        return False
    return True


def sdk(pop: Pop, forwarded_for: str | None = None) -> OpenAI:
    made = OpenAI(
        base_url=pop.gateway_url + "/v1",
        api_key="not-needed-on-loopback",
        default_headers={"X-Forwarded-For": forwarded_for} if forwarded_for else None,
        max_retries=0,
        timeout=30,
    )
    OPEN_CLIENTS.append(made)
    return made


def chat(pop: Pop, *, stream: bool = False, forwarded_for: str | None = None) -> dict[str, str]:
    """One chat completion through the SDK; its edgeplane headers."""
    raw = sdk(pop, forwarded_for).chat.completions.with_raw_response.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hello"}], max_tokens=8, stream=stream
    )
    headers = {k: v for k, v in raw.headers.items() if k.startswith("x-edgeplane-")}
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        assert raw.parse().choices[0].message.content
    return headers


def served_at(pop: Pop, site: str, *, forwarded_for: str | None = None, timeout_seconds: float = 20) -> dict[str, str]:
    """Headers of the first answer served at ``site`` (the gateway may still be taking a snapshot in)."""
    answers: list[dict[str, str]] = []

    def there() -> bool:
        answers.append(chat(pop, forwarded_for=forwarded_for))
        return answers[-1]["x-edgeplane-site"] == site

    wait_for(f"{pop.code}'s gateway serves at {site}", there, timeout_seconds, every=0.2)
    return answers[-1]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--pop", "nope"], "unknown PoP 'nope'"),
        (["--pop", "nyc1", "--host", "0.0.0.0", "--auth", "on", "--admin-token", "t"], "give --advertise-address"),
        (["--pop", "nyc1", "--host", "0.0.0.0", "--advertise-address", "127.0.0.1"], "an admin token is required"),
        (["--pop", "nyc1", "--neighbor", "127.0.0.2"], "1 --neighbor but 0 --neighbor-as"),
        (["--pop", "nyc1", "--router-id", "192.0.2.1"], "--router-id is for the BGP speaker"),
        (["--pop", "nyc1", "--backend", "llamacpp"], "--backend llamacpp needs --gguf"),
        (["--pop", "nyc1", "--port", "28180", "--agent-port", "28180"], "--port and --agent-port are both 28180"),
    ],
)
def test_mistakes_are_refused_before_anything_starts(args: list[str], said: str, tmp_path: Path) -> None:
    argv = ["pop", "run", "--fleet", str(SMALL_FLEET), "--data-dir", str(tmp_path), *args]
    result = CliRunner(env={"EDGEPLANE_ADMIN_TOKEN": None}).invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
    assert not list(tmp_path.iterdir())  # no lock taken, nothing started


def test_each_gateway_names_its_ingress_and_serves_at_its_own_site(edge: Edge) -> None:
    for code, pop in edge.pops.items():
        served_at(pop, code)
        for stream in (False, True):
            headers = chat(pop, stream=stream)
            assert headers["x-edgeplane-ingress"] == code
            assert headers["x-edgeplane-site"] == code
            assert headers["x-edgeplane-scope"] == "metro"  # a loopback client belongs to the PoP's own metro
            assert headers["x-edgeplane-attempts"] == "1"
        # Every answer names the ingress PoP, not only the served ones.
        status, headers, body = get(pop.gateway_url + "/v1/models")
        assert status == 200 and headers["x-edgeplane-ingress"] == code
        assert {m["id"] for m in body["data"]} == {"tiny-llama", "tiny-chat"}
        status, headers, _ = get(pop.gateway_url + "/healthz")
        assert status == 200 and headers["x-edgeplane-ingress"] == code


def test_own_site_first_then_the_scope_ladder(edge: Edge) -> None:
    nyc = edge.pops["nyc1"]
    # An Amsterdam client whose packets reached New York is served where they arrived.
    headers = served_at(nyc, "nyc1", forwarded_for=AMS_CLIENT)
    assert headers["x-edgeplane-ingress"] == "nyc1"
    assert headers["x-edgeplane-scope"] == "global"
    # With its own site drained, the PoP's gateway walks the ladder over the other PoPs' agents.
    edge.cli("drain", "pop", "nyc1", "--force")
    try:
        headers = served_at(nyc, "ams1", forwarded_for=AMS_CLIENT)
        assert headers["x-edgeplane-ingress"] == "nyc1"
        assert headers["x-edgeplane-scope"] == "metro"
        headers = served_at(nyc, "ams1")  # a New York client: the only other PoP with the model here is ams1
        assert headers["x-edgeplane-ingress"] == "nyc1"
    finally:
        edge.cli("undrain", "pop", "nyc1")
    served_at(nyc, "nyc1")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _agents(pop: Pop) -> list[int]:
    return [p for p in session_pids(pop.running.process.pid) if " site run " in _cmdline(p)]


def test_a_killed_agent_is_restarted(edge: Edge) -> None:
    pop = edge.pops["ams1"]
    started = pop.running.events("started")[0]
    (agent,) = _agents(pop)
    assert agent == started["children"]["site agent"]["pid"]
    os.kill(agent, signal.SIGKILL)
    wait_for("a new site agent", lambda: [p for p in _agents(pop) if p != agent], 20)
    served_at(pop, "ams1", timeout_seconds=30)


def test_sigterm_stops_every_child(edge: Edge, tmp_path: Path) -> None:
    pop = start_pop(edge.control_url, "iad1", tmp_path)
    try:
        served_at(pop, "iad1")
        children = [p for p in session_pids(pop.running.process.pid) if p != pop.running.process.pid]
        assert len(children) == 2, [_cmdline(p) for p in children]  # the agent and the gateway: no speaker
        pop.running.process.send_signal(signal.SIGTERM)
        assert pop.running.process.wait(30) == 0
        wait_for("pop run's children gone", lambda: not session_pids(pop.running.process.pid), 5)
        assert pop.running.events("stopped")
    finally:
        stop(pop.running)


def test_with_a_neighbour_the_speaker_announces_and_sigterm_withdraws(edge: Edge, tmp_path: Path) -> None:
    """A real BIRD transit: what the control plane says ord1 announces reaches it; SIGTERM closes the session
    (the transit drops the routes) and leaves no process behind, ExaBGP included."""
    port = free_port()
    bird = transit(tmp_path, "a", "127.0.0.2", 64497, port).start()
    try:
        neighbour = ["--neighbor", f"127.0.0.2:{port}", "--neighbor-as", "64497", "--local-address", "127.0.0.1"]
        pop = start_pop(edge.control_url, "ord1", tmp_path, *neighbour)
        try:
            served_at(pop, "ord1")

            def announced() -> set[str]:
                _, _, body = get(f"{edge.control_url}/api/bgp/intents?pop=ord1")
                return {i["prefix"] for i in body["intents"] if ":" not in i["prefix"]}

            assert announced()
            bird.wait_for("ord1's intents", lambda routes: announced() <= set(routes))
            commands = [_cmdline(p) for p in session_pids(pop.running.process.pid)]
            assert any(" bgp run " in c for c in commands) and any("exabgp" in c for c in commands), commands
            pop.running.process.send_signal(signal.SIGTERM)
            assert pop.running.process.wait(30) == 0
            wait_for("pop run's children gone", lambda: not session_pids(pop.running.process.pid), 5)
            bird.wait_for("ord1's routes withdrawn", lambda routes: not announced() & set(routes))
        finally:
            stop(pop.running)
    finally:
        bird.stop()


def test_a_taken_port_ends_pop_run_with_the_reason_and_is_never_ready(edge: Edge, tmp_path: Path) -> None:
    """A second nyc1 on the first one's gateway port: the first one answering there is not this one's gateway,
    which cannot bind it; after three tries `pop run` ends with the port and the OS error, no traceback, and
    starts no BGP speaker."""
    taken = edge.pops["nyc1"].gateway_url.rsplit(":", 1)[1]
    argv = ["--control", edge.control_url, "pop", "run", "--pop", "nyc1", "--fleet", str(SMALL_FLEET), "--json"]
    argv += ["--port", taken, "--agent-port", str(free_port()), "--data-dir", str(tmp_path / "second")]
    port = free_port()
    argv += ["--neighbor", f"127.0.0.2:{port}", "--neighbor-as", "64497", "--local-address", "127.0.0.1"]
    log = tmp_path / "second.log"
    running = start(argv, log)
    try:
        assert running.process.wait(90) == 1
        said = log.read_text()
        assert "error: gateway exited with status 1 3 times while starting: OSError: [Errno 98]" in said, said
        assert f"('127.0.0.1', {taken}): address already in use" in said, said
        assert "Traceback" not in said, said
        assert not running.events("listening") and not running.events("ready"), running.lines
        assert not [line for line in said.splitlines() if "bgp speaker" in line and "restart" in line]
    finally:
        stop(running)
    served_at(edge.pops["nyc1"], "nyc1")  # the first one is untouched


def test_sigterm_before_ready_stops_cleanly(tmp_path: Path) -> None:
    """The control plane does not answer, so the PoP never gets ready: `pop run` says what it waits for, and
    SIGTERM (twice, as `timeout` sends it: to pop run, then to its whole group) stops it as after ready."""
    unreachable = f"http://127.0.0.1:{free_port()}"
    argv = ["--control", unreachable, "pop", "run", "--pop", "nyc1", "--fleet", str(SMALL_FLEET), "--json"]
    argv += ["--port", str(free_port()), "--agent-port", str(free_port()), "--data-dir", str(tmp_path / "nyc1")]
    log = tmp_path / "nyc1.log"
    running = start(argv, log)
    try:
        wait_for("the waiting event", lambda: running.events("waiting") and running.events("listening"), 60)
        (waiting,) = running.events("waiting")
        assert waiting["for"] == "control plane" and waiting["control"] == unreachable
        pid = running.process.pid
        os.kill(pid, signal.SIGTERM)
        os.killpg(pid, signal.SIGTERM)
        assert running.process.wait(30) == 0, log.read_text()
        wait_for("pop run's children gone", lambda: not session_pids(pid), 5)
        wait_for("the stopped event", lambda: running.events("stopped"), 5)
        assert not running.events("ready")
        assert "Aborted" not in log.read_text()
    finally:
        stop(running)
