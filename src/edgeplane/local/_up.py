"""`edgeplane up`: a control plane, a gateway and one site agent process per PoP on this machine."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from edgeplane._errors import EdgeplaneError
from edgeplane.fleet import Fleet
from edgeplane.local._children import Child, Children


def get_json(url: str, timeout_seconds: float = 2.0, *, token: str | None = None) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
        return json.loads(response.read())


@dataclass
class UpOptions:
    fleet_path: Path | None
    host: str = "127.0.0.1"
    port: int = 8080
    control_port: int = 8081
    backend: str = "emulator"
    data_dir: Path = Path(".")
    gguf_path: Path | None = None
    seed: int = 0
    time_scale: float = 1.0
    link_scale: float = 1.0  # the fabric's links run at their capacity times this
    home_metro: str | None = None
    log_level: str = "warning"
    admin_token: str | None = None
    ready_timeout_seconds: float = 120.0
    control_args: list[str] = field(default_factory=list)
    control_replicas: int = 1  # control planes on one shared store, on control_port, control_port + 1, ...
    reset_store: bool = False  # the control plane's first start moves the store aside; its restarts keep it
    gateway_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)


class Supervisor:
    """Starts every process, waits until the fleet serves, and stops them all together."""

    def __init__(self, fleet: Fleet, options: UpOptions, console: Console) -> None:
        self.fleet = fleet
        self.options = options
        self.console = console
        env = {**os.environ, **options.extra_env}
        if options.admin_token:
            env["EDGEPLANE_ADMIN_TOKEN"] = options.admin_token
        # Once the fleet has served (processes.up), nothing that dies ends `up`.
        self.processes = Children(console, env=env)
        self._progress = ""  # shown beside the spinner while waiting

    def __repr__(self) -> str:
        alive = sum(1 for c in self.children if c.state == "running")
        return f"<Supervisor [Processes: {alive} alive of {len(self.children)}]>"

    @property
    def children(self) -> list[Child]:
        return self.processes.children

    @property
    def control_url(self) -> str:
        """The first control plane replica (the one `up` itself asks)."""
        return self.replica_urls[0]

    @property
    def replica_urls(self) -> list[str]:
        host = _url_host(self.options.host)
        return [f"http://{host}:{self.options.control_port + n}" for n in range(self.options.control_replicas)]

    @property
    def gateway_url(self) -> str:
        return f"http://{_url_host(self.options.host)}:{self.options.port}"

    def _base(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "edgeplane",
            "--log-level",
            self.options.log_level,
            "--control",
            ",".join(self.replica_urls),
        ]

    def _spawn(self, child: Child) -> None:
        self.processes.spawn(child)

    def start(self) -> None:
        o = self.options
        fleet_args = ["--fleet", str(o.fleet_path)] if o.fleet_path else []
        for n in range(o.control_replicas):
            self._spawn(
                Child(
                    "control" if n == 0 else f"control {n + 1}",
                    [
                        *self._base(),
                        "control",
                        "run",
                        *fleet_args,
                        "--host",
                        o.host,
                        "--port",
                        str(o.control_port + n),
                        "--data-dir",
                        str(o.data_dir),
                        *o.control_args,
                    ],
                    essential=True,
                    first_start_args=["--reset-store"] if o.reset_store else [],
                    stop_rank=2,  # last: the others report to it until they stop
                )
            )
        for url in self.replica_urls:
            self._wait_for("control plane", functools.partial(_healthy, url), 30)
        site_args = ["--backend", o.backend, "--seed", str(o.seed), "--time-scale", str(o.time_scale)]
        site_args.append("--redfish-emulate")  # one Redfish emulator per unit: live facility telemetry
        if o.gguf_path:
            site_args += ["--gguf", str(o.gguf_path)]
        for pop in self.fleet.pops:
            self._spawn(
                Child(
                    f"site {pop.code}",
                    [
                        *self._base(),
                        "site",
                        "run",
                        "--pop",
                        pop.code,
                        *fleet_args,
                        "--host",
                        o.host,
                        "--port",
                        "0",
                        *site_args,
                        *("--data-dir", str(o.data_dir / "sites" / pop.code), "--link-scale", str(o.link_scale)),
                    ],
                )
            )
        home = ["--home-metro", o.home_metro] if o.home_metro else []
        self._spawn(
            Child(
                "gateway",
                [*self._base(), "gateway", "run", "--host", o.host, "--port", str(o.port), *home, *o.gateway_args],
                essential=True,
                stop_rank=0,  # first: no new request lands on a stopping site
            )
        )
        total = len(self.fleet.pops)

        def all_serving() -> bool:
            """Every PoP serving (or drained by an operator: a drain kept in the store outlives restarts), its
            agent's own report in (with its pid), as `status` will show it."""
            status = get_json(self.control_url + "/api/status", token=self.options.admin_token)
            serving = sum(1 for p in status["pops"] if p["state"] in ("serving", "drained") and p["pid"] is not None)
            self._progress = f"{serving}/{total} sites serving"
            return serving == total

        self._wait_for("site agents", all_serving, o.ready_timeout_seconds)
        self._wait_for("gateway", lambda: get_json(self.gateway_url + "/healthz")["status"] == "ok", 30)
        self.processes.up = True

    def _wait_for(self, what: str, ready: Callable[[], bool], timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        with self.console.status(f"starting {what}...") as status:
            while True:
                self._check_children()
                try:
                    if ready():
                        return
                except (OSError, urllib.error.URLError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise EdgeplaneError(f"{what} did not become ready within {timeout_seconds:.0f} s")
                if self._progress:
                    status.update(f"starting {what}: {self._progress}")
                time.sleep(0.1)

    def _check_children(self) -> None:
        """Restart every dead process with back-off; fail only if the control plane or the gateway cannot
        start at all (START_ATTEMPTS exits before the fleet was up)."""
        self.processes.check()

    def wait(self) -> None:
        """Block until interrupted (SIGINT, or SIGTERM turned into the same by `stop_on_sigterm`)."""
        while True:
            self._check_children()
            time.sleep(0.2)

    def stop(self) -> None:
        # The gateway first so no new request lands on a stopping site, the control plane last.
        self.processes.stop()


def stop_on_sigterm() -> None:
    """SIGTERM stops `up` the way Ctrl-C does, so cleanup runs either way, even during start-up."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _healthy(url: str) -> bool:
    return bool(get_json(url + "/healthz")["status"] == "ok")


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
