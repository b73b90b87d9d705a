"""A site agent's memory over a long run of streamed requests: the llama.cpp backend beside the emulator.

    python bench/agent_memory.py [--requests 5000] [--every 1000] [--prompt-cache-mib N]

Each backend runs in a fresh process of its own: one site agent on 127.0.0.1 (the llama.cpp server is in that
process, on the tiny random-weights GGUF the tests use) and one client sending streamed chat completions one
after another, each with a different prompt and 16 tokens at most. The process's RSS is printed after every
``--every`` requests, then each backend's growth per 1,000 requests from the first mark to the last, and the
ratio of the two. ``--prompt-cache-mib 8192`` gives llama.cpp's own default prompt cache, as before issue 13.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import serving

from edgeplane.catalog import ModelSpec
from edgeplane.site import Backend, EmulatorBackend, LlamaCppBackend, SiteAgent, write_tiny_llama_gguf

MODEL = "tiny-llama"
SPEC = ModelSpec(
    name=MODEL,
    parameters_billions=0.001,
    gpu_memory_gb=1,
    gpus_per_replica=1,
    throughput_tokens_per_second={"H100": 2000},
    file_size_gb=0.001,
    slo_ttft_ms=500,
    max_concurrency=4,
)
KINDS = ("llamacpp", "emulator")
# Below this a growth is noise (pages touched once, malloc's free lists): no ratio is taken against it.
FLAT_MIB_PER_1000 = 0.1


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def one(kind: str, requests: int, every: int, prompt_cache_mib: int | None) -> None:
    """Runs in the child: prints one JSON line per mark."""
    registry = CollectorRegistry()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "llamacpp":
            gguf = write_tiny_llama_gguf(Path(tmp) / "tiny-llama.gguf")
            backend: Backend = LlamaCppBackend(MODEL, gguf, prompt_cache_mib=prompt_cache_mib)
        else:
            backend = EmulatorBackend(SPEC, "H100", 1, seed=3, time_scale=0.01, registry=registry)
        agent = SiteAgent("mem1", {MODEL: backend}, kind=backend.kind, registry=registry)
        failed = 0
        headers = {"Content-Type": "application/json"}
        async with serving(agent) as url, aiohttp.ClientSession(headers=headers) as session:
            for n in range(1, requests + 1):
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"hello request {n} of {n * 7919 % 10007}"}],
                    "max_tokens": 16,
                    "stream": True,
                }
                async with session.post(url + "/v1/chat/completions", data=orjson.dumps(body)) as response:
                    async for _ in response.content.iter_any():
                        pass
                    failed += response.status != 200
                if n % every == 0:
                    gc.collect()
                    print(json.dumps({"requests": n, "rss_mib": rss_mib(), "failed": failed}), flush=True)


def run_child(kind: str, args: argparse.Namespace) -> list[dict[str, float]]:
    argv = [sys.executable, __file__, "--child", kind, "--requests", str(args.requests), "--every", str(args.every)]
    if args.prompt_cache_mib is not None:
        argv += ["--prompt-cache-mib", str(args.prompt_cache_mib)]
    marks = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            marks.append(json.loads(line))
            print(f"  {kind:9} {marks[-1]['requests']:6d} requests: RSS {marks[-1]['rss_mib']:7.1f} MiB", flush=True)
    if child.returncode != 0 or not marks:
        raise SystemExit(f"the {kind} agent's run failed (exit {child.returncode})")
    return marks


def growth_per_1000(marks: list[dict[str, float]]) -> float:
    first, last = marks[0], marks[-1]
    return (last["rss_mib"] - first["rss_mib"]) / max(1.0, last["requests"] - first["requests"]) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--prompt-cache-mib", type=int, default=None, help="llama.cpp's; default: sized by the agent")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(one(args.child, args.requests, args.every, args.prompt_cache_mib))
        return
    runs = {kind: run_child(kind, args) for kind in KINDS}
    print()
    print("| requests | " + " | ".join(f"{kind} RSS MiB" for kind in KINDS) + " |")
    print("|---" * (len(KINDS) + 1) + "|")
    for row in zip(*(runs[kind] for kind in KINDS), strict=True):
        print(f"| {int(row[0]['requests']):,} | " + " | ".join(f"{m['rss_mib']:.1f}" for m in row) + " |")
    print()
    growth = {kind: growth_per_1000(runs[kind]) for kind in KINDS}
    for kind in KINDS:
        marks = runs[kind]
        print(
            f"{kind}: {growth[kind]:+.2f} MiB per 1,000 requests from {int(marks[0]['requests']):,} "
            f"to {int(marks[-1]['requests']):,} ({int(marks[-1]['failed'])} failed)"
        )
    extra = growth["llamacpp"] - growth["emulator"]
    if growth["emulator"] >= FLAT_MIB_PER_1000:
        ratio = f"{growth['llamacpp'] / growth['emulator']:.1f}"
    else:
        ratio = f"n/a, the emulator is flat (under {FLAT_MIB_PER_1000} MiB per 1,000)"
    print(f"growth llama.cpp / emulator: {ratio}; llama.cpp grows {extra:+.2f} MiB per 1,000 more")


if __name__ == "__main__":
    main()
