"""The lab on this machine (issue 15): `lab up`'s start-up time, processes and memory; for every metro drain and
every PoP failure, the time until the affected clients' new connections enter where the planner predicts,
against its bound; and the share of predictions (every metro's clients, in every state) that matched.

    sudo .venv/bin/python bench/lab.py [--fleet F] [--graceful-shutdown-seconds 2]

Root, Linux, BIRD 2. Runs under /tmp/edgeplane-fleet.lock and leaves no lab behind. Bounds: a drain moves its
metro's users at the end of the graceful-shutdown period plus BGP convergence, bound GS + 5 s (the issue's
acceptance); a failure within the BGP hold time plus 1 s. The lab cannot restart a PoP, so after each failure
the benchmark starts that PoP's `pop run` again in its namespace, as `lab up` had (command line, environment),
and waits until every metro's clients are back where they were before the next.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import terminate  # noqa: E402
from tests.lab.test_acceptance import Prober, RunningLab, _lab_pids, ask_all  # noqa: E402
from tests.lab.test_lab import EDGEPLANE, lab, read_line  # noqa: E402

from edgeplane.bgp import IngressModel  # noqa: E402
from edgeplane.fleet import load_default_fleet, load_fleet  # noqa: E402
from edgeplane.lab import HOLD_TIME_SECONDS, STATE_DIR, read_state  # noqa: E402

LOCK = "/tmp/edgeplane-fleet.lock"
POLL_SECONDS = 0.05


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def moved(
    running: RunningLab, metros: list[str], expected: dict[str, str | None], since: float, bound: float
) -> tuple[float | None, int]:
    """Seconds from ``since`` until every one of ``metros``' clients got an answer from a new connection at its
    expected PoP (None: not within 3 x bound), and how many of their requests failed meanwhile. Asks only those
    metros, every POLL_SECONDS."""
    probers = {m: running.probers[m] for m in metros}
    settled: dict[str, float] = {}
    failed = 0
    while len(settled) < len(probers) and time.monotonic() - since < 3 * bound:
        for metro, answer in ask_all({m: p for m, p in probers.items() if m not in settled}).items():
            failed += not answer["ok"]
            if answer["ok"] and answer.get("ingress") == expected[metro]:
                settled[metro] = answer["ended"]
        time.sleep(POLL_SECONDS)
    return (max(settled.values()) - since if len(settled) == len(probers) else None), failed


def measure_all(running: RunningLab, expected: dict[str, str | None]) -> tuple[int, int, list[str]]:
    """One round over every metro: (matched, asked, mismatches)."""
    answers = ask_all(running.probers)
    wrong = [
        f"{m}: {a.get('ingress') if a['ok'] else 'failed'} != {expected[m]}"
        for m, a in answers.items()
        if a.get("ingress") != expected[m]
    ]
    return len(answers) - len(wrong), len(answers), wrong


def wait_back(running: RunningLab, baseline: dict[str, str | None], timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if measure_all(running, baseline)[2] == []:
            return True
        time.sleep(0.2)
    return False


def restart_pop(pop: str, cmdline: list[str], environ: dict[str, str], cwd: str, log: Path) -> subprocess.Popen[bytes]:
    netns = next(p.netns for p in read_state().pops if p.code == pop)
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", netns, *cmdline], cwd=cwd, env=environ, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def process_of(pop: str) -> tuple[list[str], dict[str, str], str]:
    state = read_state()
    pid = next(p.pid for p in state.processes if p.name == f"pop-{pop}")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
    pairs = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").decode().split("\0")
    environ = dict(p.split("=", 1) for p in pairs if "=" in p)
    return cmdline, environ, os.readlink(f"/proc/{pid}/cwd")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", type=Path, default=None)
    parser.add_argument("--graceful-shutdown-seconds", type=float, default=2.0)
    args = parser.parse_args()
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        sys.exit("the lab needs root on Linux")
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            run(args)
        finally:
            lab("down", timeout=90)


def run(args: argparse.Namespace) -> None:
    fleet = load_fleet(args.fleet) if args.fleet else load_default_fleet()
    gs = args.graceful_shutdown_seconds
    drain_bound, fail_bound = gs + 5, HOLD_TIME_SECONDS + 1
    lab("down", timeout=90)
    logs = Path("/tmp/edgeplane-bench-lab")
    logs.mkdir(exist_ok=True)
    errors = logs / "lab-up.stderr"
    fleet_args = ["--fleet", str(args.fleet.resolve())] if args.fleet else []
    argv = [*EDGEPLANE, "lab", "up", *fleet_args, "--json-ready", "--graceful-shutdown-seconds", str(gs)]
    started = time.monotonic()
    with errors.open("w") as stderr:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    probers: dict[str, Prober] = {}
    restarted: list[subprocess.Popen[bytes]] = []  # PoPs started again after their failure; `lab down` ends them
    try:
        status = json.loads(read_line(process, 300, errors))
        startup = time.monotonic() - started
        time.sleep(2)  # settled: every PoP's children up and idle
        pids = _lab_pids() | {process.pid}
        kinds: dict[str, int] = {}
        for pid in pids:
            kinds[comm(pid)] = kinds.get(comm(pid), 0) + 1
        rss = sum(rss_mib(pid) for pid in pids)
        described = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(
            f"lab up: {len(fleet.pops)} PoPs, {len(status['routers'])} routers, {len(status['metros'])} client metros;"
            f" ready in {startup:.1f} s; {len(pids)} processes ({described});"
            f" RSS sum {rss:.0f} MiB",
            flush=True,
        )
        probers = {m["code"]: Prober(m["code"], logs / f"client-{m['code']}.stderr") for m in status["metros"]}
        running = RunningLab(fleet, IngressModel(fleet), status, probers)
        baseline = running.predicted()
        assert wait_back(running, baseline, 30), "clients not at the predicted PoPs at start"
        matched = asked = 0
        rows: list[tuple[str, ...]] = []

        for metro in fleet.metros:
            expected = running.predicted(withdrawn_metros={metro.code})
            changed = [m for m in probers if expected[m] != baseline[m]]
            since = time.monotonic()
            running.run("drain", "metro", metro.code)
            seconds, failed = moved(running, changed, expected, since, drain_bound) if changed else (0.0, 0)
            ok, n, wrong = measure_all(running, expected)
            matched, asked = matched + ok, asked + n
            running.run("undrain", "metro", metro.code)
            moves = ", ".join(f"{m}: {baseline[m]} > {expected[m]}" for m in changed) or "-"
            rows.append(("drain", metro.code, moves, _seconds(seconds, drain_bound), str(failed), f"{ok}/{n}"))
            print(" ".join(rows[-1]), ("" if not wrong else f"MISMATCH {wrong}"), flush=True)
            assert wait_back(running, baseline, 3 * drain_bound), f"not back after undrain of {metro.code}"

        for pop in fleet.pops:
            expected = running.predicted(failed_pops={pop.code})
            changed = [m for m in probers if expected[m] != baseline[m]]
            cmdline, environ, cwd = process_of(pop.code)
            running.run("lab", "fail", pop.code)
            since = time.monotonic()
            seconds, failed = moved(running, changed, expected, since, fail_bound) if changed else (0.0, 0)
            ok, n, wrong = measure_all(running, expected)
            matched, asked = matched + ok, asked + n
            moves = ", ".join(f"{m}: {baseline[m]} > {expected[m]}" for m in changed) or "-"
            rows.append(("fail", pop.code, moves, _seconds(seconds, fail_bound), str(failed), f"{ok}/{n}"))
            print(" ".join(rows[-1]), ("" if not wrong else f"MISMATCH {wrong}"), flush=True)
            restarted.append(restart_pop(pop.code, cmdline, environ, cwd, logs / f"pop-{pop.code}.log"))
            assert wait_back(running, baseline, 90), f"not back after {pop.code} was started again"

        print(
            "\n| event | target | clients moved (predicted) | moved in s (ratio to bound) | requests failed | matched |"
        )
        print("|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {' | '.join(row)} |")
        print(
            f"\nbounds: drain GS {gs:g} s + 5 s = {drain_bound:g} s; failure hold time {HOLD_TIME_SECONDS} s + 1 s ="
            f" {fail_bound} s; predictions matched {matched}/{asked} = {matched / asked:.3f} (goal: 1.000)"
        )
    finally:
        for prober in probers.values():
            prober.close()
        down_started = time.monotonic()
        lab("down", timeout=90)
        terminate(process, 30)
        if process.stdout is not None:
            process.stdout.close()
        for pop_run in restarted:
            pop_run.wait(30)
        print(
            f"lab down in {time.monotonic() - down_started:.1f} s; left: {sorted(_lab_pids()) or 'nothing'}"
            f"{'' if not STATE_DIR.exists() else ' (state dir left!)'}"
        )


def _seconds(seconds: float | None, bound: float) -> str:
    if seconds is None:
        return f"not within {3 * bound:g}"
    if seconds == 0.0:
        return "no metro moves"
    return f"{seconds:.2f} ({seconds / bound:.2f})"


if __name__ == "__main__":
    main()
