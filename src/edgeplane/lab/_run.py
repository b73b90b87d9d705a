"""`lab up`: builds the plan in the kernel, starts BIRD per router, the control plane and each PoP, waits until
every BGP session is up, and takes everything down again. The thin shell around the plan and the BIRD text."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgeplane.lab._bird import Session, bird_config, parse_protocols
from edgeplane.lab._netns import (
    LabError,
    Netlink,
    alive,
    create_namespace,
    enter,
    has_netem,
    kill_all,
    lab_namespaces,
    open_namespace,
    pids_in,
    remove_namespace,
)
from edgeplane.lab._plan import AGENT_PORT, CONTROL_PORT, GATEWAY_PORT, HOST_LINK, LabPlan, PopPlan, RouterPlan
from edgeplane.lab._state import (
    STATE_DIR,
    LabState,
    MetroState,
    PopState,
    ProcessState,
    RouterState,
    read_state,
    state_path,
    write_state,
)
from edgeplane.local import answers

STOP_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.25


def find_bird() -> tuple[str, str]:
    """The `bird` and `birdc` programs; LabError naming the package when BIRD 2 is missing."""
    found = []
    for program in ("bird", "birdc"):
        path = shutil.which(program) or (f"/usr/sbin/{program}" if os.path.exists(f"/usr/sbin/{program}") else None)
        if path is None:
            raise LabError(
                "the lab's transit routers need BIRD 2 (Debian: apt-get install bird2; scripts/install does)"
            )
        found.append(path)
    return found[0], found[1]


def birdc(socket: str, *command: str, timeout_seconds: float = 5.0) -> str | None:
    """What BIRD answers on ``socket``, or None when it does not."""
    _, client = find_bird()
    try:
        done = subprocess.run(
            [client, "-s", socket, *command], capture_output=True, text=True, timeout=timeout_seconds, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def sessions_of(router: RouterPlan, socket: str) -> list[Session]:
    """The router's BGP sessions as its BIRD reports them (none when it does not answer)."""
    text = birdc(socket, "show", "protocols")
    return [] if text is None else parse_protocols(router, text)


@dataclass
class LabOptions:
    fleet_path: Path | None
    graceful_shutdown_seconds: float = 30.0
    ready_timeout_seconds: float = 120.0
    state_dir: Path = STATE_DIR
    log_level: str = "info"
    # The options of `edgeplane pop run` when this install has it: each PoP runs it; else its three services.
    pop_run_options: frozenset[str] | None = None


@dataclass
class _Process:
    name: str
    netns: str
    popen: subprocess.Popen[bytes]
    log: Path
    reported: bool = False


