"""Gateway overhead, side by side in one run: direct to an emulator site, through the edgeplane gateway,
through the LiteLLM proxy and through nginx, under the same load from wrk.

    python bench/gateway_overhead.py [--duration 3] [--rounds 3] [--concurrency 1,64,256] [--time-scale 1]

Prints a markdown table: added latency p50/p99 against direct, and CPU seconds per 1,000 requests of
each proxy's processes. Needs wrk and nginx (Debian) and LiteLLM in bench/.venv-litellm (scripts/bench
installs them). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LITELLM = ROOT / "bench" / ".venv-litellm" / "bin" / "litellm"
MODEL = "bench-model"
MAX_TOKENS = 16
# LiteLLM refuses to start without a strong master key; every path receives the same header.
BENCH_KEY = "sk-bench-0f3c9a7e5b2d4c6a8e1f3b5d7c9a2e4f"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

FLEET = f"""
asn: 64496
continents: [{{code: na, id: 1, name: North America}}]
regions: [{{code: us-east, id: 1, name: US East, continent: na}}]
metros:
  - {{code: nyc, id: 1, name: New York, region: us-east, latitude: 40.7, longitude: -74.0,
     client_prefixes: [198.18.0.0/20, 2001:db8:100::/40]}}
pops:
  - code: nyc1
    id: 1
    metro: nyc
    units: [{{code: nyc1-u1, id: 1, power_kw: 400, gpu_servers: [{{gpu_type: H100, servers: 4}}]}}]
models:
  - {{name: {MODEL}, parameters_billions: 8, gpu_memory_gb: 24, gpus_per_replica: 1,
     throughput_tokens_per_second: {{H100: 2400}}, file_size_gb: 16, slo_ttft_ms: 300, max_concurrency: 512}}
