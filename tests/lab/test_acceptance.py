"""Issue 15's acceptance on the default fleet (9 metros, 10 PoPs, 2 transits per PoP), one lab for the module:
every metro's clients served in their own metro; a drain of London that moves its new connections where the
planner says within the graceful-shutdown period plus 5 s and loses nothing in flight; every metro drain
measured against the prediction (a table); a failed PoP's clients moved within the hold time plus 1 s (failed
requests counted); and nothing left behind when the lab is stopped. Root, Linux and BIRD 2 only. The tables and
timings are printed: `pytest -s` (or `-rP`) shows them."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from edgeplane.bgp import IngressModel
from edgeplane.cli import cli
from edgeplane.fleet import Fleet, load_default_fleet
from edgeplane.lab import HOLD_TIME_SECONDS, STATE_DIR
from tests._time import wait_for
from tests.conftest import ROOT, terminate
from tests.lab.test_lab import EDGEPLANE, lab, left_behind, read_line, require_lab

GRACEFUL_SHUTDOWN_SECONDS = 2.0
MOVE_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + 5  # the bound for a drain: new connections moved by then
FAIL_SECONDS = HOLD_TIME_SECONDS + 1  # ... and for a failed PoP
MODEL = "llama-3.1-8b-instruct"  # placed at every PoP of the default fleet; the emulator answers it

pytestmark = [pytest.mark.slow]

# One client per metro, started once with `lab exec METRO -- python -c PROBER` (so OPENAI_BASE_URL and
# OPENAI_API_KEY are the metro's) and asked over stdin, one JSON line each way: the official SDK, a fresh
# client (so a fresh connection, routed afresh) per request, the emulator's cheapest answers.
PROBER = r"""
import json, sys, threading, time, openai

MODEL = sys.argv[1]
MESSAGES = [{"role": "user", "content": "hi"}]


def where(raw):
    return {k[len("x-edgeplane-"):]: v for k, v in raw.headers.items() if k.startswith("x-edgeplane-")}


def ask(timeout):
    client = openai.OpenAI(max_retries=0, timeout=timeout)
    started = time.monotonic()
    try:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=2)
        raw.parse()
        return {"ok": True, "started": started, "ended": time.monotonic(), **where(raw)}
    except openai.OpenAIError as error:
        return {"ok": False, "started": started, "ended": time.monotonic(), "error": f"{type(error).__name__}: {error}"}
    finally:
        client.close()


def stream(max_tokens, first, out):
    client = openai.OpenAI(max_retries=0, timeout=30)
    result = {"ok": False, "chunks": 0, "finish_reason": None, "started": time.monotonic()}
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=max_tokens, stream=True)
        result.update(where(raw))
        for chunk in raw.parse():
            result["chunks"] += 1
            first.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                result["finish_reason"] = chunk.choices[0].finish_reason
        result["ok"] = result["finish_reason"] is not None
    except openai.OpenAIError as error:
        result["error"] = f"{type(error).__name__}: {error}"
    finally:
        first.set()
        client.close()
        result["ended"] = time.monotonic()
        out.append(result)


streams, results = [], []
for line in sys.stdin:
    command = json.loads(line)
    if command["do"] == "ask":
        answer = ask(command["timeout"])
    elif command["do"] == "streams":  # answers once every stream has its first chunk: they are in flight
        firsts = [threading.Event() for _ in range(command["n"])]
        streams = [threading.Thread(target=stream, args=(command["max_tokens"], f, results)) for f in firsts]
        for thread in streams:
            thread.start()
        answer = {"in_flight": all(f.wait(10) for f in firsts), "at": time.monotonic()}
    else:  # "join": how each stream ended
        for thread in streams:
            thread.join(60)
        answer = {"streams": results, "at": time.monotonic()}
        streams, results = [], []
    print(json.dumps(answer), flush=True)
