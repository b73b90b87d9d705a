"""`edgeplane flows collect` as a real process for tests: started on free ports, stopped with SIGTERM (which
stores what arrived), and the CLI commands that read its data directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests._time import wait_for


@dataclass
class Collector:
    process: subprocess.Popen[str]
    data_dir: Path
    udp: tuple[str, int]
    http: str

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.http + path, timeout=10) as answer:
            return str(answer.read().decode())

    def live_stats(self) -> dict[str, Any]:
        return dict(json.loads(self.get("/api/flows/stats")))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def edgeplane(
    *args: str, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "edgeplane", *args],
        capture_output=True, text=True, timeout=timeout, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"edgeplane {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@contextmanager
def collector(data_dir: Path, *extra: str, fleet: Path | None = None) -> Iterator[Collector]:
    argv = [sys.executable, "-m", "edgeplane", "flows", "collect", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]
    argv += ["--data-dir", str(data_dir), *extra]
    if fleet is not None:
        argv += ["--fleet", str(fleet)]
    log = open(data_dir.parent / f"collector-{os.getpid()}-{len(list(data_dir.parent.iterdir()))}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
    state = data_dir / "collector.json"
    try:
        wait_for("the collector to listen", lambda: state.exists() or process.poll() is not None, 60, 0.05)
        if process.poll() is not None:
            raise AssertionError(f"the collector exited: {Path(log.name).read_text()}")
        found = json.loads(state.read_text())
        host, _, port = found["udp"].rpartition(":")
        running = Collector(process, data_dir, (host, int(port)), found["http"])
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
