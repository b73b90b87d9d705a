"""What the other lab commands do to a running (or crashed) lab: status, exec, fail and down, all from its
state file and the kernel, never from the `lab up` process itself."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from edgeplane.fleet import load_default_fleet, load_fleet
from edgeplane.lab._netns import LabError, alive, enter_now, kill_all, pids_in
from edgeplane.lab._plan import LabPlan, plan_lab
from edgeplane.lab._run import remove_everything, sessions_of
from edgeplane.lab._state import STATE_DIR, LabState, read_state

DOWN_WAIT_SECONDS = 30.0


def _plan_of(state: LabState) -> LabPlan:
    return plan_lab(load_fleet(Path(state.fleet)) if state.fleet else load_default_fleet())


def lab_status(state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """The running lab: metros with their clients' namespace and service URL, PoPs, routers, and each BGP
    session as the routers' BIRD reports it."""
    state = read_state(state_dir)
    plan = _plan_of(state)
    sockets = {r.name: r.socket for r in state.routers}
    sessions = [s.to_json() for router in plan.routers for s in sessions_of(router, sockets[router.name])]
    return {
        "running": alive(state.pid),
        "pid": state.pid,
        "control_url": state.control_url,
        "admin_token": state.admin_token,
        "api_key": state.api_key,
        "netem": state.netem,
        "metros": [m.model_dump() for m in state.metros],
        "pops": [p.model_dump() for p in state.pops],
        "routers": [r.model_dump(exclude={"socket"}) for r in state.routers],
        "sessions": sessions,
    }


def exec_in_metro(metro: str, command: list[str], state_dir: Path = STATE_DIR) -> NoReturn:
    """Replaces this process with ``command`` in ``metro``'s client namespace, OPENAI_BASE_URL and
    OPENAI_API_KEY set to the metro's service URL and the lab's key (so the exit status is the command's)."""
    state = read_state(state_dir)
    found = next((m for m in state.metros if m.code == metro), None)
    if found is None:
        raise LabError(
            f"no client namespace for metro {metro!r} (the lab has {', '.join(m.code for m in state.metros)})"
        )
    if not command:
        raise LabError("no command to run: edgeplane lab exec METRO -- CMD...")
    env = {**os.environ, "OPENAI_BASE_URL": found.service_url, "OPENAI_API_KEY": state.api_key}
    # edgeplane's own Python first on the PATH: `sudo` resets PATH (secure_path), and `python -c "import openai"`
    # should find the interpreter that has the SDK, as the README's example runs it.
    here = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([here, *(p for p in env.get("PATH", os.defpath).split(os.pathsep) if p != here)])
    env.pop("EDGEPLANE_CONTROL_URL", None)  # the management network is out of a client's reach
    enter_now(found.client_netns)
    try:
        os.execvpe(command[0], command, env)
    except OSError as error:
        raise LabError(f"cannot run {command[0]!r}: {error.strerror}") from None


def fail_pop(pop: str, state_dir: Path = STATE_DIR) -> list[int]:
    """kill -9 of every process in ``pop``'s namespace (its gateway, agent, speaker and ExaBGP): a failure, not
    a drain. Returns their pids."""
    state = read_state(state_dir)
    found = next((p for p in state.pops if p.code == pop), None)
    if found is None:
        raise LabError(f"no PoP {pop!r} in the lab (it has {', '.join(p.code for p in state.pops)})")
    pids = sorted(pids_in([found.netns]))
    kill_all(pids)
    return pids


def lab_down(state_dir: Path = STATE_DIR) -> list[str]:
    """Stops a running `lab up` (SIGTERM; it removes what it made), then removes whatever is left, also after
    a crash. Idempotent: returns what it removed, nothing when nothing was there."""
    removed: list[str] = []
    try:
        pid: int | None = read_state(state_dir).pid
    except LabError:
        pid = None
    if pid is not None and pid != os.getpid() and alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_WAIT_SECONDS
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            kill_all([pid])
        removed.append(f"lab up (pid {pid}) stopped")
    return removed + remove_everything(state_dir)
