"""For each fault of the catalogue, under load: time from the first failure to traffic moved, and requests
lost before their first byte (goal: 0).

    python bench/fault_recovery.py [--clients 4] [--seconds 5]

Runs `edgeplane up` on a small fleet (tests/data/small-fleet.yaml), loads it from New York's clients
(nyc has one PoP, nyc1; its region's other metro is iad) with a mix of streamed and whole answers,
injects each fault into nyc1, and prints one row per fault. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "tests" / "data" / "small-fleet.yaml"
VICTIM = "nyc1"
RUN = 10
FAULTS = [
    ("refuse-connections", {"seconds": 6}),  # nobody can reach the agent to clear it: it ends by itself
    ("crash", {}),
    ("stall-first-token", {}),
    ("cut-stream", {"tokens": 3}),
    ("slow", {"factor": 20}),
    ("error-200", {}),
    ("http-429", {}),
    ("http-503", {}),
]


@dataclass
class Request:
    started: float
    ended: float
    stream: bool
    status: int
    metro: str
    attempts: int
    outcome: str  # complete, error event, lost


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def call(control: str, method: str, path: str, payload: dict | None = None) -> None:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(
        control + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).read()


async def client(session: aiohttp.ClientSession, gateway: str, n: int, stop: asyncio.Event, out: list[Request]) -> None:
    stream = n % 2 == 1
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": f"bench {n}"}],
        "max_tokens": 16,
        "stream": stream,
    }
    headers = {"X-Forwarded-For": f"198.18.0.{10 + n}"}
    while not stop.is_set():
        started = time.monotonic()
        try:
            async with session.post(gateway + "/v1/chat/completions", json=body, headers=headers) as response:
                text = await response.text()
                metro = response.headers.get("x-edgeplane-metro", "")
                attempts = int(response.headers.get("x-edgeplane-attempts", "0"))
                if response.status != 200:
                    outcome = "lost"
                elif stream:
                    outcome = "error event" if '"error"' in text.rsplit("data:", 2)[-1] else "complete"
                else:
                    outcome = "complete"
                out.append(Request(started, time.monotonic(), stream, response.status, metro, attempts, outcome))
        except aiohttp.ClientError:
            out.append(Request(started, time.monotonic(), stream, 0, "", 0, "lost"))


def analyse(requests: list[Request], injected: float, cleared: float) -> dict[str, object]:
    during = [r for r in requests if injected <= r.started < cleared]
    hit = [r for r in during if r.metro != "nyc" or r.attempts != 1 or r.outcome != "complete"]
    first_failure = min((r.started for r in hit), default=None)
    moved_at = None
    if first_failure is not None:
        # Moved: from the first of RUN requests in a row (by start) all served elsewhere on their first try.
        ordered = sorted((r for r in during if r.started >= first_failure), key=lambda r: r.started)
        for i in range(len(ordered) - RUN + 1):
            if all(r.metro != "nyc" and r.attempts == 1 for r in ordered[i : i + RUN]):
                moved_at = ordered[i].started
                break
    return {
        "requests": len(during),
        "lost": sum(1 for r in during if r.outcome == "lost"),
        "stream_errors": sum(1 for r in during if r.outcome == "error event"),
        "retried": sum(1 for r in during if r.attempts > 1),
        "served_at_nyc": sum(1 for r in during if r.metro == "nyc"),
        "first_failure_s": round(first_failure - injected, 3) if first_failure is not None else None,
        "moved_after_s": round(moved_at - first_failure, 3)
        if moved_at is not None and first_failure is not None
        else None,
    }


async def load_during(gateway: str, clients: int, seconds: float, control: str, fault: str, params: dict) -> dict:
    out: list[Request] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        tasks = [asyncio.create_task(client(session, gateway, n, stop, out)) for n in range(clients)]
        await asyncio.sleep(1.0)
        injected = time.monotonic()
        await asyncio.to_thread(call, control, "POST", "/api/faults", {"pop": VICTIM, "fault": fault, **params})
        await asyncio.sleep(seconds)
        cleared = time.monotonic()
        stop.set()
        await asyncio.gather(*tasks)
    return analyse(out, injected, cleared)


def wait_back(control: str, gateway: str, timeout_seconds: float = 60) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        pops = {p["code"]: p for p in get(control + "/api/status")["pops"]}
        if pops[VICTIM]["state"] == "serving" and VICTIM not in get(gateway + "/healthz")["sites"]:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{VICTIM} did not come back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (each site has 4 batch slots)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of load with each fault on")
    args = parser.parse_args()
    port, control_port = free_port(), free_port()
    gateway, control = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{control_port}"
    with tempfile.TemporaryDirectory() as tmp:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeplane",
                "up",
                "--fleet",
                str(FLEET),
                "--port",
                str(port),
                "--control-port",
                str(control_port),
                "--data-dir",
                tmp,
                "--time-scale",
                "0.2",
                "--first-token-timeout",
                "1",
                "--read-timeout",
                "3",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if get(gateway + "/healthz")["status"] == "ok" and all(
                        p["state"] == "serving" for p in get(control + "/api/status")["pops"]
                    ):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit("edgeplane up did not come up")
                time.sleep(0.3)
            rows = {}
            for fault, params in FAULTS:
                rows[fault] = asyncio.run(load_during(gateway, args.clients, args.seconds, control, fault, params))
                print(f"{fault:20} {json.dumps(rows[fault])}", file=sys.stderr, flush=True)
                if fault not in ("crash", "refuse-connections"):
                    call(control, "DELETE", f"/api/faults/{VICTIM}")
                wait_back(control, gateway)
        finally:
            os.killpg(up.pid, signal.SIGTERM)
            up.wait(30)
    print(
        "| fault | requests | lost before first byte | stream error events | retried | served at nyc | "
        f"first failure after injection (s) | traffic moved after first failure (s): {RUN} in a row elsewhere |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for fault, r in rows.items():
        moved = r["moved_after_s"] if r["moved_after_s"] is not None else "not moved"
        print(
            f"| {fault} | {r['requests']} | {r['lost']} | {r['stream_errors']} | {r['retried']} | {r['served_at_nyc']} "
            f"| {r['first_failure_s']} | {moved} |"
        )


if __name__ == "__main__":
    main()
