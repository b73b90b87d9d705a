"""Three `control run` replicas on one PostgreSQL database, as real processes: a change made at one is in the
others' snapshots within a second; one leader at a time, a new one within 5 s of a kill -9; a leader paused
past its lease and resumed has its writes refused by the fencing term."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from edgeplane.control._postgres import PostgresStore
from edgeplane.control._replicas import LEASE_SECONDS
from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, ROOT, SMALL_FLEET, free_port, terminate
from tests.control.test_store_integrity import EDGEPLANE, Control, _get, _post

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[list[Control]]:
    started: list[Control] = []
    try:
        for n in range(3):
            data = tmp_path / f"replica-{n}"
            data.mkdir()
            started.append(Control(data, "--store", postgres_url))
        yield started
    finally:
        for control in started:
            if control.process.poll() is None:
                os.kill(control.process.pid, signal.SIGCONT)
                control.stop()


def _delete(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="DELETE"), timeout=5) as answer:
        answer.read()


def _health(control: Control) -> dict[str, Any]:
    return dict(_get(control.url + "/healthz"))


def _leaders(controls: list[Control]) -> list[Control]:
    return [c for c in controls if _health(c)["leader"]]


def _snapshot(control: Control) -> dict[str, Any]:
    try:
        return dict(_get(control.url + "/api/snapshot"))
    except urllib.error.HTTPError as error:  # 503 warming_up for the first 2 s: no site agent reports here
        if error.code == 503:
            return {}
        raise


def _drained(control: Control, pop: str) -> bool:
    sites = _snapshot(control).get("sites", {})
    return bool(sites) and sites[pop]["state"] == "drained"


def test_a_change_at_one_replica_is_in_the_others_snapshots_within_a_second(replicas: list[Control]) -> None:
    a, b, c = replicas
    wait_for("one leader among three", lambda: len(_leaders(replicas)) == 1, 10)
    listed = _get(a.url + "/api/status")["control"]
    assert sorted(r["pid"] for r in listed) == sorted(r.process.pid for r in replicas)
    assert [r["leader"] for r in listed].count(True) == 1
    wait_for("snapshots served", lambda: all(_snapshot(r) for r in replicas), 10)
    _post(b.url + "/api/drains", {"kind": "pop", "code": "ams1", "force": True})
    started = time.monotonic()
    wait_for("the drain in the other replicas' snapshots", lambda: _drained(a, "ams1") and _drained(c, "ams1"), 5)
    seen_after = time.monotonic() - started
    assert seen_after < 1.0, f"seen after {seen_after:.2f} s"
    keys = _post(c.url + "/api/keys", {"tenant": "acme"})
    assert any(k["id"] == keys["id"] for k in _get(a.url + "/api/keys")["keys"])


def test_a_new_leader_within_five_seconds_of_a_kill_and_drains_still_work(replicas: list[Control]) -> None:
    wait_for("one leader among three", lambda: len(_leaders(replicas)) == 1, 10)
    (leader,) = _leaders(replicas)
    term = _health(leader)["term"]
    survivors = [r for r in replicas if r is not leader]
    os.kill(leader.process.pid, signal.SIGKILL)
    leader.process.wait(10)
    killed = time.monotonic()
    _post(survivors[0].url + "/api/drains", {"kind": "pop", "code": "iad1", "force": True})
    wait_for("the drain at the other survivor", lambda: _drained(survivors[1], "iad1"), 2)
    wait_for("a new leader", lambda: len(_leaders(survivors)) == 1, 8)
    took = time.monotonic() - killed
    assert took <= 5.0, f"a new leader after {took:.1f} s"
    (new,) = _leaders(survivors)
    assert _health(new)["term"] > term


def test_a_leader_paused_past_its_lease_is_refused_when_it_resumes(replicas: list[Control]) -> None:
    wait_for("one leader among three", lambda: len(_leaders(replicas)) == 1, 10)
    (leader,) = _leaders(replicas)
    term = _health(leader)["term"]
    others = [r for r in replicas if r is not leader]
    os.kill(leader.process.pid, signal.SIGSTOP)
    try:
        wait_for("another leader", lambda: len(_leaders(others)) == 1, LEASE_SECONDS + 5)
    finally:
        os.kill(leader.process.pid, signal.SIGCONT)
    wait_for("the resumed leader knows it was deposed", lambda: not _health(leader)["leader"], 5)
    health = _health(leader)
    assert health["fencing_refused"] >= 1, health  # it tried to act as leader, and the store refused it
    assert "no longer the leader, its write was refused" in leader.output()
    (new,) = _leaders(others)
    assert _health(new)["term"] > term
    assert len(_leaders(replicas)) == 1


class Service:
    """A `site run` or `gateway run` process, waited for until it listens."""

    def __init__(self, argv: list[str], log: Path, ready: str) -> None:
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [*EDGEPLANE, *argv], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        wait_for(
            f"{argv[2]} {argv[3]} listens", lambda: ready in log.read_text() or self.process.poll() is not None, 60
        )
        assert self.process.poll() is None, log.read_text()

    def stop(self) -> None:
        terminate(self.process, 20)


def _junk_server() -> http.server.ThreadingHTTPServer:
    class Junk(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            shaped = self.path.startswith("/api/")
            body = b'{"version": "zzz", "sites": 5}' if shaped else b"<html>not a control plane</html>"
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if shaped else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Junk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _gateway_health(url: str) -> dict[str, Any]:
    try:
        return dict(_get(url + "/healthz"))
    except urllib.error.HTTPError as error:
        with error:
            return dict(json.loads(error.read()))


def _chat(gateway: str) -> str:
    api = OpenAI(base_url=gateway + "/v1", api_key="unused-on-loopback", max_retries=0, timeout=30)
    OPEN_CLIENTS.append(api)
    answer = api.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    return answer.choices[0].finish_reason or ""


def test_a_gateway_follows_the_replicas_and_starts_from_its_snapshot_on_disk(
    replicas: list[Control], tmp_path: Path
) -> None:
    junk = _junk_server()  # answers 200 with JSON of the wrong shape, and HTML to everything else
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens
    junk_url = f"http://127.0.0.1:{junk.server_address[1]}"
    control = ",".join([dead, junk_url, *(r.url for r in replicas)])
    status = subprocess.run(
        [*EDGEPLANE, "--control", f"{junk_url}/html,{replicas[1].url}", "status", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert status.returncode == 0 and json.loads(status.stdout)["control"], status.stderr  # a read moves on
    site = Service(
        ["--control", control, "site", "run", "--pop", "nyc1", "--fleet", str(SMALL_FLEET), "--time-scale", "0.01"],
        tmp_path / "site.log", "site nyc1 at",
    )  # fmt: skip
    port, saved = free_port(), tmp_path / "gateway-snapshot.json"
    argv = ["--control", control, "gateway", "run", "--port", str(port), "--snapshot-file", str(saved)]
    gateway_url = f"http://127.0.0.1:{port}"
    gateway = Service(argv, tmp_path / "gateway.log", "gateway at")
    try:
        wait_for("the gateway serves nyc1", lambda: _gateway_health(gateway_url)["status"] == "ok", 20)
        assert _chat(gateway_url) in ("stop", "length")
        assert _gateway_health(gateway_url)["snapshot_source"] == "control_plane" and saved.exists()
        assert oct(saved.stat().st_mode & 0o777) == "0o600"  # it holds the key table's hashes

        # The replica it watches (the first) dies; a drain at another reaches the gateway all the same.
        os.kill(replicas[0].process.pid, signal.SIGKILL)
        replicas[0].process.wait(10)
        _post(replicas[1].url + "/api/drains", {"kind": "pop", "code": "nyc1", "force": True})
        wait_for("the drain at the gateway", lambda: _gateway_health(gateway_url)["status"] == "no_site_available", 2)
        _delete(replicas[2].url + "/api/drains/pop/nyc1")
        wait_for("nyc1 serves again", lambda: _gateway_health(gateway_url)["status"] == "ok", 5)

        # Every replica stopped, the gateway restarted: it serves from the snapshot it kept, and says so.
        for replica in replicas[1:]:
            replica.stop()
        gateway.stop()
        gateway = Service(argv, tmp_path / "gateway-again.log", "gateway at")
        wait_for("the gateway serves from disk", lambda: _gateway_health(gateway_url)["status"] == "ok", 20)
        health = _gateway_health(gateway_url)
        assert health["snapshot_source"] == "disk" and health["control_plane_reachable"] is False, health
        assert health["snapshot_age_seconds"] is not None and health["snapshot_age_seconds"] >= 0
        assert _chat(gateway_url) in ("stop", "length")
    finally:
        gateway.stop()
        site.stop()
        junk.shutdown()
        junk.server_close()
    assert "Traceback" not in (tmp_path / "gateway.log").read_text()


def _restart(replicas: list[Control], at: int, store: str) -> None:
    data = replicas[at].log.parent / f"replica-{at}"
    replicas[at] = Control(data, "--store", store)


def test_acknowledged_writes_outlive_replica_kills_and_a_restart_of_every_replica(
    replicas: list[Control], postgres_url: str
) -> None:
    """Keys, unit orders and unit states, placements, drains and their audit records sent round the replicas
    while they are killed (SIGKILL) one after another: every write a replica acknowledged is there after every
    replica was killed and started again."""
    acknowledged: dict[str, list[Any]] = {"keys": [], "units": [], "placement": [], "drains": [], "states": []}
    stop = threading.Event()

    def write(n: int) -> None:
        target = replicas[n % 3].url
        try:
            match n % 5:
                case 0 | 1:
                    acknowledged["keys"].append(_post(target + "/api/keys", {"tenant": f"t{n}"})["id"])
                case 2:
                    acknowledged["units"].append(_post(target + "/api/units", {"pop": "nyc1", "note": f"n{n}"})["code"])
                case 3:
                    replicas_now = 1 + (n // 5) % 2
                    body = {
                        "placement": [{"model": "tiny-llama", "pop": "iad1", "replicas": replicas_now}],
                        "force": True,
                    }
                    _post(target + "/api/placement", body)
                    acknowledged["placement"].append(replicas_now)
                case _:
                    code = ["nyc1", "iad1", "ord1", "ams1"][(n // 5) % 4]
                    _post(target + "/api/drains", {"kind": "pop", "code": code, "force": True})
                    acknowledged["drains"].append(code)
        except (urllib.error.URLError, OSError, ValueError):
            pass  # not acknowledged: the replica was being killed

    def writer() -> None:
        n = 0
        while not stop.is_set():
            write(n)
            n += 1

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        for victim in (0, 1, 2, 0):
            time.sleep(1.0)
            os.kill(replicas[victim].process.pid, signal.SIGKILL)
            replicas[victim].process.wait(10)
            _restart(replicas, victim, postgres_url)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
    assert len(acknowledged["keys"]) > 20 and acknowledged["units"] and acknowledged["placement"]
    for replica in replicas:  # every replica at once, then all of them again
        os.kill(replica.process.pid, signal.SIGKILL)
        replica.process.wait(10)
    for n in range(3):
        _restart(replicas, n, postgres_url)
    for replica in replicas:
        keys = {k["id"] for k in _get(replica.url + "/api/keys")["keys"]}
        assert set(acknowledged["keys"]) <= keys
        units = {u["code"] for u in _get(replica.url + "/api/units")["units"]}
        assert set(acknowledged["units"]) <= units
        placed = _get(replica.url + "/api/placement")["placement"]
        assert {"model": "tiny-llama", "pop": "iad1", "replicas": acknowledged["placement"][-1]} in placed
        drained = {d["code"] for d in _get(replica.url + "/api/drains")["drains"]}
        assert set(acknowledged["drains"]) <= drained
    store = PostgresStore(postgres_url)  # the whole audit log (the API shows the newest 1,000)
    audit = store.audit_log(limit=1_000_000)
    store.close()
    created = {r.target for r in audit if r.action == "create key" and r.outcome == "ok"}
    assert set(acknowledged["keys"]) <= created  # each acknowledged write's audit record too
    ordered = {r.target for r in audit if r.action == "unit-order"}
    assert {f"unit {code}" for code in acknowledged["units"]} <= ordered


def _drill_ready(replicas: list[Control]) -> tuple[Control, list[Control]]:
    """The leader and its followers, once every replica knows which leads (drills are passed to it)."""
    wait_for("one leader among three", lambda: len(_leaders(replicas)) == 1, 10)
    wait_for(
        "every replica knows the leader",
        lambda: all(_get(r.url + "/api/drills") == {"drills": []} for r in replicas),
        10,
    )
    (leader,) = _leaders(replicas)
    return leader, [r for r in replicas if r is not leader]


def test_a_drill_sent_to_any_replica_runs_once_on_the_leader(replicas: list[Control]) -> None:
    leader, followers = _drill_ready(replicas)
    started = _post(followers[0].url + "/api/drills", {"metro": "nyc", "duration_seconds": 1.5, "force": True})
    listed = [_get(r.url + "/api/drills")["drills"] for r in replicas]
    assert all([d["id"] for d in drills] == [started["id"]] for drills in listed)  # one drill, the leader's
    wait_for("the drill drains nyc", lambda: ("metro", "nyc") in followers[1].drains(), 5)
    done = _get(f"{followers[1].url}/api/drills/{started['id']}?wait=10")
    wait_for("the drill done", lambda: _get(f"{followers[1].url}/api/drills/{started['id']}")["done"], 15)
    assert done["metro"] == "nyc"
    wait_for("nyc back", lambda: ("metro", "nyc") not in leader.drains(), 5)


def test_a_drill_whose_leader_dies_is_rolled_back_by_the_next_and_bad_bodies_are_refused_anywhere(
    replicas: list[Control],
) -> None:
    leader, followers = _drill_ready(replicas)
    for bad in (b'{"metro":', b"", b'{"metro": "nyc", "duration_seconds": NaN}', b"[" * 5000 + b"]" * 5000):
        request = urllib.request.Request(
            followers[0].url + "/api/drills", bad, {"Content-Type": "application/json"}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert 400 <= refused.value.code < 500, (bad[:20], refused.value.code)
        refused.value.close()
    _post(followers[0].url + "/api/drills", {"metro": "nyc", "duration_seconds": 60, "force": True})
    wait_for("the drill drains nyc", lambda: ("metro", "nyc") in followers[1].drains(), 5)
    os.kill(leader.process.pid, signal.SIGKILL)
    leader.process.wait(10)
    wait_for("the next leader rolls the orphaned drill back", lambda: ("metro", "nyc") not in followers[1].drains(), 10)
    assert "drills left by a lost leader rolled back: nyc" in "".join(f.output() for f in followers)
