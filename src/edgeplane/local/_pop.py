"""`edgeplane pop run`: what one PoP host runs (its site agent, its gateway, its BGP speaker), supervised
together as child processes."""

from __future__ import annotations

import enum
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeplane.local._children import Child, Children, answers
from edgeplane.local._up import _url_host

# The speaker has no port of its own to ask: it has come up once it stayed alive this long.
SPEAKER_PROVEN_SECONDS = 5.0
CHECK_INTERVAL_SECONDS = 0.2
CONTROL_CHECK_SECONDS = 2.0  # before ready: how often the control plane is asked whether it answers


class PopPhase(enum.Enum):
    STARTING = "starting"  # the agent and the gateway have not both said they listen yet
    LISTENING = "listening"  # both listen (each said so itself); the gateway has no snapshot to send by yet
    READY = "ready"  # the gateway serves (its /healthz is ok)

    def __str__(self) -> str:
        return self.value


@dataclass
class PopOptions:
    pop: str
    control_url: str
    data_dir: Path
    host: str = "127.0.0.1"  # the gateway's address
    port: int = 8080
    agent_host: str = "127.0.0.1"
    agent_port: int = 8090
    advertise_address: str = "127.0.0.1"  # where the other PoPs' gateways reach this agent
    log_level: str = "warning"
    admin_token: str | None = None
    gateway_args: list[str] = field(default_factory=list)  # beyond --pop, --host and --port
    agent_args: list[str] = field(default_factory=list)  # beyond --pop, --host, --port and --advertise-address
    speaker_args: list[str] | None = None  # beyond --pop and --control; None: no speaker (no neighbours)
    extra_env: dict[str, str] = field(default_factory=dict)


# What the supervisor tells its caller: an event name and its fields (printed as text or as a JSON line).
Report = Callable[[str, dict[str, Any]], None]