@dataclass
class Lab:
    """One lab: ``say`` gets each line a person should read."""

    plan: LabPlan
    options: LabOptions
    say: Callable[[str], None]
    processes: list[_Process] = field(default_factory=list)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    api_key: str = ""
    netem: bool = False
    _built: bool = False

    def __repr__(self) -> str:
        running = sum(1 for p in self.processes if p.popen.poll() is None)
        return f"<Lab [{len(self.plan.pops)} PoPs, {len(self.plan.routers)} routers | {running} processes running]>"

    @property
    def state_dir(self) -> Path:
        return self.options.state_dir

    def socket(self, router: RouterPlan) -> str:
        return str(self.state_dir / "routers" / router.name / "bird.ctl")

    # -- build ------------------------------------------------------------------------------------------------

    def refuse_if_running(self) -> None:
        path = state_path(self.state_dir)
        if path.exists():
            try:
                pid = read_state(self.state_dir).pid
            except LabError:
                pid = None
            if pid is not None and alive(pid):
                raise LabError(f"a lab is running (lab up, pid {pid}): `edgeplane lab down` stops it")
        left = lab_namespaces()
        if left or path.exists():
            raise LabError(
                f"a lab left {', '.join(left) or path} behind: `edgeplane lab down` removes it; then start again"
            )

    def build(self) -> None:
        self._built = True  # from here on, teardown has something to do even if a step fails
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        for name in self.plan.namespaces():
            create_namespace(name)
        netlink = Netlink()
        try:
            netlink.bridge(self.plan.mgmt_netns, "br0")
            for name in self.plan.namespaces():
                netlink.loopback_up(name, [])
            for pop in self.plan.pops:
                netlink.loopback_up(pop.netns, list(pop.service_addresses))
            for router in self.plan.routers:
                netlink.loopback_up(router.netns, [router.loopback])
            for serial, link in enumerate(self.plan.links):
                netlink.link(link, serial)
            for route in self.plan.routes:
                netlink.route(route)
            self.netem = has_netem(self.plan.mgmt_netns)
            if self.netem:
                for link in self.plan.links:
                    if link.rtt_ms is not None:  # half the round trip each way
                        for end in (link.a, link.b):
                            assert end.netns is not None
                            netlink.delay(end.netns, end.ifname, link.rtt_ms / 2)
        finally:
            netlink.close()
        if self.netem:
            self.say("links between metros carry the fleet's RTTs (netem)")
        else:
            self.say(
                "this kernel has no netem qdisc: links run without the fleet's RTTs (routes still follow IGP costs)"
            )

    # -- processes --------------------------------------------------------------------------------------------

    def _spawn(self, name: str, netns: str, argv: list[str], env: dict[str, str] | None = None) -> _Process:
        log = self.state_dir / "logs" / f"{name}.log"
        descriptor = open_namespace(netns)
        try:
            with log.open("ab") as out:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=enter(descriptor),
                    start_new_session=True,
                    env={**os.environ, **(env or {})},
                )
        finally:
            os.close(descriptor)
        process = _Process(name, netns, popen, log)
        self.processes.append(process)
        return process

    def _edgeplane(self, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "edgeplane", "--log-level", self.options.log_level,
            "--control", self.plan.control_url, *args,
        ]  # fmt: skip

    def _child_env(self) -> dict[str, str]:
        return {"EDGEPLANE_ADMIN_TOKEN": self.admin_token, "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        bird, _ = find_bird()
        for router in self.plan.routers:
            directory = self.state_dir / "routers" / router.name
            directory.mkdir(parents=True, exist_ok=True)
            config = directory / "bird.conf"
            config.write_text(bird_config(router, fleet_asn=self.plan.fleet_asn, log_path=str(directory / "bird.log")))
            self._spawn(f"bird-{router.name}", router.netns, [bird, "-f", "-c", str(config), "-s", self.socket(router)])
        self._start_control()
        self.api_key = self._create_key()
        for pop in self.plan.pops:
            self._start_pop(pop)
        self.write_state()

    def _start_control(self) -> None:
        fleet = ["--fleet", str(self.options.fleet_path)] if self.options.fleet_path else []
        argv = self._edgeplane(
            "control", "run", *fleet, "--host", self.plan.control_address, "--port", str(CONTROL_PORT),
            "--data-dir", str(self.state_dir / "control"),
            "--graceful-shutdown-seconds", str(self.options.graceful_shutdown_seconds),
        )  # fmt: skip
        # The admin token travels in the environment (EDGEPLANE_ADMIN_TOKEN), never on a command line `ps` shows.
        self._spawn("control", self.plan.control_netns, argv, self._child_env())
        self._wait(
            "the control plane answers",
            lambda: self._http("GET", f"{self.plan.control_url}/api/status") is not None,
            30.0,
            self.processes[-1],
        )

    def _create_key(self) -> str:
        answer = self._http("POST", f"{self.plan.control_url}/api/keys", {"tenant": "lab"})
        if not isinstance(answer, dict) or not isinstance(answer.get("key"), str):
            raise LabError(f"the control plane did not make the lab's API key: {answer!r}")
        return str(answer["key"])

    def _http(self, method: str, url: str, body: Any = None) -> Any:
        """JSON from the control plane, as the lab's admin; None when it does not answer (yet)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=2.0) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            error.close()
            if error.code >= 500:
                return None
            raise LabError(f"{method} {url}: {error.code} {detail}") from None
        except (OSError, ValueError):
            return None

    def _start_pop(self, pop: PopPlan) -> None:
        data_dir = str(self.state_dir / "pops" / pop.code)
        fleet = ["--fleet", str(self.options.fleet_path)] if self.options.fleet_path else []
        neighbors = [arg for link in pop.links for arg in ("--neighbor", link.router_address)]
        neighbors += [arg for link in pop.links for arg in ("--neighbor-as", str(link.asn))]
        speaker = [*neighbors, "--local-address", pop.next_hop, "--router-id", pop.next_hop] if pop.links else []
        metro = ["--home-metro", pop.metro]
        run = self.options.pop_run_options
        if run is not None:
            argv = self._edgeplane(
                "pop", "run", "--pop", pop.code, *fleet, "--data-dir", data_dir,
                "--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--agent-host", pop.mgmt_address,
                "--agent-port", str(AGENT_PORT), "--advertise-address", pop.mgmt_address, *metro, *speaker,
            )  # fmt: skip
            self._spawn(f"pop-{pop.code}", pop.netns, argv, self._child_env())
            return
        # Until `pop run` exists: the same three services, started side by side in the PoP's namespace.
        self._spawn(
            f"site-{pop.code}",
            pop.netns,
            self._edgeplane(
                "site", "run", "--pop", pop.code, *fleet, "--host", pop.mgmt_address, "--port", str(AGENT_PORT)
            ),
            self._child_env(),
        )
        self._spawn(
            f"gateway-{pop.code}",
            pop.netns,
            self._edgeplane("gateway", "run", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT), *metro),
            self._child_env(),
        )
        if speaker:
            self._spawn(
                f"speaker-{pop.code}",
                pop.netns,
                self._edgeplane("bgp", "run", "--pop", pop.code, *speaker, "--data-dir", data_dir),
                self._child_env(),
            )

    def _wait(self, what: str, done: Callable[[], bool], timeout_seconds: float, watched: _Process | None) -> None:
        deadline = time.monotonic() + timeout_seconds
        while not done():
            if watched is not None and watched.popen.poll() is not None:
                raise LabError(f"{watched.name} exited while the lab waited for {what}:\n{_tail(watched.log)}")
            if time.monotonic() > deadline:
                raise LabError(f"the lab waited {timeout_seconds:.0f} s for {what}")
            time.sleep(POLL_SECONDS)

    # -- readiness and state ----------------------------------------------------------------------------------

    def sessions(self) -> list[Session]:
        return [s for router in self.plan.routers for s in sessions_of(router, self.socket(router))]

    def wait_ready(self) -> None:
        """Until every BGP session is established and every PoP's gateway answers its health check."""
        deadline = time.monotonic() + self.options.ready_timeout_seconds
        expected = sum(len(r.pops) + len(r.peers) for r in self.plan.routers)
        while True:
            for process in self.processes:
                if process.popen.poll() is not None:
                    raise LabError(f"{process.name} exited during start-up:\n{_tail(process.log)}")
            sessions = self.sessions()
            up = [s for s in sessions if s.up]
            gateways = [p for p in self.plan.pops if answers(f"http://{p.mgmt_address}:{GATEWAY_PORT}/healthz") == 200]
            if len(up) == expected and len(gateways) == len(self.plan.pops):
                return
            if time.monotonic() > deadline:
                down = [f"{s.router}:{s.peer} {s.state} {s.info}" for s in sessions if not s.up]
                waiting = [p.code for p in self.plan.pops if p not in gateways]
                raise LabError(
                    f"the lab was not ready after {self.options.ready_timeout_seconds:.0f} s: BGP sessions up"
                    f" {len(up)}/{expected} (not up: {'; '.join(down) or '-'}); gateways not healthy:"
                    f" {', '.join(waiting) or '-'}"
                )
            time.sleep(POLL_SECONDS * 2)

    def state(self) -> LabState:
        return LabState(
            pid=os.getpid(),
            fleet=str(self.options.fleet_path) if self.options.fleet_path else None,
            control_url=self.plan.control_url,
            admin_token=self.admin_token,
            api_key=self.api_key,
            netem=self.netem,
            namespaces=self.plan.namespaces(),
            host_link=HOST_LINK,
            metros=[
                MetroState(
                    code=c.metro,
                    client_netns=c.netns,
                    client_address=c.address,
                    service_url=self.plan.service_url(c.metro),
                )
                for c in self.plan.clients
            ],
            pops=[
                PopState(code=p.code, metro=p.metro, netns=p.netns, address=p.mgmt_address, next_hop=p.next_hop)
                for p in self.plan.pops
            ],
            routers=[
                RouterState(
                    name=r.name,
                    transit=r.transit,
                    asn=r.asn,
                    metro=r.metro,
                    netns=r.netns,
                    router_id=r.router_id,
                    loopback=r.loopback,
                    socket=self.socket(r),
                )
                for r in self.plan.routers
            ],
            processes=[ProcessState(name=p.name, netns=p.netns, pid=p.popen.pid) for p in self.processes],
        )

    def write_state(self) -> None:
        write_state(self.state(), self.state_dir)

    def watch(self) -> None:
        """Until interrupted: says once of each process that it exited (`lab fail` does that on purpose)."""
        while True:
            for process in self.processes:
                if not process.reported and (code := process.popen.poll()) is not None:
                    process.reported = True
                    self.say(f"{process.name} in {process.netns} exited ({_exit_text(code)})")
            time.sleep(POLL_SECONDS * 2)

    # -- teardown ---------------------------------------------------------------------------------------------

    def teardown(self) -> None:
        """Every process, namespace and link the lab made, and its state directory; safe to call twice."""
        for process in self.processes:
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGKILL)
                process.popen.wait()
        if self._built:
            remove_everything(self.state_dir)
        self.processes.clear()
        self._built = False


def remove_everything(state_dir: Path = STATE_DIR) -> list[str]:
    """What any lab left: processes in its namespaces (kill -9), the namespaces, the host's link, the state
    directory. Returns what it removed."""
    removed: list[str] = []
    names = lab_namespaces()
    for _ in range(3):  # a process may fork while we look; look again
        pids = pids_in(names)
        if not pids:
            break
        kill_all(list(pids))
        removed += [f"process {pid} in {name}" for pid, name in sorted(pids.items())]
        deadline = time.monotonic() + 2.0
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
    for name in names:
        remove_namespace(name)
        removed.append(f"namespace {name}")
    netlink = Netlink()
    try:
        if netlink.remove_host_link():
            removed.append(f"link {HOST_LINK}")
    finally:
        netlink.close()
    if state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)
        removed.append(f"state {state_dir}")
    return removed


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


def print_json_line(data: Any, out: IO[str]) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()
