"""The network edge: intents at scale, decision-process throughput, and drain-to-withdrawal time at BIRD.

    python bench/bgp_edge.py [--part intents|decision|drain|all] [--routes 1000000]

intents:  every PoP's intents of a synthetic fleet of 1,000 metros and 5,000 PoPs (edge plan from drains
          and failures, then each PoP's announcements), against the control plane's 250 ms tick.
decision: best path over 1,000,000 routes (200,000 prefixes x 5 paths, MED in play), ours (plain,
          deterministic MED, with explanations) against the bound of Python's own min() over a tuple key.
drain:    `edgeplane drain metro lon` on a running fleet (graceful-shutdown 0 s) until BIRD, as a transit
          peered with `edgeplane bgp run`, no longer holds lon's prefix; needs bird2.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._synthetic import synthetic_fleet  # noqa: E402

from edgeplane.bgp import Route, best_path, plan_edge  # noqa: E402
from edgeplane.bgp._decision import ORIGINS  # noqa: E402

TICK_SECONDS = 0.25


def bench_intents(repeats: int = 5) -> None:
    fleet = synthetic_fleet()
    drains = [type("D", (), {"kind": "metro", "code": "m7", "since": 0.0, "by": "bench"})()]
    failed = {"p100", "p101", "p102", "p103", "p104", "p2000"}
    times = []
    count = 0
    for _ in range(repeats):
        started = time.perf_counter()
        plan = plan_edge(fleet, drains=drains, failed_pops=failed, now=100.0, graceful_shutdown_seconds=30)
        count = sum(len(plan.intents(fleet, p.code)) for p in fleet.pops)
        times.append(time.perf_counter() - started)
    best = min(times)
    print(
        f"intents: {len(fleet.metros)} metros, {len(fleet.pops)} PoPs, {count} intents in {best * 1000:.0f} ms"
        f" (median {statistics.median(times) * 1000:.0f} ms); per PoP {best / len(fleet.pops) * 1e6:.0f} us;"
        f" ratio to the control plane's {TICK_SECONDS * 1000:.0f} ms tick: {best / TICK_SECONDS:.2f}"
    )


def bench_decision(total: int) -> None:
    draw = random.Random(3)
    paths = 5
    prefixes = total // paths
    tables: list[list[Route]] = []
    net = ipaddress.ip_network("198.18.0.0/15")
    for i in range(prefixes):
        prefix = f"{net.network_address + (i * 2) % (1 << 17)}/32"
        tables.append(
            [
                Route(
                    prefix,
                    f"127.0.0.{11 + k}",
                    64501 + k % 3,
                    as_path=(64501 + k % 3,) * draw.randint(1, 3),
                    origin=draw.choice(("igp", "igp", "egp")),
                    med=draw.choice((None, 0, 10, 20)),
                    router_id=f"10.0.0.{k + 1}",
                )
                for k in range(paths)
            ]
        )
    started = time.perf_counter()
    for table in tables:
        best_path(table, always_compare_med=True, explain=False)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    for table in tables:
        best_path(table, deterministic_med=True, explain=False)
    deterministic = time.perf_counter() - started
    started = time.perf_counter()
    for table in tables[: prefixes // 10]:
        best_path(table, always_compare_med=True, explain=True)
    explained = (time.perf_counter() - started) * 10
    started = time.perf_counter()
    for table in tables:
        min(table, key=lambda r: (len(r.as_path), ORIGINS[r.origin], r.med or 0, r.router_id))
    bound = time.perf_counter() - started
    print(
        f"decision: {prefixes * paths} routes ({prefixes} prefixes x {paths}): ours {ours:.2f} s"
        f" ({prefixes * paths / ours / 1e6:.2f} M routes/s), deterministic MED {deterministic:.2f} s, with every"
        f" loser explained {explained:.2f} s (from a tenth); bare min() bound {bound:.2f} s; ratio"
        f" {ours / bound:.1f}x the bound"
    )


def bench_drain(rounds: int) -> None:
    import json
    import subprocess

    from tests.bgp._bird import transit
    from tests.bgp.test_speaker import SpeakerProcess, speaker_args
    from tests.conftest import free_port, start_fleet, stop_fleet

    from edgeplane.cli._client import ControlClient

    tmp = Path(tempfile.mkdtemp(prefix="edgeplane-bench-drain-"))
    argv = [sys.executable, "-m", "edgeplane", "up", "--time-scale", "0.05", "--graceful-shutdown-seconds", "0"]
    fleet = start_fleet(argv, tmp, fleet_path=None, backend="emulator")
    port = free_port()
    bird = transit(tmp, "c", "127.0.0.2", 64499, port).start()
    d = transit(tmp, "d", "127.0.0.3", 64500, port).start()
    speaker = SpeakerProcess(tmp, [*speaker_args(port, tmp), "--control", fleet.control_url]).start()
    cli = [sys.executable, "-m", "edgeplane", "--control", fleet.control_url]
    try:
        bird.wait_for("the plan", lambda r: "198.19.128.0/24" in r)
        samples, polls, api = [], [], []
        client = ControlClient(fleet.control_url)
        for i in range(rounds * 2):
            started = time.perf_counter()
            if i % 2 == 0:  # as a person does it: the CLI, a new Python process
                subprocess.run([*cli, "drain", "metro", "lon"], check=True, capture_output=True)
                polls.append(time.perf_counter() - started)
            else:  # the API call alone
                client.call("POST", "/api/drains", {"kind": "metro", "code": "lon"})
            while "198.19.128.0/24" in bird.by_prefix():
                pass
            (samples if i % 2 == 0 else api).append(time.perf_counter() - started)
            client.call("DELETE", "/api/drains/metro/lon")
            bird.wait_for("the prefix back", lambda r: "198.19.128.0/24" in r)
        status = json.loads(subprocess.run([*cli, "bgp", "status", "--json"], capture_output=True, text=True).stdout)
        assert status["pops"]
        p50 = statistics.median(samples)
        print(
            f"drain -> withdrawal seen at BIRD (graceful-shutdown 0 s, {rounds} rounds): p50 {p50 * 1000:.0f} ms,"
            f" max {max(samples) * 1000:.0f} ms; of which the `edgeplane drain` command itself (a new Python"
            f" process) p50 {statistics.median(polls) * 1000:.0f} ms; from the API call (POST /api/drains):"
            f" p50 {statistics.median(api) * 1000:.1f} ms, max {max(api) * 1000:.1f} ms (each includes one birdc"
            f" poll); ratio of the API figure to the control plane's {TICK_SECONDS * 1000:.0f} ms tick:"
            f" {statistics.median(api) / TICK_SECONDS:.3f}"
        )
    finally:
        speaker.stop()
        bird.stop()
        d.stop()
        stop_fleet(fleet)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=("intents", "decision", "drain", "all"), default="all")
    parser.add_argument("--routes", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.part in ("intents", "all"):
        bench_intents()
    if args.part in ("decision", "all"):
        bench_decision(args.routes)
    if args.part in ("drain", "all"):
        bench_drain(args.rounds)


if __name__ == "__main__":
    main()
