"""An emulated GPU model server: continuous batching, queueing, load-dependent speed, vLLM metrics."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import math
import random
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edgeplane._errors import StreamCut
from edgeplane.catalog import ModelSpec, ReplicaSpeed
from edgeplane.faults import Fault, FaultKind
from edgeplane.site._backend import Answer, Backend, Load
from edgeplane.web import Endpoint, InferenceRequest, prompt_text

_WORDS = (
    "the",
    "edge",
    "serves",
    "each",
    "user",
    "from",
    "nearest",
    "healthy",
    "metro",
    "and",
    "spills",
    "over",
    "to",
    "wider",
    "scopes",
    "only",
    "when",
    "capacity",
    "or",
    "health",
    "demands",
    "it",
    "while",
    "prefixes",
    "communities",
    "keep",
    "failure",
    "predictable",
)

_KV_TOKENS_PER_SEQUENCE = 2048
_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40)
_ITL_BUCKETS = (0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)


def estimate_tokens(text: str) -> int:
    """About four characters a token, as for English text with common tokenizers."""
    return max(1, math.ceil(len(text) / 4))


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "Requests in the running batch.", labels, registry=registry)
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Requests waiting for a batch slot.", labels, registry=registry
        )
        self.kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 means full.", labels, registry=registry)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.itl = Histogram(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency.",
            labels,
            buckets=_ITL_BUCKETS,
            registry=registry,
        )
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Whole request latency.", labels, registry=registry)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", labels, registry=registry)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Generation tokens produced.", labels, registry=registry
        )
        self.success = Counter(
            "vllm:request_success", "Finished requests.", [*labels, "finished_reason"], registry=registry
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_of(registry: CollectorRegistry) -> _Metrics:
    """Every emulated model of a site shares one set of metric families, told apart by model_name."""
    if registry not in _METRICS:
        _METRICS[registry] = _Metrics(registry)
    return _METRICS[registry]


class _Replica:
    """One replica's batch: up to ``max_concurrency`` running, the rest wait in arrival order."""

    def __init__(self, timing: ReplicaSpeed, unit: str | None = None) -> None:
        self.timing = timing
        self.unit = unit
        self.running = 0
        self.kv_tokens = 0
        self.queue: collections.deque[asyncio.Future[None]] = collections.deque()

    def __repr__(self) -> str:
        return f"<Replica [Requests: {self.running} running, {len(self.queue)} waiting]>"

    @property
    def busy(self) -> int:
        return self.running + len(self.queue)

    async def admit(self, on_queued: Callable[[], None]) -> None:
        if self.running < self.timing.max_concurrency and not self.queue:
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.append(waiter)
        on_queued()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # admitted just as we were cancelled: give the slot on
            else:
                self.queue.remove(waiter)
            raise

    def leave(self) -> None:
        while self.queue:
            waiter = self.queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.running -= 1