placement: [{{model: {MODEL}, pop: nyc1, replicas: 1}}]
"""

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
wrk.headers["X-Forwarded-For"] = "198.18.0.7"
wrk.body = '{"model": "%s", "messages": [{"role": "user", "content": "Say hello from the edge, briefly."}], '
  .. '"max_tokens": %d, "stream": %s}'
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout_seconds} s")


def tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        path = Path(f"/proc/{parent}/task/{parent}/children")
        children = [int(c) for c in path.read_text().split()] if path.exists() else []
        pids += children
        frontier += children
    return pids


def cpu_seconds(pid: int) -> float:
    total = 0
    for each in tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


@dataclass
class Target:
    name: str
    url: str  # the chat completions URL
    pid: int | None  # the proxy process whose CPU is counted


def start(stack: ExitStack, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )

    def stop() -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    stack.callback(stop)
    return process


def parse_wrk(output: str) -> dict[str, float]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    found = {}
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
        if not match:
            raise RuntimeError("cannot read wrk output:\n" + output)
        found[f"p{pct}_ms"] = ms(match.group(1), match.group(2))
    requests = re.search(r"(\d+) requests in", output)
    found["requests"] = float(requests.group(1)) if requests else 0.0
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    found["errors"] = float(errors.group(1)) if errors else 0.0
    if socket_errors:
        found["errors"] += sum(float(x) for x in socket_errors.groups())
    return found


def load(target: Target, concurrency: int, duration: int, script: Path) -> dict[str, float]:
    before = cpu_seconds(target.pid) if target.pid else 0.0
    threads = max(1, min(2, concurrency))
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{max(1, duration)}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            target.url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = parse_wrk(out)
    if target.pid:
        result["cpu_s_per_1000"] = (cpu_seconds(target.pid) - before) / max(1.0, result["requests"]) * 1000
    return result


def combine(cells: list[dict[str, float]]) -> dict[str, float]:
    """Median latency over rounds; requests and errors summed; CPU per request over all rounds."""
    out = {
        "p50_ms": statistics.median(c["p50_ms"] for c in cells),
        "p99_ms": statistics.median(c["p99_ms"] for c in cells),
        "requests": sum(c["requests"] for c in cells),
        "errors": sum(c["errors"] for c in cells),
    }
    if all("cpu_s_per_1000" in c for c in cells):
        cpu = sum(c["cpu_s_per_1000"] * c["requests"] / 1000 for c in cells)
        out["cpu_s_per_1000"] = cpu / max(1.0, out["requests"]) * 1000
    return out


def nginx_config(directory: Path, port: int, site_port: int) -> Path:
    config = directory / "nginx.conf"
    config.write_text(f"""
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {directory}/body;
  proxy_temp_path {directory}/proxy;
  fastcgi_temp_path {directory}/fastcgi;
  uwsgi_temp_path {directory}/uwsgi;
  scgi_temp_path {directory}/scgi;
  upstream site {{ server 127.0.0.1:{site_port}; keepalive 512; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://site;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=3, help="seconds of load per path, per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per cell; latency is the median over rounds")
    parser.add_argument("--concurrency", default="1,64,256")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "overhead.json")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulator delays (1: an 8B model on H100, about 0.1-1 s a request; 0: instant answers)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} is missing: run scripts/bench, which installs it")
    use_litellm = not args.skip_litellm and LITELLM.exists()

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fleet = tmp / "fleet.yaml"
        fleet.write_text(FLEET)
        edgeplane = [sys.executable, "-m", "edgeplane", "--log-level", "error"]
        control_port, site_port, gateway_port, nginx_port, litellm_port = (free_port() for _ in range(5))
        control = f"http://127.0.0.1:{control_port}"
        start(
            stack,
            [*edgeplane, "control", "run", "--fleet", str(fleet), "--port", str(control_port), "--data-dir", str(tmp)],
        )
        wait_http(control + "/healthz")
        start(
            stack,
            [
                *edgeplane,
                "--control",
                control,
                "site",
                "run",
                "--pop",
                "nyc1",
                "--fleet",
                str(fleet),
                "--port",
                str(site_port),
                "--time-scale",
                str(args.time_scale),
            ],
        )
        wait_http(f"http://127.0.0.1:{site_port}/healthz")
        gateway = start(stack, [*edgeplane, "--control", control, "gateway", "run", "--port", str(gateway_port)])
        wait_http(f"http://127.0.0.1:{gateway_port}/healthz")
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        nginx = start(
            stack, [nginx_bin, "-c", str(nginx_config(tmp, nginx_port, site_port)), "-e", str(tmp / "nginx-error.log")]
        )
        targets = [
            Target("direct", f"http://127.0.0.1:{site_port}/v1/chat/completions", None),
            Target("edgeplane", f"http://127.0.0.1:{gateway_port}/v1/chat/completions", gateway.pid),
            Target("nginx", f"http://127.0.0.1:{nginx_port}/v1/chat/completions", nginx.pid),
        ]
        if use_litellm:
            config = tmp / "litellm.yaml"
            config.write_text(
                f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n      model: openai/{MODEL}\n"
                f"      api_base: http://127.0.0.1:{site_port}/v1\n      api_key: sk-bench\n"
                "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
                f"general_settings:\n  master_key: {BENCH_KEY}\n"
            )
            litellm = start(
                stack,
                [
                    str(LITELLM),
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(litellm_port),
                    "--num_workers",
                    "1",
                ],
                env={"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"},
            )
            wait_http(f"http://127.0.0.1:{litellm_port}/health/liveliness", 180)
            targets.append(Target("litellm", f"http://127.0.0.1:{litellm_port}/v1/chat/completions", litellm.pid))
        wait_http(f"http://127.0.0.1:{nginx_port}/healthz")

        results: dict[str, dict[str, dict[str, float]]] = {}
        for stream in (False, True):
            script = tmp / f"wrk-{stream}.lua"
            script.write_text(WRK_SCRIPT % (BENCH_KEY, MODEL, MAX_TOKENS, "true" if stream else "false"))
            for target in targets:  # warm up every path once
                load(target, 8, 1, script)
            for concurrency in levels:
                key = f"{'stream' if stream else 'plain'}/c{concurrency}"
                rounds: dict[str, list[dict[str, float]]] = {t.name: [] for t in targets}
                for round_ in range(args.rounds):
                    # Rotate the order each round so no path always runs first or last.
                    shift = round_ % len(targets)
                    for target in targets[shift:] + targets[:shift]:
                        cell = load(target, concurrency, args.duration, script)
                        rounds[target.name].append(cell)
                        print(
                            f"{key:12} round {round_} {target.name:10} {json.dumps(cell)}", file=sys.stderr, flush=True
                        )
                results[key] = {name: combine(cells) for name, cells in rounds.items()}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(report(results))


def report(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| load | path | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s share | CPU s / 1000 req | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, cells in results.items():
        direct = cells["direct"]
        for name, cell in cells.items():
            added50 = "" if name == "direct" else f"{cell['p50_ms'] - direct['p50_ms']:+.2f}"
            added99 = "" if name == "direct" else f"{cell['p99_ms'] - direct['p99_ms']:+.2f}"
            share = f"{cell['requests'] / max(1.0, direct['requests']):.2f}"
            cpu = f"{cell['cpu_s_per_1000']:.3f}" if "cpu_s_per_1000" in cell else ""
            latency = f"{cell['p50_ms']:.2f} | {cell['p99_ms']:.2f} | {added50} | {added99}"
            lines.append(f"| {key} | {name} | {latency} | {share} | {cpu} | {int(cell['errors'])} |")
    cpu_ratio = []
    for key, cells in results.items():
        if "litellm" in cells and cells["litellm"].get("cpu_s_per_1000"):
            cpu_ratio.append(f"{key}: {cells['edgeplane']['cpu_s_per_1000'] / cells['litellm']['cpu_s_per_1000']:.3f}")
    if cpu_ratio:
        lines += ["", "edgeplane CPU per request as a fraction of LiteLLM's: " + ", ".join(cpu_ratio)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