class PopSupervisor:
    """Starts the agent, then the gateway, then (once both listen) the speaker, so the PoP never attracts
    traffic it cannot take; restarts whichever dies; stops the speaker first (the transits move the traffic
    away), then the gateway, then the agent."""

    def __init__(self, options: PopOptions, console: Console, report: Report) -> None:
        self.options = options
        self.report = report
        env = {**os.environ, **options.extra_env}
        if options.admin_token:
            env["EDGEPLANE_ADMIN_TOKEN"] = options.admin_token
        # The children's own lines go to stderr: stdout is this command's, one line per event.
        self.processes = Children(console, env=env, stdout=sys.stderr, notify=self._notify)
        self.phase = PopPhase.STARTING
        # Which children said they listen (the line each prints once its socket is bound): a probe of the port
        # alone could be answered by another process there, which this PoP's children then fail to bind.
        self.listening: set[str] = set()
        self._control_checked_at = 0.0
        self._said_waiting = False
        full = options.log_level == "debug"
        agent_said = f"site {options.pop} at http"
        gateway_said = f"gateway of {options.pop} at http"
        self.agent = Child("site agent", self._agent_argv(), essential=True, stop_rank=2)
        self.agent.output = _Output(self.agent, agent_said, self.listening, full_tracebacks=full)
        self.gateway = Child("gateway", self._gateway_argv(), essential=True, stop_rank=1)
        self.gateway.output = _Output(self.gateway, gateway_said, self.listening, full_tracebacks=full)
        self.speaker = Child("bgp speaker", self._speaker_argv(), essential=True, stop_rank=0)
        self.speaker.output = _Output(self.speaker, None, self.listening, full_tracebacks=full)

    def __repr__(self) -> str:
        children = ", ".join(f"{c.name} {c.state}" for c in self.processes.children)
        return f"<PopSupervisor {self.options.pop} {self.phase} [{children}]>"

    @property
    def gateway_url(self) -> str:
        return f"http://{_url_host(self.options.host)}:{self.options.port}"

    @property
    def agent_url(self) -> str:
        """Where gateways reach the agent (and what it reports to the control plane)."""
        return f"http://{_url_host(self.options.advertise_address)}:{self.options.agent_port}"

    def _base(self) -> list[str]:
        o = self.options
        return [sys.executable, "-m", "edgeplane", "--log-level", o.log_level, "--control", o.control_url]

    def _agent_argv(self) -> list[str]:
        o = self.options
        return [
            *self._base(),
            *("site", "run", "--pop", o.pop, "--host", o.agent_host, "--port", str(o.agent_port)),
            *("--advertise-address", o.advertise_address, *o.agent_args),
        ]

    def _gateway_argv(self) -> list[str]:
        o = self.options
        return [
            *self._base(),
            *("gateway", "run", "--pop", o.pop, "--host", o.host, "--port", str(o.port), *o.gateway_args),
        ]

    def _speaker_argv(self) -> list[str]:
        o = self.options
        # --control explicitly: with it the speaker follows the control plane's intents (drains, health).
        speaker = ["bgp", "run", "--pop", o.pop, "--control", o.control_url, "--data-dir", str(o.data_dir)]
        return [*self._base(), *speaker, *(o.speaker_args or [])]

    def start(self) -> None:
        self.processes.spawn(self.agent)
        self.processes.spawn(self.gateway)
        self.report("started", self._described())

    def _notify(self, event: str, child: Child, status: int | None) -> None:
        self.listening.discard(child.name)  # exited, or restarted: not listening until it says so again
        fields: dict[str, Any] = {"pop": self.options.pop, "child": child.name, "pid": _pid(child)}
        if event == "exited":
            fields |= {"status": status, "restart_in_seconds": child.backoff_seconds(), "restarts": child.restarts}
        self.report(event, fields)

    def _described(self) -> dict[str, Any]:
        o = self.options
        children: dict[str, dict[str, Any]] = {
            "site agent": {"pid": _pid(self.agent), "listen": f"{o.agent_host}:{o.agent_port}", "url": self.agent_url},
            "gateway": {"pid": _pid(self.gateway), "listen": f"{o.host}:{o.port}", "url": self.gateway_url + "/v1"},
        }
        if o.speaker_args is not None:
            children["bgp speaker"] = {"pid": _pid(self.speaker), "args": o.speaker_args}
        return {"pop": o.pop, "control": o.control_url, "children": children}

    def step(self) -> None:
        """One round of supervision: restart what died, and move on through the phases."""
        self.processes.check()
        if self.phase is not PopPhase.READY:
            self._check_control()
        if self.phase is PopPhase.STARTING and self._listens(self.agent) and self._listens(self.gateway):
            self.agent.proven = self.gateway.proven = True
            self.phase = PopPhase.LISTENING
            if self.options.speaker_args is not None:
                self.processes.spawn(self.speaker)
            self.report("listening", self._described())
        if self.phase is PopPhase.LISTENING and answers(self.gateway_url + "/healthz") == 200:
            self.phase = PopPhase.READY
            self.report("ready", {**self._described(), "gateway": self.gateway_url + "/v1"})
        speaker = self.speaker.process
        if (
            speaker is not None
            and not self.speaker.proven
            and speaker.poll() is None
            and time.monotonic() - self.speaker.started_at > SPEAKER_PROVEN_SECONDS
        ):
            self.speaker.proven = True

    def _listens(self, child: Child) -> bool:
        """It said it listens, and it is the process that said so (alive, not since restarted)."""
        return (
            child.name in self.listening
            and child.process is not None
            and child.process.poll() is None
            and child.restart_at is None
        )

    def _check_control(self) -> None:
        """Before ready: say once (until it answers again) that the control plane does not answer, which is
        what the gateway waits for (its first snapshot)."""
        now = time.monotonic()
        if now - self._control_checked_at < CONTROL_CHECK_SECONDS:
            return
        self._control_checked_at = now
        replicas = [u.strip().rstrip("/") for u in self.options.control_url.split(",") if u.strip()]
        if any(answers(url + "/healthz") is not None for url in replicas):
            self._said_waiting = False
        elif not self._said_waiting:
            self._said_waiting = True
            fields = {"pop": self.options.pop, "for": "control plane", "control": self.options.control_url}
            self.report("waiting", {**fields, "reason": "it does not answer"})

    def wait(self) -> None:
        """Supervise until interrupted (SIGINT, or SIGTERM turned into the same by `stop_on_sigterm`)."""
        while True:
            self.step()
            time.sleep(CHECK_INTERVAL_SECONDS)

    def stop(self) -> None:
        self.processes.stop()


class _Output:
    """What a child writes, passed on to this process's stderr: notes when it says it listens (``listening``:
    a line starting with ``said``), and shows a traceback as its last line alone (its exception) unless
    ``full_tracebacks`` (--log-level debug)."""

    def __init__(self, child: Child, said: str | None, listening: set[str], *, full_tracebacks: bool) -> None:
        self.child, self.said, self.listening = child, said, listening
        self.full_tracebacks = full_tracebacks
        self.in_traceback = False

    def __repr__(self) -> str:
        return f"<_Output {self.child.name} said={self.said!r}>"

    def __call__(self, line: str) -> str | None:
        if self.said is not None and line.startswith(self.said):
            self.listening.add(self.child.name)
        if self.full_tracebacks:
            return line
        if line.startswith("Traceback (most recent call last):"):
            self.in_traceback = True
            return None
        if self.in_traceback:
            if not line.strip() or line[0].isspace() or line.startswith(("During handling", "The above exception")):
                return None
            self.in_traceback = False
            return f"{self.child.name}: {line} (the traceback: --log-level debug)"
        return line


def _pid(child: Child) -> int | None:
    return child.process.pid if child.process is not None else None
