"""The control plane on PostgreSQL replicas against one control plane on SQLite, in one run:

    python bench/control_replicas.py [--watchers 1000] [--rounds 10] [--writes-seconds 5] [--failovers 5]

propagation: --watchers real HTTP watchers (long polls of /api/snapshot, as gateways watch) in 4 processes, all on
             one SQLite control plane, then spread over three PostgreSQL replicas; a drain (then its undrain) is
             sent --rounds times, to one control plane (the first replica); per round, the seconds from the
             drain's answer until every watcher holds a snapshot with it: p50 and p99 over rounds (goal p99 <= 1
             s), and over every watcher's own delay.
writes:      drains added and removed, one at a time, through the store (in this process), for --writes-seconds:
             writes per second, SQLite (its file in WAL mode) against PostgreSQL (a change, its revision and its
             NOTIFY in one transaction).
failover:    three replicas; the leader killed (SIGKILL) --failovers times, each time the seconds until another
             says it leads (its /healthz polled every 20 ms), then the killed one started again.

A PostgreSQL cluster is made for the run in a temporary directory (initdb, pg_ctl as the postgres user) and
removed after; the default fleet (10 PoPs); no site agents (every site shows down; drains still publish)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests._postgres import Cluster, _bin_dir  # noqa: E402
from tests.conftest import free_port  # noqa: E402

EDGEPLANE = [sys.executable, "-m", "edgeplane"]
WATCHER_PROCESSES = 4
GOAL_P99_SECONDS = 1.0


# -- one watcher process: N long polls, each recording when it first holds a snapshot with the target drained --
async def watch(urls: list[str], count: int, pop: str, rounds: int, source: str) -> None:
    """``source``: this process's own loopback address (the control plane limits connections per address, as
    gateways on different hosts each have their own)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0, local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> list[float]:
            seen: list[float] = []
            version, drained = 0, False
            while len(seen) < 2 * rounds:
                try:
                    async with session.get(
                        f"{url}/api/snapshot?after={version}&wait=20", timeout=aiohttp.ClientTimeout(total=30)
                    ) as answer:
                        if answer.status != 200:
                            await asyncio.sleep(0.1)
                            continue
                        body = await answer.json()
                except (aiohttp.ClientError, TimeoutError) as error:
                    print(f"watcher: {type(error).__name__}", file=sys.stderr, flush=True)
                    await asyncio.sleep(0.1)
                    continue
                version = int(body["version"])
                now = body["sites"][pop]["state"] == "drained"
                if now != drained:
                    drained = now
                    seen.append(time.time())
            return seen

        print("ready", flush=True)
        results = await asyncio.gather(*(one(urls[n % len(urls)]) for n in range(count)))
    print(json.dumps(results), flush=True)


