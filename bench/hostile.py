"""Hostile tenants and a killed control plane, as figures (issue 13), each side by side with its own baseline.

    python bench/hostile.py [--part poison|kill|all] [--seconds 30]

poison: `edgeplane up --auth on` on the small fleet with real llama.cpp servers; bystander tenants in every
metro with the official openai SDK, first alone, then while one tenant sends requests that make llama.cpp
answer 500 (a tool call without its type): the bystanders' success rate and throughput in both runs, the
poison answers, and how often a site was seen out of serving (goal: 99% or more; no site out).

kill: `edgeplane up` on the small fleet (emulator), load from every metro; `kill -9` of the control plane:
requests failed while it was away (goal 0), seconds until it answered again (goal at most 5) and until the
gateway had a fresh snapshot from it. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
from openai import OpenAI  # noqa: E402
from tests.conftest import SMALL_FLEET, RunningFleet, start_fleet, stop_fleet  # noqa: E402
from tests.test_hostile_tenants import CLIENTS, HELLO, POISON, sites_left_serving  # noqa: E402
from tests.test_up_restart import healthy, service_pid  # noqa: E402

from edgeplane.site import write_tiny_llama_gguf  # noqa: E402

TOKEN = "bench-admin-token"
UP = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET)]


def sdk(fleet: RunningFleet, key: str, metro: str) -> OpenAI:
    return OpenAI(base_url=fleet.gateway_url + "/v1", api_key=key, max_retries=0, timeout=60,
                  default_headers={"X-Forwarded-For": CLIENTS[metro]})  # fmt: skip


def run_load(workers: list[Callable[[threading.Event], None]], seconds: float, watch: Callable[[], None]) -> None:
    stop = threading.Event()
    threads = [threading.Thread(target=w, args=(stop,)) for w in workers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watch()
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(60)


def poison(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        gguf = write_tiny_llama_gguf(Path(tmp) / "tiny.gguf")
        argv = [*UP, "--backend", "llamacpp", "--gguf", str(gguf), "--auth", "on"]
        fleet = start_fleet(argv, Path(tmp), fleet_path=SMALL_FLEET, backend="llamacpp",
                            env={"EDGEPLANE_ADMIN_TOKEN": TOKEN})  # fmt: skip
        try:
            keys = {t: json.loads(fleet.cli("keys", "create", "--tenant", t, "--json").stdout)["key"]
                    for t in ("bystander", "poisoner")}  # fmt: skip
            time.sleep(1.5)  # the gateway takes the keys with its next snapshot
            rows = []
            for label, poisoned in (("bystanders alone", False), ("with a poisoner", True)):
                good = [0, 0]
                bad = [0, 0]
                out: list[str] = []

                def bystander(stop: threading.Event, metro: str, good: list[int] = good) -> None:
                    client = sdk(fleet, keys["bystander"], metro)
                    while not stop.is_set():
                        try:
                            client.chat.completions.create(model="tiny-llama", messages=HELLO, max_tokens=4)
                            good[0] += 1
                        except openai.APIError:
                            good[1] += 1

                def poisoner(stop: threading.Event, bad: list[int] = bad) -> None:
                    client = sdk(fleet, keys["poisoner"], "nyc")
                    while not stop.is_set():
                        try:
                            client.chat.completions.create(model="tiny-llama", messages=POISON, max_tokens=4)
                            bad[1] += 1
                        except openai.BadRequestError:
                            bad[0] += 1
                        except openai.APIError:
                            bad[1] += 1

                workers: list[Callable[[threading.Event], None]] = [
                    lambda stop, m=m: bystander(stop, m)
                    for m in CLIENTS  # type: ignore[misc]
                ]
                if poisoned:
                    workers += [poisoner, poisoner]
                run_load(workers, seconds, lambda out=out: out.extend(sites_left_serving(fleet)))  # type: ignore[misc]
                total = good[0] + good[1]
                rows.append(
                    (label, good[0], total, good[0] / max(1, total), good[0] / seconds, bad[0], bad[1], len(out))
                )
            print(f"poison run, {seconds:g} s each, 4 metros of bystanders, 2 poisoning clients")
            print(f"{'run':24} {'ok/total':>13} {'success':>8} {'ok/s':>6} {'poison 400':>10} {'other':>6} {'out':>4}")
            for label, ok, total, rate, per_second, refused, other, out in rows:
                print(
                    f"{label:24} {ok:>6}/{total:<6} {rate:>8.4f} {per_second:>6.1f} {refused:>10} {other:>6} {out:>4}"
                )
            ratio = rows[1][3] / max(1e-9, rows[0][3])
            print(f"bystanders' success with poison / alone: {ratio:.4f} (goal: success >= 0.99, no site out)")
            print(f"bystanders' throughput with poison / alone: {rows[1][4] / max(1e-9, rows[0][4]):.3f}")
        finally:
            stop_fleet(fleet)


def kill(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fleet = start_fleet([*UP, "--time-scale", "0.05"], Path(tmp), fleet_path=SMALL_FLEET, backend="emulator")
        try:
            failed: list[tuple[float, str]] = []
            done: list[float] = []

            def load(stop: threading.Event, metro: str) -> None:
                client = sdk(fleet, "x", metro)
                while not stop.is_set():
                    try:
                        client.chat.completions.create(model="tiny-llama", messages=HELLO, max_tokens=8)
                        done.append(time.monotonic())
                    except openai.APIError as error:
                        failed.append((time.monotonic(), repr(error)))

            marks: dict[str, float] = {}

            def watch() -> None:
                if "killed" not in marks and time.monotonic() - marks["start"] > seconds / 3:
                    os.kill(service_pid(fleet, "control"), signal.SIGKILL)
                    marks["killed"] = time.monotonic()
                if "killed" in marks and "back" not in marks and healthy(fleet.control_url):
                    marks["back"] = time.monotonic()
                if "back" in marks and "fresh" not in marks:
                    with urllib.request.urlopen(fleet.gateway_url + "/healthz", timeout=2) as answer:
                        health: Any = json.loads(answer.read())
                    if health["control_plane_reachable"] and health["snapshot_age_seconds"] < 1.0:
                        marks["fresh"] = time.monotonic()

            marks["start"] = time.monotonic()
            run_load([lambda stop, m=m: load(stop, m) for m in CLIENTS for _ in range(2)], seconds, watch)  # type: ignore[misc]
            killed, back = marks["killed"], marks.get("back")
            away = [t for t in done if back is not None and killed <= t < back]
            print(f"control plane kill under load, {seconds:g} s, 8 clients over 4 metros (emulator)")
            print(
                f"requests answered: {len(done)}, {len(away)} while the control plane was away; failed: {len(failed)}"
            )
            if back is not None:
                print(f"back after {back - killed:.2f} s (goal <= 5 s: ratio {(back - killed) / 5:.2f})")
            if "fresh" in marks:
                print(f"gateway on a fresh snapshot after {marks['fresh'] - killed:.2f} s")
            for at, why in failed[:5]:
                print(f"  failed at +{at - killed:.2f} s: {why}")
        finally:
            stop_fleet(fleet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["poison", "kill", "all"], default="all")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.part in ("poison", "all"):
        poison(args.seconds)
    if args.part in ("kill", "all"):
        kill(args.seconds)


if __name__ == "__main__":
    main()
