"""The fabric's faults as real processes meet them: a site whose store cannot hold the object, a receiver and a
relay killed with SIGKILL mid-transfer and started again on their data directories (the small fleet)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests._time import wait_for
from tests.conftest import ROOT, SMALL_FLEET, free_port, terminate

pytestmark = pytest.mark.slow

LINK_SCALE = 0.0004  # 400 Gbit/s runs at 20 MB/s: 60 MB takes three seconds a hop
POPS = ("nyc1", "iad1", "ord1", "ams1")
MB = 1 << 20
STORE_LIMIT = 4 * MB  # ams1's store: less than the object of the full-store test


@dataclass
class Agent:
    """One process started in its own session, its stdout read line by line, its stderr in a log."""

    process: subprocess.Popen[str]
    log: Path
    lines: list[str] = field(default_factory=list)
    url: str | None = None

    def output(self) -> str:
        return "".join(self.lines) + self.log.read_text(errors="replace")


def _start(argv: list[str], log: Path, ready: str) -> Agent:
    """Start ``python -m edgeplane ARGV`` and wait until it prints ``ready`` followed by its URL."""
    with log.open("a") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "edgeplane", *argv],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    agent = Agent(process, log)
    pattern = re.compile(re.escape(ready) + r" at (http://\S+)")

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            agent.lines.append(line)
            if agent.url is None and (match := pattern.search(line)):
                agent.url = match.group(1)

    threading.Thread(target=pump, daemon=True).start()
    try:
        wait_for(f"{ready} serving", lambda: agent.url is not None or process.poll() is not None, 60)
    except AssertionError:
        _stop(agent)
        raise
    if agent.url is None:
        raise RuntimeError(f"{ready} did not start:\n{agent.output()}")
    return agent


def _stop(agent: Agent) -> None:
    terminate(agent.process, 30)
    if agent.process.stdout is not None:
        agent.process.stdout.close()


@dataclass
class Fleet:
    """The small fleet's control plane and one site agent per PoP, each a real process on loopback."""

    tmp: Path
    control_plane: Agent
    control_url: str
    sites: dict[str, Agent] = field(default_factory=dict)

    def data_dir(self, pop: str) -> Path:
        return self.tmp / "sites" / pop

    def start_site(self, pop: str, port: int = 0) -> Agent:
        argv = ["--control", self.control_url, "site", "run", "--pop", pop, "--fleet", str(SMALL_FLEET)]
        argv += ["--port", str(port), "--data-dir", str(self.data_dir(pop)), "--link-scale", str(LINK_SCALE)]
        if pop == "ams1":
            argv += ["--store-limit", str(STORE_LIMIT)]
        self.sites[pop] = _start(argv, self.tmp / f"site-{pop}.log", f"site {pop}")
        return self.sites[pop]

    def kill(self, pop: str) -> None:
        """SIGKILL: no chance to tidy anything up."""
        site = self.sites[pop]
        os.kill(site.process.pid, signal.SIGKILL)
        site.process.wait(30)
        if site.process.stdout is not None:
            site.process.stdout.close()

    @contextlib.contextmanager
    def frozen(self, pop: str) -> Iterator[None]:
        """SIGSTOP the site's agent for the block: it neither reports, nor fetches, nor complains meanwhile."""
        pid = self.sites[pop].process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The control plane's API, as the CLI and the site agents call it."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.control_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edgeplane", "--control", self.control_url, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def agent_pids(self) -> dict[str, int | None]:
        """Per PoP, the process id of the agent whose report the control plane holds."""
        pops = json.loads(self.cli("status", "--json").stdout)["pops"]
        return {row["code"]: row.get("pid") for row in pops}

    def reported(self, pop: str) -> bool:
        return self.agent_pids().get(pop) == self.sites[pop].process.pid

    def status(self, name: str) -> dict[str, dict[str, Any]]:
        """`fabric status NAME --json`: per site, its row (the sites that hold nothing of it have none)."""
        done = self.cli("fabric", "status", name, "--json", check=False)
        if done.returncode != 0:
            return {}
        objects = json.loads(done.stdout)["objects"]
        assert [row["name"] for row in objects] == [name], objects
        return {site["pop"]: site for site in objects[0]["sites"]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fabric-faults")
    port = free_port()
    argv = ["control", "run", "--fleet", str(SMALL_FLEET), "--port", str(port), "--data-dir", str(tmp / "control")]
    control = _start(argv, tmp / "control.log", "control plane")
    running = Fleet(tmp, control, f"http://127.0.0.1:{port}")
    try:
        for pop in POPS:
            running.start_site(pop)
        wait_for("every site reports", lambda: all(map(running.reported, POPS)), 60, every=0.5)
        yield running
    finally:
        for site in running.sites.values():
            _stop(site)
        _stop(running.control_plane)


@pytest.fixture
def sites(fleet: Fleet) -> Fleet:
    """The fleet with every site agent running and reported (a test before may have killed one and failed)."""
    for pop in POPS:
        if fleet.sites[pop].process.poll() is not None:
            fleet.start_site(pop)
    wait_for("every site reports", lambda: all(map(fleet.reported, POPS)), 60, every=0.5)
    return fleet


def _object(path: Path, size: int) -> str:
    """A file of random bytes, and its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // MB):
            block = os.urandom(MB)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MB):
            digest.update(block)
    return digest.hexdigest()


def _stored(fleet: Fleet, pop: str, sha: str, name: str) -> Path:
    return fleet.data_dir(pop) / "fabric" / "objects" / sha / "data" / name


def _site_object(agent: Agent, sha: str) -> dict[str, Any]:
    """What the site agent itself says it holds of the object (its own API, not the control plane's view)."""
    assert agent.url is not None
    with urllib.request.urlopen(f"{agent.url}/api/fabric/objects/{sha}", timeout=10) as response:
        return dict(json.loads(response.read()))


def test_a_site_whose_store_cannot_hold_the_object_is_named_and_never_shown_complete(
    sites: Fleet, tmp_path: Path
) -> None:
    size = 8 * MB
    source = tmp_path / "big.bin"
    sha = _object(source, size)
    args = ["fabric", "push", str(source), "--name", "too-big", "--from", "nyc1", "--to", "all"]
    done = sites.cli(*args, "--chunk-bytes", str(MB), "--json", "--timeout", "120", check=False)
    assert done.returncode == 1, (done.stdout, done.stderr)
    said = [line for line in done.stderr.splitlines() if "ams1" in line]
    assert said and re.search(r"ams1 \(.*\blimit\b", said[0]), done.stderr  # which site, and why
    assert "iad1" not in said[0] and "ord1" not in said[0] and "nyc1" not in said[0], done.stderr
    result = json.loads(done.stdout)
    by_pop = {site["pop"]: site for site in result["sites"]}
    assert not by_pop["ams1"]["complete"] and by_pop["ams1"]["error"] and by_pop["ams1"]["sha256"] is None
    for pop in ("nyc1", "iad1", "ord1"):
        assert by_pop[pop]["complete"] and by_pop[pop]["sha256"] == sha, by_pop[pop]

    status = sites.status("too-big")
    assert status["ams1"]["complete"] is False and status["ams1"]["state"] == "failed", status["ams1"]
    assert "limit" in (status["ams1"]["error"] or ""), status["ams1"]
    assert status["ams1"]["sha256"] is None and status["ams1"]["bytes_held"] == 0, status["ams1"]
    for pop in ("nyc1", "iad1", "ord1"):
        assert status[pop]["complete"] and status[pop]["sha256"] == sha, status[pop]
        assert _hash(_stored(sites, pop, sha, "big.bin")) == sha  # read here, not as the site says
    # ams1's store holds nothing complete: no object of it at all, and no `complete` marker anywhere.
    objects = sites.data_dir("ams1") / "fabric" / "objects"
    assert not (objects / sha).exists(), sorted(p.name for p in objects.iterdir())
    assert not list(objects.glob("*/complete"))


def _push_to_ord1(fleet: Fleet, tmp_path: Path, name: str) -> tuple[Path, str, int]:
    """60 MB from nyc1 to ord1 (iad1 relays: ord1 has no link to nyc1), started and left running."""
    size = 60 * MB
    source = tmp_path / f"{name}.bin"
    sha = _object(source, size)
    args = ["fabric", "push", str(source), "--name", name, "--from", "nyc1", "--to", "ord1"]
    started = json.loads(fleet.cli(*args, "--chunk-bytes", str(MB), "--no-wait", "--json").stdout)
    assert started["plan"]["parents"].get("ord1") == "iad1", started["plan"]
    return source, sha, size


def _partly_held(agent: Agent, sha: str, size: int, at_least: int) -> int | None:
    """The bytes the site holds of the object, asked of the site itself (quicker than the CLI), when it holds at
    least ``at_least`` of them and at most half; else None."""
    try:
        row = _site_object(agent, sha)
    except OSError:  # urllib's HTTPError (404: nothing of it yet) is an OSError too
        return None
    held = int(row["bytes_held"])
    return held if at_least <= held <= size // 2 else None


def _complete(fleet: Fleet, pop: str, name: str, sha: str) -> bool:
    row = fleet.status(name).get(pop)
    return row is not None and row["complete"] and row["sha256"] == sha


def test_a_receiver_killed_mid_transfer_resumes_from_its_disk(sites: Fleet, tmp_path: Path) -> None:
    source, sha, size = _push_to_ord1(sites, tmp_path, "resume-receiver")
    ord1 = sites.sites["ord1"]
    asked: list[int | None] = [None]

    def partly_held() -> int | None:
        asked[0] = _partly_held(ord1, sha, size, 8 * MB)
        return asked[0]

    wait_for("ord1 holds some of it", partly_held, 60, every=0.02)
    sites.kill("ord1")
    before = asked[0]  # what the old process held when last asked: a floor of what its disk holds
    assert before is not None

    restarted = sites.start_site("ord1")
    first = _site_object(restarted, sha)  # at once: before it can have fetched more than a chunk or two
    assert first["bytes_held"] >= before and first["chunks_held"] > 0, (before, first)
    wait_for("the new ord1 reports", lambda: sites.reported("ord1"), 30, every=0.2)
    reported = sites.status("resume-receiver")["ord1"]
    assert reported["complete"] or reported["bytes_held"] >= before, (before, reported)

    wait_for("ord1 complete", lambda: _complete(sites, "ord1", "resume-receiver", sha), 60, every=0.5)
    assert _hash(_stored(sites, "ord1", sha, source.name)) == sha
    # It fetched only what it lacked: the relay sent it about one copy, not one and the part it held again.
    relayed = _site_object(sites.sites["iad1"], sha)["egress_bytes"]
    assert relayed < size + before // 2, (relayed, size, before)


def _planned_around(fleet: Fleet, name: str, pop: str) -> bool:
    """The control plane re-planned the transfer without ``pop`` (it heard that ``pop`` broke off)."""
    plan = fleet.control("GET", f"/api/fabric/transfers/{name}")["plan"]
    return pop not in plan["parents"] and pop not in plan["parents"].values()


def _planned_through(fleet: Fleet, name: str, pop: str, relay: str) -> bool:
    return bool(fleet.control("GET", f"/api/fabric/transfers/{name}")["plan"]["parents"].get(pop) == relay)


def test_a_relay_killed_mid_transfer_is_planned_in_again_when_it_comes_back(sites: Fleet, tmp_path: Path) -> None:
    name = "restart-relay"
    source, sha, size = _push_to_ord1(sites, tmp_path, name)
    ord1 = sites.sites["ord1"]
    wait_for("ord1 receiving", lambda: _partly_held(ord1, sha, size, 4 * MB), 60, every=0.02)
    assert sites.sites["iad1"].url is not None
    port = int(sites.sites["iad1"].url.rsplit(":", 1)[1])
    sites.kill("iad1")
    wait_for("the control plane plans around iad1", lambda: _planned_around(sites, name, "iad1"), 30, every=0.2)
    # iad1 comes back at its address, as a supervised agent with a fixed port does. ord1 is held still meanwhile,
    # so that it tries iad1 next only once the new process serves: a complaint about the dead one that reached the
    # control plane after the new one's first report would shut the new one out (the next test).
    with sites.frozen("ord1"):
        sites.start_site("iad1", port=port)
        wait_for("the new iad1 reports", lambda: sites.reported("iad1"), 30, every=0.2)

    wait_for("ord1 complete", lambda: _complete(sites, "ord1", name, sha), 60, every=0.5)
    assert _hash(_stored(sites, "ord1", sha, source.name)) == sha
    assert _planned_through(sites, name, "ord1", "iad1")
    wait_for("iad1 complete", lambda: _complete(sites, "iad1", name, sha), 30, every=0.5)
    assert _hash(_stored(sites, "iad1", sha, source.name)) == sha  # what it held before it was killed, and the rest


@pytest.mark.xfail(
    strict=False,
    reason="run alone, the relay restarted at a new address sometimes did not fetch for 60 s (seen 2026-12-02,"
    " 3 of 9 runs; 0 of 6 since a chunk's send may hold its link only a few times its time); kept until understood",
)
def test_a_relay_back_at_a_new_address_is_not_shut_out_by_a_complaint_about_its_old_process(
    sites: Fleet, tmp_path: Path
) -> None:
    name = "relay-new-address"
    source, sha, size = _push_to_ord1(sites, tmp_path, name)
    ord1 = sites.sites["ord1"]
    wait_for("ord1 receiving", lambda: _partly_held(ord1, sha, size, 4 * MB), 60, every=0.02)
    old_url = sites.sites["iad1"].url
    sites.kill("iad1")
    wait_for("the control plane plans around iad1", lambda: _planned_around(sites, name, "iad1"), 30, every=0.2)
    with sites.frozen("ord1"):  # it still holds iad1's old address
        sites.start_site("iad1")  # port 0: a new address
        wait_for("the new iad1 reports", lambda: sites.reported("iad1"), 30, every=0.2)
        # ord1's next try of the old address is refused, and it says so. Its own complaint reaches the control
        # plane before or after its next report (which would give it the new address) by chance: about a third
        # of unfrozen runs lose that race. Said here, what ord1 says, it comes after, every time.
        complaint = {"pop": "ord1", "source": "iad1", "url": old_url, "sha256": sha}
        sites.control("POST", f"/api/fabric/transfers/{name}/stuck", complaint)

    wait_for("ord1 planned through the new iad1", lambda: _planned_through(sites, name, "ord1", "iad1"), 20, 0.2)
    wait_for("ord1 complete", lambda: _complete(sites, "ord1", name, sha), 60, every=0.5)
    assert _hash(_stored(sites, "ord1", sha, source.name)) == sha
