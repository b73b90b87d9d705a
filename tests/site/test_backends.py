"""One suite every backend passes (emulator, llama.cpp, upstream URL), through a real site agent and the openai SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry

from edgeplane.catalog import ModelSpec
from edgeplane.site import Backend, EmulatorBackend, LlamaCppBackend, SiteAgent, UpstreamBackend

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


class Served:
    def __init__(self, agent: SiteAgent, url: str, backend: Backend) -> None:
        self.agent, self.url, self.backend = agent, url, backend
        self.api = AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def client(self) -> AsyncOpenAI:
        return self.api


async def start_agent(
    backend: Backend, registry: CollectorRegistry
) -> tuple[SiteAgent, str, asyncio.Event, asyncio.Task[None]]:
    agent = SiteAgent("test1", {backend.model: backend}, kind=backend.kind, registry=registry)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run("127.0.0.1", 0, on_ready=ready.set_result, stop=stop))
    url = await asyncio.wait_for(ready, 60)
    return agent, url, stop, task


@pytest.fixture(params=["emulator", "llamacpp", "upstream"])
async def served(request: pytest.FixtureRequest, tiny_gguf: Path) -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    inner_stop: asyncio.Event | None = None
    inner_task: asyncio.Task[None] | None = None
    if request.param == "emulator":
        backend: Backend = EmulatorBackend(SPEC, "H100", 1, seed=3, time_scale=0.01, registry=registry)
    elif request.param == "llamacpp":
        backend = LlamaCppBackend(MODEL, tiny_gguf)
    else:
        # The upstream is a real llama.cpp server, as a vLLM or SGLang would be.
        inner = LlamaCppBackend(MODEL, tiny_gguf)
        _, _, inner_stop, inner_task = await start_agent(inner, CollectorRegistry())
        assert inner.url is not None
        backend = UpstreamBackend(MODEL, inner.url + "/v1", capacity=2)
    agent, url, stop, task = await start_agent(backend, registry)
    served = Served(agent, url, backend)
    try:
        yield served
    finally:
        await served.api.close()
        stop.set()
        await task
        if inner_stop is not None and inner_task is not None:
            inner_stop.set()
            await inner_task


async def test_chat_completion(served: Served) -> None:
    completion = await served.client().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=5
    )
    assert completion.model == MODEL
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and 0 < completion.usage.completion_tokens <= 5


async def test_chat_completion_stream(served: Served) -> None:
    stream = await served.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    finishes, usage = [], None
    async for chunk in stream:
        finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
        usage = chunk.usage or usage
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0


async def test_completions_plain_and_stream(served: Served) -> None:
    client = served.client()
    completion = await client.completions.create(model=MODEL, prompt="The edge", max_tokens=4)
    assert completion.choices[0].finish_reason in ("stop", "length")
    chunks = [
        c async for c in await client.completions.create(model=MODEL, prompt="The edge", max_tokens=4, stream=True)
    ]
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


async def test_unknown_model_and_bad_body(served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=MODEL, messages="not a list")  # type: ignore[arg-type]


async def test_load_is_read_from_metrics(served: Served) -> None:
    load = await served.backend.load()
    assert load.capacity >= 1
    assert load.running >= 0 and load.waiting >= 0 and 0.0 <= load.utilisation <= 1.0
    state = await served.agent.state()
    assert state["models"][MODEL]["capacity"] == load.capacity
    models = await served.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