"""


class Prober:
    """A metro's client process in its namespace; one request at a time over its stdin and stdout."""

    def __init__(self, metro: str, errors: Path) -> None:
        self.metro = metro
        self.errors = errors
        self.lock = threading.Lock()
        with errors.open("w") as stderr:
            self.process = subprocess.Popen(
                [*EDGEPLANE, "lab", "exec", metro, "--", sys.executable, "-u", "-c", PROBER, MODEL],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                start_new_session=True,
            )  # fmt: skip

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout_seconds: float = 30) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(read_line(self.process, timeout_seconds, self.errors))
        return answer

    def ask(self, timeout_seconds: float = 5) -> dict[str, Any]:
        with self.lock:
            self.send({"do": "ask", "timeout": timeout_seconds})
            return self.receive(timeout_seconds + 30)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        terminate(self.process, 10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def ask_all(probers: dict[str, Prober]) -> dict[str, dict[str, Any]]:
    """Every metro's client asks at once (cheap: the emulator's two tokens each)."""
    for prober in probers.values():
        prober.lock.acquire()
    try:
        for prober in probers.values():
            prober.send({"do": "ask", "timeout": 5})
        return {metro: prober.receive(35) for metro, prober in probers.items()}
    finally:
        for prober in probers.values():
            prober.lock.release()


@dataclass
class RunningLab:
    fleet: Fleet
    model: IngressModel
    status: dict[str, Any]
    probers: dict[str, Prober]

    def run(self, *args: str) -> str:
        """An `edgeplane` command against the lab's control plane as its admin, in this process (so it has taken
        effect the moment it returns, not a Python start-up later): what it printed; it must succeed."""
        buffer = io.StringIO()
        console = Console(file=buffer, width=200, color_system=None)
        result = CliRunner().invoke(
            cli,
            ["--control", self.status["control_url"], *args],
            obj={"console": console, "error_console": console},
            env={"EDGEPLANE_ADMIN_TOKEN": self.status["admin_token"]},
        )
        assert result.exit_code == 0, buffer.getvalue() + result.output
        return buffer.getvalue()

    def predicted(self, **state: Any) -> dict[str, str | None]:
        return {metro: ingress.pop for metro, ingress in self.model.predict(**state).items()}


def _lab_pids() -> set[int]:
    """Every process in a namespace of the lab (by the inode of its network namespace)."""
    inodes = set()
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if name.startswith("ep-"):
            inodes.add(os.stat(f"/run/netns/{name}").st_ino)
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    pids.add(int(entry))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    require_lab()
    assert lab("down").returncode == 0  # whatever an earlier run left (under the fleet lock: no one else's lab)
    fleet = load_default_fleet()
    logs = tmp_path_factory.mktemp("lab")
    errors = logs / "lab-up.stderr"
    argv = [*EDGEPLANE, "lab", "up", "--json-ready", "--graceful-shutdown-seconds", str(GRACEFUL_SHUTDOWN_SECONDS)]
    started = time.monotonic()
    with errors.open("w") as stderr:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    probers: dict[str, Prober] = {}
    pids: set[int] = set()
    try:
        status = json.loads(read_line(process, 240, errors))
        print(f"lab up on the default fleet: ready in {time.monotonic() - started:.1f} s")
        assert {m["code"] for m in status["metros"]} == {m.code for m in fleet.metros}
        assert status["sessions"] and all(s["up"] for s in status["sessions"]), status["sessions"]
        probers = {m["code"]: Prober(m["code"], logs / f"client-{m['code']}.stderr") for m in status["metros"]}
        yield RunningLab(fleet, IngressModel(fleet), status, probers)
        pids = _lab_pids()
    finally:
        for prober in probers.values():
            prober.close()
        # `lab down` SIGTERMs `lab up`, which removes everything it made: down itself finds nothing else to do.
        down_started = time.monotonic()
        down = lab("down", timeout=90)
        down_seconds = time.monotonic() - down_started
        stopped = terminate(process, 30)
        if process.stdout is not None:
            process.stdout.close()
    assert down.returncode == 0, down.stderr
    assert stopped and process.returncode == 0, errors.read_text()[-3000:]
    assert down.stdout.strip() == f"removed lab up (pid {status['pid']}) stopped", down.stdout
    assert left_behind() == []
    assert sorted(pid for pid in pids if os.path.exists(f"/proc/{pid}")) == []
    assert not STATE_DIR.exists()
    # lab up, exited but not yet reaped by this process, is not waited for as if it still ran (30 s).
    assert down_seconds < 20, f"lab down took {down_seconds:.1f} s"
    print(
        f"lab down in {down_seconds:.1f} s: lab up stopped by SIGTERM and removed all it made ({len(pids)} processes"
        " in its namespaces); nothing left"
    )


def asked_until(prober: Prober, done: Callable[[dict[str, Any]], bool], what: str) -> list[dict[str, Any]]:
    """The client's answers, asking again until one is ``done`` (at most MOVE_SECONDS: the issue's bound)."""
    answers: list[dict[str, Any]] = []

    def check() -> bool:
        answers.append(prober.ask(timeout_seconds=2))
        return done(answers[-1])

    wait_for(what, check, MOVE_SECONDS, every=0.1)
    return answers


def _table(title: str, rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [title, *("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)]
    return "\n".join(lines)


def test_every_metros_client_is_served_in_its_own_metro(running: RunningLab) -> None:
    answers = ask_all(running.probers)
    for metro, answer in answers.items():
        assert answer["ok"], (metro, answer)
        assert running.fleet.pop_by_code[answer["ingress"]].metro == metro, (metro, answer)
        assert answer["scope"] == "metro", (metro, answer)
    assert {m: a["ingress"] for m, a in answers.items()} == running.predicted()
    assert {m["code"]: m["service_url"] for m in running.status["metros"]}.keys() == answers.keys()


def test_draining_london_moves_its_new_connections_where_predicted_and_loses_nothing(running: RunningLab) -> None:
    london = running.probers["lon"]
    predicted = running.predicted(withdrawn_metros={"lon"})["lon"]
    assert predicted is not None and running.fleet.pop_by_code[predicted].metro != "lon"
    assert london.ask()["ingress"] == "lon1"

    # Streams that are in flight when the drain is recorded, each shorter than the graceful-shutdown period.
    with london.lock:
        london.send({"do": "streams", "n": 3, "max_tokens": 96})
        assert london.receive()["in_flight"]
    drained_at = time.monotonic()
    assert "metro lon drained" in running.run("drain", "metro", "lon")
    try:
        moved = asked_until(london, lambda a: a.get("ingress") == predicted, "London's clients at the predicted PoP")
        seconds = moved[-1]["ended"] - drained_at  # the prober's clock is this one (CLOCK_MONOTONIC)
        print(f"lon drained: new connections entered at {predicted} (predicted) after {seconds:.2f} s")
        assert seconds <= MOVE_SECONDS
        assert moved[-1]["ok"] and moved[-1]["site"] != "lon1", moved[-1]
        assert all(m["ok"] for m in moved), [m for m in moved if not m["ok"]]  # answered all along
        with london.lock:
            london.send({"do": "join"})
            streams = london.receive(60)["streams"]
        spans = [f"{s['started'] - drained_at:+.2f}..{s['ended'] - drained_at:+.2f} s" for s in streams]
        print(f"in flight across the drain (from it): {spans}, finish_reason {[s['finish_reason'] for s in streams]}")
        assert len(streams) == 3 and all(s["ok"] and s["finish_reason"] for s in streams), streams
        assert all(s["started"] < drained_at < s["ended"] for s in streams), streams
        assert all(s["ingress"] == "lon1" for s in streams), streams
    finally:
        running.run("undrain", "metro", "lon")
    undrained_at = time.monotonic()
    back = asked_until(london, lambda a: a.get("ingress") == "lon1", "London's clients back in London")
    print(f"lon undrained: back at lon1 after {back[-1]['ended'] - undrained_at:.2f} s")
    assert back[-1]["scope"] == "metro" and all(b["ok"] for b in back), back


def settle(running: RunningLab, expected: dict[str, str | None], what: str) -> tuple[float | None, dict[str, Any]]:
    """Every metro's clients asked until each enters where ``expected`` says (at most MOVE_SECONDS): the seconds
    that took (None: not in time), and the answers of one more round once settled."""
    measured: dict[str, dict[str, Any]] = {}

    def matches() -> bool:
        measured.update(ask_all(running.probers))
        return all(measured[m].get("ingress") == expected[m] for m in running.probers)

    try:
        seconds: float | None = wait_for(what, matches, MOVE_SECONDS, 0.2)
    except AssertionError:
        seconds = None
    matches()  # measured again once settled: it stays as predicted
    return seconds, measured


def test_every_metro_drain_moves_every_metros_clients_as_predicted(running: RunningLab) -> None:
    baseline = running.predicted()
    rows: list[tuple[str, ...]] = [("drained", *running.probers, "moved in s")]
    wrong: list[str] = []
    for metro in running.fleet.metros:
        drained = metro.code
        predicted = running.predicted(withdrawn_metros={drained})
        # One drain at a time, undrained before the next: inside the control plane's blast radius.
        running.run("drain", "metro", drained)
        try:
            seconds, measured = settle(running, predicted, f"every client as predicted with {drained} drained")
        finally:
            running.run("undrain", "metro", drained)
        cells = []
        for client, answer in measured.items():
            got = answer.get("ingress") if answer["ok"] else "failed"
            cells.append(f"{got}/{predicted[client]}" + ("" if got == predicted[client] else " (!)"))
            if got != predicted[client]:
                wrong.append(f"{drained} drained: {client}'s clients entered at {got}, predicted {predicted[client]}")
        rows.append((drained, *cells, "-" if seconds is None else f"{seconds:.1f}"))
        back, _ = settle(running, baseline, f"every client back after {drained} was undrained")
        assert back is not None, f"not every client back where it was {MOVE_SECONDS} s after {drained} was undrained"
    print("\n" + _table("ingress PoP, measured/predicted (row: metro drained; column: clients' metro)", rows))
    assert wrong == []


def test_a_failed_pops_clients_are_answered_at_the_predicted_pop_within_the_hold_time(running: RunningLab) -> None:
    # Last in the module: the lab does not restart a failed PoP. Seattle has one PoP, sea1.
    failed, metro = "sea1", "sea"
    predicted = running.predicted(failed_pops={failed})[metro]
    assert predicted is not None and predicted != failed
    seattle = running.probers[metro]
    answers: list[dict[str, Any]] = []
    stop = threading.Event()

    def loop() -> None:  # a client asking again as soon as it has its answer, as a user's retries would
        while not stop.is_set():
            answers.append(seattle.ask(timeout_seconds=1))

    client = threading.Thread(target=loop)
    client.start()
    try:
        wait_for("Seattle's client answered at sea1", lambda: any(a.get("ingress") == failed for a in answers))
        began = time.monotonic()
        assert "killed" in running.run("lab", "fail", failed)
        killed = time.monotonic()  # the kill is the command's last step (in this process: no start-up after it)
        wait_for(
            f"Seattle answered at {predicted}",
            lambda: any(a.get("ingress") == predicted and a["started"] >= began for a in answers),
            FAIL_SECONDS + 5,
            every=0.05,
        )
    finally:
        stop.set()
        client.join(30)
    first = next(a for a in answers if a.get("ingress") == predicted and a["started"] >= began)
    after = [a for a in answers if a["started"] >= began and a["ended"] <= first["ended"]]
    failures = [a for a in after if not a["ok"]]
    seconds = first["ended"] - killed
    print(
        f"{failed} failed: {metro}'s clients answered at {predicted} (predicted) {max(seconds, 0):.2f} s after the"
        f" kill (bound {FAIL_SECONDS} s); requests failed in between: {len(failures)} of {len(after)}"
        + "".join(f"\n  {a['error']}" for a in failures)
    )
    assert seconds <= FAIL_SECONDS
    assert all(a.get("ingress") != failed for a in answers if a["started"] > killed)