# -- the run --------------------------------------------------------------------------------------------------
class Control:
    def __init__(self, store: str, data: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        data.mkdir(parents=True, exist_ok=True)
        self.log = data / f"control-{port}.log"
        self.argv = [*EDGEPLANE, "control", "run", "--port", str(port), "--data-dir", str(data), "--store", store]
        self.start()

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while not self.health():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("control run did not start:\n" + self.log.read_text()[-2000:])
            time.sleep(0.1)

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as answer:
                return dict(json.loads(answer.read()))
        except OSError:
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def call(url: str, method: str, body: dict[str, Any] | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"}, method=method)
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


def propagation(controls: list[Control], watchers: int, rounds: int, pop: str = "fra1") -> dict[str, Any]:
    """Drain/undrain ``pop`` at the first control plane ``rounds`` times while ``watchers`` long-poll all of them."""
    urls = [c.url for c in controls]
    per = watchers // WATCHER_PROCESSES
    code = f"import asyncio, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.control_replicas import watch; "
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code + f"asyncio.run(watch({urls!r}, {per}, {pop!r}, {rounds}, '127.0.1.{n + 1}'))"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WATCHER_PROCESSES)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(2.0)  # every long poll is waiting
    sent: list[float] = []
    for _ in range(rounds):
        for method, body in (("POST", {"kind": "pop", "code": pop, "force": True}), ("DELETE", None)):
            path = "/api/drains" if method == "POST" else f"/api/drains/pop/{pop}"
            call(urls[0] + path, method, body)
            sent.append(time.time())
            time.sleep(1.5)
    seen: list[list[float]] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        seen += json.loads(out.strip().splitlines()[-1])
    per_change = [max(w[i] for w in seen) - sent[i] for i in range(len(sent))]
    every = sorted(w[i] - sent[i] for w in seen for i in range(len(sent)))
    return {
        "watchers": len(seen),
        "changes": len(sent),
        "all_p50": statistics.median(per_change),
        "all_p99": _pct(sorted(per_change), 0.99),
        "all_max": max(per_change),
        "each_p50": statistics.median(every),
        "each_p99": _pct(every, 0.99),
    }


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


def writes(store: Any, seconds: float) -> float:
    from edgeplane.control import Drain

    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        store.add_drain(Drain("pop", "fra1", time.time(), "bench"))
        store.remove_drain("pop", "fra1")
        done += 2
    return done / (time.perf_counter() - started)


def failover(controls: list[Control], times: int) -> list[float]:
    took = []
    for _ in range(times):
        leader = next(c for c in controls if (c.health() or {}).get("leader"))
        others = [c for c in controls if c is not leader]
        os.kill(leader.process.pid, signal.SIGKILL)
        leader.process.wait()
        killed = time.monotonic()
        while not any((c.health() or {}).get("leader") for c in others):
            time.sleep(0.02)
        took.append(time.monotonic() - killed)
        leader.start()
        time.sleep(1.0)
    return took


@contextlib.contextmanager
def postgres() -> Iterator[Cluster]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (scripts/install installs it)")
    root = Path(tempfile.mkdtemp(prefix="edgeplane-bench-pg-"))
    cluster = Cluster(root, bin_dir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--writes-seconds", type=float, default=5.0)
    parser.add_argument("--failovers", type=int, default=5)
    args = parser.parse_args()
    from edgeplane.control import SQLiteStore
    from edgeplane.control._postgres import PostgresStore

    work = Path(tempfile.mkdtemp(prefix="edgeplane-bench-control-"))
    print(f"{os.cpu_count()} cores; {args.watchers} watchers in {WATCHER_PROCESSES} processes; work in {work}")
    with postgres() as cluster:
        sqlite_url = f"sqlite://{work / 'sqlite' / 'edgeplane.db'}"
        one = Control(sqlite_url, work / "sqlite", free_port())
        try:
            alone = propagation([one], args.watchers, args.rounds)
        finally:
            one.stop()
        shared = cluster.database()
        replicas = [Control(shared, work / f"replica-{n}", free_port()) for n in range(3)]
        try:
            spread = propagation(replicas, args.watchers, args.rounds)
            took = failover(replicas, args.failovers)
        finally:
            for replica in replicas:
                replica.stop()
        lite = SQLiteStore(work / "writes.db")
        pg = PostgresStore(cluster.database())
        try:
            rates = {}
            for _ in range(2):  # interleaved, twice: the VM wanders
                rates.setdefault("sqlite", []).append(writes(lite, args.writes_seconds))
                rates.setdefault("postgresql", []).append(writes(pg, args.writes_seconds))
        finally:
            lite.close()
            pg.close()
    print("\npropagation of a drain to every watcher (seconds from the drain's answer):")
    print("| control plane | watchers | changes | all p50 | all p99 | all max | each p50 | each p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("one, SQLite", alone), ("three PostgreSQL replicas", spread)):
        print(
            f"| {name} | {r['watchers']} | {r['changes']} | {r['all_p50']:.3f} | {r['all_p99']:.3f} |"
            f" {r['all_max']:.3f} | {r['each_p50']:.3f} | {r['each_p99']:.3f} |"
        )
    worst = max(alone["all_p99"], spread["all_p99"])
    print(f"goal: p99 to all <= {GOAL_P99_SECONDS} s: {'met' if worst <= GOAL_P99_SECONDS else 'NOT met'}")
    lite_rate, pg_rate = statistics.median(rates["sqlite"]), statistics.median(rates["postgresql"])
    print(f"\nwrites per second (drain added or removed, through the store): SQLite {lite_rate:,.0f},"
          f" PostgreSQL {pg_rate:,.0f} (ratio {pg_rate / lite_rate:.2f})")  # fmt: skip
    print(f"\nleader failover after SIGKILL, {len(took)} times: " + ", ".join(f"{t:.2f}" for t in took)
          + f" s (median {statistics.median(took):.2f}, max {max(took):.2f}; lease 3 s, goal 5 s)")  # fmt: skip
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
