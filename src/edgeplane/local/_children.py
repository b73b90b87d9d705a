"""Child processes kept running: started, restarted with back-off when they die, stopped together in order.
`edgeplane up` and `edgeplane pop run` both supervise their services with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console

from edgeplane._errors import EdgeplaneError
from edgeplane.web import die_with_parent

# A process that dies is restarted after 0.5 s, then 1, 2, 4... up to 30 s; a run of a minute without
# dying resets the back-off.
RESTART_FIRST_SECONDS = 0.5
RESTART_MAX_SECONDS = 30.0
RESTART_RESET_SECONDS = 60.0
# An essential process that has exited this many times before it ever came up will not start at all (a taken
# port, a refused flag): the supervisor gives up rather than retry it forever.
START_ATTEMPTS = 3
STOP_WAIT_SECONDS = 8.0  # after SIGTERM, before SIGKILL


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    essential: bool = False  # its supervisor cannot start without it (it is still restarted once it was up)
    first_start_args: list[str] = field(default_factory=list)  # for the first start only, not restarts
    stop_rank: int = 1  # children stop in rising rank, all signalled before any is waited for
    proven: bool = False  # it came up once: from then on its exits are restarted, never fatal
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    # Given each line the child writes (stdout and stderr, then piped through this process), returning what to
    # print of it (None: nothing); None: the child writes to the supervisor's stdout and stderr directly.
    output: Callable[[str], str | None] | None = None
    last_line: str = ""  # with ``output``: the last line the child wrote (after an exit: often why it exited)
    reader: threading.Thread | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"<Child {self.name} pid={pid} {self.state} restarts={self.restarts}>"

    @property
    def state(self) -> str:
        if self.restart_at is not None:
            return "restarting"
        if self.process is None:
            return "not started"
        return "running" if self.process.poll() is None else "exited"

    def backoff_seconds(self) -> float:
        return min(RESTART_MAX_SECONDS, RESTART_FIRST_SECONDS * 2.0 ** max(0, self.restarts - 1))


# Told of each exit ("exited": the child as it died, with its status) and restart ("restarted": the new process).
Notify = Callable[[str, Child, int | None], None]


class Children:
    """The processes one supervisor owns. ``up``: once set, no exit is fatal, whatever a child has proven."""

    def __init__(
        self,
        console: Console,
        *,
        env: Mapping[str, str] | None = None,
        stdout: IO[str] | None = None,
        notify: Notify | None = None,
    ) -> None:
        self.console = console
        self.env = dict(env) if env is not None else dict(os.environ)
        self.stdout = stdout  # where the children's output goes (None: this process's own stdout)
        self.notify = notify
        self.children: list[Child] = []
        self.up = False
        self._stopping = False

    def __repr__(self) -> str:
        alive = sum(1 for c in self.children if c.state == "running")
        return f"<Children [Processes: {alive} alive of {len(self.children)}]>"

    def spawn(self, child: Child) -> None:
        argv = [*child.argv, *child.first_start_args]
        child.first_start_args = []
        piped = child.output is not None
        child.process = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if piped else self.stdout,
            stderr=subprocess.STDOUT if piped else None,
            preexec_fn=die_with_parent,
        )
        child.started_at = time.monotonic()
        child.last_line = ""
        if piped:
            child.reader = threading.Thread(
                target=self._pump, args=(child, child.process), name=f"{child.name} output", daemon=True
            )
            child.reader.start()
        if child not in self.children:
            self.children.append(child)

    def _pump(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        """Each line ``process`` writes, through ``child.output``, to this process's stdout (or ``self.stdout``)."""
        assert process.stdout is not None and child.output is not None
        with process.stdout:
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.strip() and child.process is process:
                    child.last_line = line.strip()
                shown = child.output(line)
                if shown is not None:
                    out = self.stdout or sys.stdout
                    out.write(shown + "\n")
                    out.flush()

    def check(self) -> None:
        """Restart every dead process with back-off; fail (EdgeplaneError) only when an essential one cannot
        start at all: START_ATTEMPTS exits before it, or the whole group, ever came up."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None or self._stopping:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.restart_at = None
                    self.console.print(f"restarting {child.name} (restart {child.restarts})")
                    self.spawn(child)
                    if self.notify is not None:
                        self.notify("restarted", child, None)
                continue
            code = child.process.poll()
            if code is None:
                if child.restarts and now - child.started_at > RESTART_RESET_SECONDS:
                    child.restarts = 0
                continue
            if child.essential and not (self.up or child.proven) and child.restarts + 1 >= START_ATTEMPTS:
                if child.reader is not None:
                    child.reader.join(2.0)  # its last words: why it exited
                why = f": {child.last_line}" if child.last_line else ""
                raise EdgeplaneError(
                    f"{child.name} exited with status {code} {START_ATTEMPTS} times while starting{why}"
                )
            child.restarts += 1
            child.restart_at = now + child.backoff_seconds()
            self.console.print(
                f"[yellow]{child.name} (pid {child.process.pid}) exited with status {code}; "
                f"restarting in {child.backoff_seconds():.1f} s[/]"
            )
            if self.notify is not None:
                self.notify("exited", child, code)

    def stop(self) -> None:
        """SIGTERM to every child in rank order, then wait for all; SIGKILL for any still there after
        STOP_WAIT_SECONDS. Nothing is restarted from now on."""
        self._stopping = True
        order = sorted(self.children, key=lambda c: c.stop_rank)
        for child in order:
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for child in order:
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def answers(url: str) -> int | None:
    """The HTTP status ``url`` answers with, or None when nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except (OSError, ValueError):
        return None