class EmulatorBackend(Backend):
    """Behaves like a GPU model server, deterministic under a seed. ``time_scale`` shrinks every delay."""

    kind = "emulator"

    def __init__(
        self,
        spec: ModelSpec,
        gpu_type: str,
        replicas: int = 1,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        registry: CollectorRegistry | None = None,
        units: Mapping[str, int] | None = None,
    ) -> None:
        """``units``, where given, says how many of the replicas run in each of the PoP's units (their sum is
        the replica count): requests go only to replicas of units not in ``units_out``."""
        super().__init__(spec.name)
        self.spec = spec
        self.gpu_type = gpu_type
        self.seed = seed
        self.time_scale = time_scale
        self.timing = ReplicaSpeed(spec.replica_throughput(gpu_type), spec.max_concurrency)
        if units is None:
            self._replicas = [_Replica(self.timing) for _ in range(replicas)]
        else:
            self._replicas = [_Replica(self.timing, unit) for unit, n in units.items() for _ in range(n)]
        self._metrics = _metrics_of(registry or CollectorRegistry())
        self._labels = {"model_name": spec.name}
        self._fault: Fault | None = None
        self._flowing = asyncio.Event()  # clear while a stall fault holds answers
        self._flowing.set()
        self._publish()

    def __repr__(self) -> str:
        running = sum(r.running for r in self._replicas)
        waiting = sum(len(r.queue) for r in self._replicas)
        return f"<EmulatorBackend {self.model} on {self.gpu_type} [Requests: {running} running, {waiting} waiting]>"

    def _live(self) -> list[_Replica]:
        return [r for r in self._replicas if r.unit not in self.units_out]

    def serves(self) -> bool:
        return bool(self._live())

    async def load(self) -> Load:
        running = sum(r.running for r in self._replicas)
        waiting = sum(len(r.queue) for r in self._replicas)
        capacity = self.timing.max_concurrency * len(self._live())
        return Load(running, waiting, self._kv_usage(), capacity)

    def _kv_usage(self) -> float:
        capacity = _KV_TOKENS_PER_SEQUENCE * self.timing.max_concurrency * len(self._replicas)
        return min(1.0, sum(r.kv_tokens for r in self._replicas) / capacity)

    def _publish(self) -> None:
        labels = self._labels
        self._metrics.running.labels(**labels).set(sum(r.running for r in self._replicas))
        self._metrics.waiting.labels(**labels).set(sum(len(r.queue) for r in self._replicas))
        self._metrics.kv.labels(**labels).set(self._kv_usage())

    async def _sleep(self, seconds: float, fault: Fault | None) -> None:
        factor = fault.factor if fault is not None and fault.kind is FaultKind.SLOW else 1.0
        if self.time_scale > 0 and seconds > 0:
            await asyncio.sleep(seconds * self.time_scale * factor)

    @property
    def fault(self) -> Fault | None:
        """The fault the site agent injected, read at every step of every answer."""
        return self._fault

    @fault.setter
    def fault(self, fault: Fault | None) -> None:
        self._fault = fault
        if fault is not None and fault.kind is FaultKind.STALL:
            self._flowing.clear()
        else:
            self._flowing.set()

    def _fault_for(self, spared: bool) -> Fault | None:
        return None if spared else self._fault

    def _plan(self, request: InferenceRequest) -> tuple[int, list[str], str]:
        """Prompt tokens, output pieces and finish reason: a pure function of the seed and the request."""
        text = prompt_text(request)
        prompt_tokens = estimate_tokens(text)
        digest = hashlib.sha256(f"{self.seed}\0{self.model}\0{text}".encode()).digest()
        rng = random.Random(digest)
        limit = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
        natural = rng.randint(8, 48)
        count = min(natural, limit) if limit else natural
        finish = "length" if limit is not None and limit < natural else "stop"
        words = [rng.choice(_WORDS) for _ in range(count)]
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        return prompt_tokens, pieces, finish

    async def generate(self, request: InferenceRequest, raw: bytes) -> Answer:
        prompt_tokens, pieces, finish = self._plan(request)
        replica = min(self._live() or self._replicas, key=lambda r: r.busy)
        if request.stream:
            body = self._stream(request, replica, prompt_tokens, pieces, finish)
            return Answer(200, "text/event-stream", body, unit=replica.unit)
        whole = self._whole(request, replica, prompt_tokens, pieces, finish)
        return Answer(200, "application/json", whole, unit=replica.unit)

    async def _run(
        self, replica: _Replica, prompt_tokens: int, pieces: list[str], *, spared: bool = False
    ) -> AsyncGenerator[str, None]:
        """Queue, prefill, then decode piece by piece at the speed the current batch allows, as the injected
        fault has it (read at every step), unless the request is ``spared`` by it."""
        started = time.monotonic()
        labels = self._labels
        await replica.admit(self._publish)
        replica.kv_tokens += prompt_tokens
        self._publish()
        produced = 0
        try:
            await self._sleep(self.timing.prefill_seconds(prompt_tokens, replica.running), self._fault_for(spared))
            if not spared:
                await self._flowing.wait()
            self._metrics.prompt_tokens.labels(**labels).inc(prompt_tokens)
            self._metrics.ttft.labels(**labels).observe(time.monotonic() - started)
            last = time.monotonic()
            for i, piece in enumerate(pieces):
                if i:
                    await self._sleep(self.timing.inter_token_seconds(replica.running), self._fault_for(spared))
                fault = self._fault_for(spared)
                if fault is not None and fault.kind is FaultKind.CUT and i >= fault.tokens:
                    raise StreamCut(f"fault: stream cut after {i} tokens")  # when the next token was due
                if i:
                    now = time.monotonic()
                    self._metrics.itl.labels(**labels).observe(now - last)
                    last = now
                produced += 1
                replica.kv_tokens += 1
                yield piece
        finally:
            replica.kv_tokens -= prompt_tokens + produced
            replica.leave()
            self._metrics.generation_tokens.labels(**labels).inc(produced)
            self._metrics.e2e.labels(**labels).observe(time.monotonic() - started)
            self._publish()

    async def _whole(
        self, request: InferenceRequest, replica: _Replica, prompt_tokens: int, pieces: list[str], finish: str
    ) -> AsyncIterator[bytes]:
        async with contextlib.aclosing(self._run(replica, prompt_tokens, pieces, spared=request.spared)) as run:
            text = "".join([p async for p in run])
        self._metrics.success.labels(finished_reason=finish, **self._labels).inc()
        usage = _usage(prompt_tokens, len(pieces))
        ident, created = _ids(request)
        if request.endpoint is Endpoint.CHAT:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            body = {"id": ident, "object": "chat.completion", "created": created, "model": self.model}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            body = {"id": ident, "object": "text_completion", "created": created, "model": self.model}
        body.update(choices=[choice], usage=usage)
        yield orjson.dumps(body)

    async def _stream(
        self, request: InferenceRequest, replica: _Replica, prompt_tokens: int, pieces: list[str], finish: str
    ) -> AsyncIterator[bytes]:
        ident, created = _ids(request)
        chat = request.endpoint is Endpoint.CHAT
        head = {
            "id": ident,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": self.model,
        }

        def event(choice: dict[str, Any], **extra: Any) -> bytes:
            return b"data: " + orjson.dumps({**head, "choices": [choice] if choice else [], **extra}) + b"\n\n"

        first = True
        # aclosing: a client that leaves closes this generator, and with it the run holding a batch slot.
        async with contextlib.aclosing(self._run(replica, prompt_tokens, pieces, spared=request.spared)) as run:
            async for piece in run:
                if chat:
                    delta: dict[str, Any] = {"content": piece}
                    if first:
                        delta = {"role": "assistant", "content": piece}
                    yield event({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})
                else:
                    yield event({"index": 0, "text": piece, "logprobs": None, "finish_reason": None})
                first = False
        self._metrics.success.labels(finished_reason=finish, **self._labels).inc()
        if chat:
            yield event({"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish})
        else:
            yield event({"index": 0, "text": "", "logprobs": None, "finish_reason": finish})
        options = request.body.get("stream_options") or {}
        if options.get("include_usage"):
            yield event({}, usage=_usage(prompt_tokens, len(pieces)))
        yield b"data: [DONE]\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _ids(request: InferenceRequest) -> tuple[str, int]:
    prefix = "chatcmpl-" if request.endpoint is Endpoint.CHAT else "cmpl-"
    return prefix + uuid.uuid4().hex[:24], int(time.time())
