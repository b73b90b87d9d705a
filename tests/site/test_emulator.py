"""The emulator's behaviour: a speed model from the catalog, batching and queueing, vLLM metrics, determinism."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from edgeplane.catalog import ReplicaSpeed
from edgeplane.site import EmulatorBackend, parse_load
from edgeplane.web import Endpoint, parse_request
from tests._time import wait_for_async
from tests.site.test_backends import SPEC


def request(text: str, max_tokens: int = 6, stream: bool = False) -> tuple[bytes, object]:
    raw = orjson.dumps(
        {
            "model": SPEC.name,
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "stream": stream,
        }
    )
    return raw, parse_request(Endpoint.CHAT, raw)


async def answer(backend: EmulatorBackend, text: str, **kwargs: object) -> bytes:
    raw, parsed = request(text, **kwargs)  # type: ignore[arg-type]
    reply = await backend.generate(parsed, raw)  # type: ignore[arg-type]
    return b"".join([c async for c in reply.chunks])


def test_speed_model_follows_the_catalog() -> None:
    timing = ReplicaSpeed(throughput_tokens_per_second=2400, max_concurrency=128)
    assert timing.inter_token_seconds(1) < timing.inter_token_seconds(64) < timing.inter_token_seconds(128)
    # A full batch decodes at the catalog's aggregate throughput.
    assert 128 / timing.inter_token_seconds(128) == 2400
    assert timing.prefill_seconds(100, 1) < timing.prefill_seconds(4000, 1) < timing.prefill_seconds(4000, 100)
    # No wait while a slot is free; beyond, the queue drains at full-batch completions (2400/240 = 10/s).
    assert timing.queue_seconds(busy=127, replicas=1) == 0.0
    assert timing.queue_seconds(busy=137, replicas=1, output_tokens=240) == 1.0
    assert timing.queue_seconds(busy=137, replicas=2, output_tokens=240) == 0.0


async def test_same_seed_same_answer_other_seed_other_answer() -> None:
    def make(seed: int) -> EmulatorBackend:
        return EmulatorBackend(SPEC, "H100", seed=seed, time_scale=0, registry=CollectorRegistry())

    first = orjson.loads(await answer(make(1), "the same prompt", max_tokens=40))
    again = orjson.loads(await answer(make(1), "the same prompt", max_tokens=40))
    other = orjson.loads(await answer(make(2), "the same prompt", max_tokens=40))
    text = first["choices"][0]["message"]["content"]
    assert text == again["choices"][0]["message"]["content"]
    assert text != other["choices"][0]["message"]["content"]


async def test_requests_beyond_the_batch_wait_and_show_in_vllm_metrics() -> None:
    registry = CollectorRegistry()
    backend = EmulatorBackend(SPEC, "H100", seed=0, time_scale=1.0, registry=registry)  # max_concurrency 4
    tasks = [asyncio.create_task(answer(backend, f"prompt {i}", max_tokens=30)) for i in range(6)]

    async def all_arrived() -> bool:
        arrived = await backend.load()
        return arrived.running + arrived.waiting == 6

    await wait_for_async("the six requests have arrived", all_arrived, every=0.005)
    load = await backend.load()
    assert (load.running, load.waiting) == (4, 2)
    text = generate_latest(registry).decode()
    seen = parse_load(text, capacity=4, model=SPEC.name)
    assert (seen.running, seen.waiting) == (4, 2) and seen.kv_cache_usage > 0
    await asyncio.gather(*tasks)
    assert await backend.load() == type(load)(0, 0, 0.0, 4)
    text = generate_latest(registry).decode()
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "vllm:request_success_total",
    ):
        assert f"{name}{{" in text, name


async def test_a_client_that_leaves_frees_its_slot() -> None:
    backend = EmulatorBackend(SPEC, "H100", seed=0, time_scale=1.0, registry=CollectorRegistry())
    raw, parsed = request("long answer", max_tokens=200, stream=True)
    reply = await backend.generate(parsed, raw)  # type: ignore[arg-type]
    chunks = reply.chunks
    await chunks.__anext__()
    assert (await backend.load()).running == 1
    await chunks.aclose()  # type: ignore[attr-defined]
    assert (await backend.load()).running == 0


def test_parse_load_reads_every_servers_names() -> None:
    vllm_old = (
        'vllm:num_requests_running{model_name="m"} 3\n'
        'vllm:num_requests_waiting{model_name="m"} 1\n'
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.5\n'
    )
    load = parse_load(vllm_old, capacity=8, model="m")
    assert (load.running, load.waiting, load.kv_cache_usage) == (3, 1, 0.5)
    llama = "llamacpp:requests_processing 2\nllamacpp:requests_deferred 5\n"
    load = parse_load(llama, capacity=4)
    assert (load.running, load.waiting, load.utilisation) == (2, 5, 1.0)


async def test_a_client_that_hangs_up_on_the_site_agent_frees_its_slot() -> None:
    import aiohttp

    from tests.site.test_backends import start_agent

    registry = CollectorRegistry()
    backend = EmulatorBackend(SPEC, "H100", seed=0, time_scale=1.0, registry=registry)
    _, url, stop, task = await start_agent(backend, registry)
    raw, _ = request("long answer", max_tokens=200, stream=True)
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.post(url + "/v1/chat/completions", data=raw)
            await response.content.readline()
            assert (await backend.load()).running == 1
            response.close()

        async def freed() -> bool:
            return (await backend.load()).running == 0

        await wait_for_async("the slot is freed", freed, every=0.02)
    finally:
        stop.set()
        await task


async def test_a_site_agent_keeps_serving_when_the_control_plane_is_away(caplog: pytest.LogCaptureFixture) -> None:
    import aiohttp

    from edgeplane.site import SiteAgent
    from tests.conftest import free_port

    registry = CollectorRegistry()
    backend = EmulatorBackend(SPEC, "H100", seed=0, time_scale=0.01, registry=registry)
    agent = SiteAgent(
        "test1",
        {SPEC.name: backend},
        kind="emulator",
        registry=registry,
        control_url=f"http://127.0.0.1:{free_port()}",
        report_interval_seconds=0.05,
    )
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run("127.0.0.1", 0, on_ready=ready.set_result, stop=stop))
    url = await ready
    try:
        await wait_for_async(
            "a report to the absent control plane has failed",
            lambda: any("cannot report to the control plane" in r.getMessage() for r in caplog.records),
        )
        raw, _ = request("still there?", max_tokens=3)
        async with aiohttp.ClientSession() as session, session.post(url + "/v1/chat/completions", data=raw) as response:
            assert response.status == 200
            assert (await response.json())["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        stop.set()
        await task
