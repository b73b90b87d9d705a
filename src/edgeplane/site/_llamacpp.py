"""A real llama.cpp server, run in process through xllamacpp, loading a GGUF file."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from edgeplane._errors import BackendError
from edgeplane._extras import require
from edgeplane.site._backend import Answer, Backend, Load
from edgeplane.site._upstream import UpstreamBackend
from edgeplane.web import InferenceRequest

_KV_BYTES_PER_VALUE = 2  # llama.cpp's default K and V cache type, F16, which start() leaves as it is
_MIB = 1024 * 1024
# Where a GGUF does not say how large a token's K and V are: still a bound, one that a small model's
# server on a shared CPU host can afford.
_FALLBACK_PROMPT_CACHE_MIB = 256


def kv_bytes_per_token(gguf_path: Path) -> int | None:
    """Bytes of K and V cache one token takes in llama.cpp (F16), from the GGUF's hyper-parameters;
    None where the file does not give them."""
    gguf = require("gguf", "llamacpp", "the llama.cpp backend")  # only the header is read: tensors stay on disk

    try:
        fields = gguf.GGUFReader(gguf_path).fields
    except (OSError, ValueError, LookupError):  # not a GGUF, or cut short: llama.cpp's load will say so
        return None

    def value(name: str) -> Any:
        field = fields.get(name)
        return None if field is None else field.contents()

    arch = value("general.architecture")
    layers, embedding, heads = (
        value(f"{arch}.{k}") for k in ("block_count", "embedding_length", "attention.head_count")
    )
    if not (isinstance(layers, int) and isinstance(embedding, int) and heads):
        return None
    heads_kv = value(f"{arch}.attention.head_count_kv") or heads
    per_layer = heads_kv if isinstance(heads_kv, list) else [heads_kv] * layers  # some models vary it per layer
    first_heads = heads[0] if isinstance(heads, list) else heads
    key = value(f"{arch}.attention.key_length") or embedding // max(1, first_heads)
    val = value(f"{arch}.attention.value_length") or key
    return int(sum(per_layer) * (key + val) * _KV_BYTES_PER_VALUE)


def prompt_cache_mib(gguf_path: Path, context_tokens: int) -> int:
    """The host-RAM prompt cache a server of ``context_tokens`` gets: as large as its KV cache, so it can keep
    one full context of evicted prompts (the smallest positive size, 1 MiB, keeps at least one)."""
    per_token = kv_bytes_per_token(gguf_path)
    if per_token is None:
        return _FALLBACK_PROMPT_CACHE_MIB
    return max(1, math.ceil(context_tokens * per_token / _MIB))


class LlamaCppBackend(Backend):
    kind = "llamacpp"

    def __init__(
        self,
        model: str,
        gguf_path: Path,
        *,
        parallel: int = 2,
        context_tokens: int = 1024,
        threads: int = 1,
        prompt_cache_mib: int | None = None,
    ) -> None:
        """``prompt_cache_mib``: llama.cpp's cache of prompts' KV states in host RAM (0 turns it off); by
        default as large as the KV cache of ``context_tokens``."""
        super().__init__(model)
        self.gguf_path = Path(gguf_path)
        self.parallel = parallel
        self.context_tokens = context_tokens
        self.threads = threads
        self.prompt_cache_mib = prompt_cache_mib
        self._server: Any = None
        self._upstream: UpstreamBackend | None = None

    @property
    def url(self) -> str | None:
        return self._upstream.base_url if self._upstream else None

    async def start(self) -> None:
        if not self.gguf_path.is_file():
            raise BackendError(f"GGUF file not found: {self.gguf_path}")
        xllamacpp = require("xllamacpp", "llamacpp", "the llama.cpp backend")  # heavy: loaded when this backend is used

        if self.prompt_cache_mib is None:
            self.prompt_cache_mib = await asyncio.to_thread(prompt_cache_mib, self.gguf_path, self.context_tokens)
        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf_path)
        params.model_alias = {self.model}
        params.n_ctx = self.context_tokens
        params.n_parallel = self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.n_threads_http = 2
        params.endpoint_metrics = True
        # llama.cpp keeps the KV state of past prompts in host RAM, up to 8 GiB by default, and raises its
        # token limit to whatever fits: small states (short prompts, a small model) pile up for as long as
        # the server runs (a tiny model's agent grew 28 MiB per 1,000 streamed requests).
        params.cache_ram_mib = self.prompt_cache_mib
        params.verbosity = -1
        params.port = 0
        try:
            self._server = await asyncio.to_thread(xllamacpp.Server, params)
        except RuntimeError as error:  # xllamacpp's word for a model it cannot load
            raise BackendError(f"llama.cpp cannot load {self.gguf_path}: {error}") from error
        self._upstream = UpstreamBackend(
            self.model, str(self._server.listening_address), capacity=self.parallel, close_after_streams=True
        )

    async def stop(self) -> None:
        if self._upstream is not None:
            await self._upstream.stop()
        self._upstream = None
        # The server stops when its object is released; the last reference is dropped in a worker
        # thread because the destructor joins the server's threads.
        holder = [self._server]
        self._server = None
        await asyncio.to_thread(holder.clear)

    def _live(self) -> UpstreamBackend:
        if self._upstream is None:
            raise BackendError(f"llama.cpp backend for {self.model} is not started")
        return self._upstream

    async def generate(self, request: InferenceRequest, raw: bytes) -> Answer:
        return await self._live().generate(request, raw)

    async def load(self) -> Load:
        return await self._live().load()
