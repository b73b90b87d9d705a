"""A store that was wiped or damaged is refused, not started empty; one data directory has one owner.

Real processes throughout: `control run` and `up` as a user starts them, real SQLite files, real locks."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgeplane.control import SQLiteStore
from tests._time import wait_for
from tests.conftest import ROOT, SMALL_FLEET, free_port, start_fleet, stop_fleet, terminate
from tests.test_end_to_end import chat

EDGEPLANE = [sys.executable, "-m", "edgeplane"]


def _control_argv(data_dir: Path, port: int) -> list[str]:
    return [*EDGEPLANE, "control", "run", "--fleet", str(SMALL_FLEET), "--data-dir", str(data_dir), "--port", str(port)]


def _refused(argv: list[str]) -> str:
    """Run a command that must refuse to start; return what it printed."""
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    return output


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


class Control:
    """`edgeplane control run` as a real process, waited for until it answers."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / f"control-{self.port}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [*_control_argv(data_dir, self.port), *extra],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        with contextlib.suppress(AssertionError):  # said below, with the log
            wait_for("control run is healthy (or ends)", lambda: self.healthy() or self.process.poll() is not None, 60)
        if not self.healthy():
            terminate(self.process, 10)
            raise AssertionError("control run did not start:\n" + self.log.read_text())

    def healthy(self) -> bool:
        try:
            return bool(_get(self.url + "/healthz")["status"] == "ok")
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        assert terminate(self.process, 20), self.output()

    def drains(self) -> list[tuple[str, str]]:
        return [(d["kind"], d["code"]) for d in _get(self.url + "/api/drains")["drains"]]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    made = tmp_path / "data"
    made.mkdir()
    return made


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "is empty (0 bytes)"), (random.Random(13).randbytes(16384), "is damaged or not a database")],
    ids=["truncated-to-zero", "random-bytes"],
)
def test_control_run_refuses_a_wiped_or_corrupt_store_naming_the_file(
    data_dir: Path, content: bytes, problem: str
) -> None:
    store = data_dir / "edgeplane.db"
    store.write_bytes(content)
    output = _refused(_control_argv(data_dir, free_port()))
    assert f"the store {store} {problem}" in output
    assert "restore it from a backup" in output and "--reset-store" in output
    assert store.read_bytes() == content


def test_up_refuses_a_wiped_store_before_starting_anything(data_dir: Path) -> None:
    store = data_dir / "edgeplane.db"
    store.write_bytes(b"")
    gateway_port, control_port = free_port(), free_port()
    argv = [*EDGEPLANE, "up", "--fleet", str(SMALL_FLEET), "--data-dir", str(data_dir)]
    output = _refused([*argv, "--port", str(gateway_port), "--control-port", str(control_port)])
    assert f"the store {store} is empty (0 bytes)" in output and "--reset-store" in output
    assert "edgeplane is up" not in output and "control plane at" not in output


def test_reset_store_starts_empty_and_keeps_the_old_file_aside(data_dir: Path) -> None:
    first = Control(data_dir)
    _post(first.url + "/api/drains", {"kind": "pop", "code": "ams1", "force": True})
    assert first.drains() == [("pop", "ams1")]
    first.process.kill()  # no clean close: the drain may still be in the write-ahead log only
    first.process.wait()
    assert (data_dir / "edgeplane.db-wal").stat().st_size > 0

    again = Control(data_dir, "--reset-store")
    try:
        assert again.drains() == []
        aside = sorted(data_dir.glob("edgeplane.db.broken-*"))
        assert aside and f"moved aside to {aside[0]}" in again.output()
    finally:
        assert terminate(again.process, 20)
    kept = SQLiteStore(aside[0])  # the old file (with its log) is whole, just set aside
    assert [(d.kind, d.code) for d in kept.drains()] == [("pop", "ams1")]
    kept.close()


def test_a_store_from_before_the_schema_version_is_migrated_and_keeps_its_drains(data_dir: Path) -> None:
    old = sqlite3.connect(data_dir / "edgeplane.db")
    old.execute(
        "CREATE TABLE drains (kind TEXT NOT NULL, code TEXT NOT NULL, since REAL NOT NULL,"
        " by TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, code))"
    )
    old.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,"
        " action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL)"
    )
    old.execute("INSERT INTO drains VALUES ('metro', 'ams', 5.0, 'carol', 'fibre cut')")
    old.commit()
    old.close()
    control = Control(data_dir)
    try:
        assert control.drains() == [("metro", "ams")]
    finally:
        assert terminate(control.process, 20)
    header = sqlite3.connect(data_dir / "edgeplane.db")
    assert header.execute("PRAGMA user_version").fetchone()[0] >= 1
    header.close()


def test_two_control_planes_on_one_store_the_second_refuses(data_dir: Path) -> None:
    first = Control(data_dir)
    try:
        output = _refused(_control_argv(data_dir, free_port()))
        assert f"another edgeplane control run (pid {first.process.pid}) is using {data_dir / 'edgeplane.db'}" in output
        assert _get(first.url + "/healthz")["status"] == "ok"
    finally:
        first.process.send_signal(signal.SIGKILL)  # the lock dies with its holder: nothing stale is left
        first.process.wait()
    second = Control(data_dir)
    assert terminate(second.process, 20)


@pytest.mark.slow
def test_a_second_up_on_one_data_dir_refuses_naming_the_first_which_keeps_serving(tmp_path: Path) -> None:
    argv = [*EDGEPLANE, "up", "--fleet", str(SMALL_FLEET), "--time-scale", "0.05"]
    first = start_fleet(argv, tmp_path, fleet_path=SMALL_FLEET, backend="emulator")
    try:
        data = tmp_path / "data"
        started = time.monotonic()
        output = _refused(
            [*argv, "--data-dir", str(data), "--port", str(free_port()), "--control-port", str(free_port())]
        )
        assert f"another edgeplane up (pid {first.process.pid}) is using {data}" in output
        assert time.monotonic() - started < 20  # at once: it waits for nothing
        assert "starting" not in output and "edgeplane is up" not in output
        assert first.process.poll() is None
        assert _get(first.control_url + "/healthz")["status"] == "ok"
        headers, _, _ = chat(first, "198.18.0.9", "tiny-llama")
        assert headers["x-edgeplane-metro"] == "nyc"
        assert not any("exited" in line for line in first.output), "".join(first.output)
    finally:
        assert stop_fleet(first) == 0
