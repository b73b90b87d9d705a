"""A llama.cpp site agent's memory levels off under a long run of streamed requests (issue 13)."""

from __future__ import annotations

import gc
from pathlib import Path

import aiohttp
import orjson
from prometheus_client import CollectorRegistry

from edgeplane.site import LlamaCppBackend, SiteAgent
from edgeplane.site._llamacpp import kv_bytes_per_token, prompt_cache_mib
from tests.conftest import serving

MODEL = "tiny-llama"
WARM_REQUESTS = 200
HALF_REQUESTS = 500
# Unbounded, llama.cpp's prompt cache grew about 14 MiB per 500 of these requests; bounded, the process
# grows under 1 MiB per 500 (what malloc keeps of freed memory, less and less).
SECOND_HALF_BOUND_MIB = 4.0


def rss_mib() -> float:
    """This process's resident memory: the llama.cpp server runs in it, with the agent and the client."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_prompt_cache_sized_to_the_kv_cache(tiny_gguf: Path, tmp_path: Path) -> None:
    # 2 layers x 4 KV heads x (16 + 16) values x 2 bytes; llama.cpp's log says 0.50 MiB for 1,024 cells.
    assert kv_bytes_per_token(tiny_gguf) == 512
    assert prompt_cache_mib(tiny_gguf, 1024) == 1  # half a MiB, rounded up to the smallest size that caches
    assert prompt_cache_mib(tiny_gguf, 8192) == 4
    # A file whose header cannot be read still gets a bound; llama.cpp refuses it when it loads it.
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:200])
    assert kv_bytes_per_token(cut) is None
    assert 0 < prompt_cache_mib(cut, 1024) <= 256


async def test_streamed_requests_level_off(tiny_gguf: Path) -> None:
    backend = LlamaCppBackend(MODEL, tiny_gguf)
    agent = SiteAgent("mem1", {MODEL: backend}, kind=backend.kind, registry=CollectorRegistry())
    answered = 0

    async def stream(session: aiohttp.ClientSession, url: str, n: int) -> None:
        nonlocal answered
        # Every prompt differs, as users' do: each one leaves its own KV state behind in llama.cpp.
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"hello request {n} of {n * 7919 % 10007}"}],
            "max_tokens": 16,
            "stream": True,
        }
        async with session.post(url + "/v1/chat/completions", data=orjson.dumps(body)) as response:
            async for _ in response.content.iter_any():
                pass
            answered += response.status == 200

    async with serving(agent) as url, aiohttp.ClientSession(headers={"Content-Type": "application/json"}) as session:
        assert backend.prompt_cache_mib == 1
        marks = []
        for n in range(WARM_REQUESTS + 2 * HALF_REQUESTS):
            if n in (WARM_REQUESTS, WARM_REQUESTS + HALF_REQUESTS):
                gc.collect()
                marks.append(rss_mib())
            await stream(session, url, n)
        gc.collect()
        marks.append(rss_mib())
    # Every stream is answered: the backend asks llama.cpp to close after a stream, as it does anyway while
    # announcing keep-alive (a pooled connection it was closing used to fail 0.3 to 0.7% of streams).
    assert answered == WARM_REQUESTS + 2 * HALF_REQUESTS
    first, second = marks[1] - marks[0], marks[2] - marks[1]
    assert second < SECOND_HALF_BOUND_MIB, f"RSS grew {first:.1f} then {second:.1f} MiB per {HALF_REQUESTS} requests"
