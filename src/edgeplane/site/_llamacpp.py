"""A real llama.cpp server, run in process through xllamacpp, loading a GGUF file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edgeplane._api import InferenceRequest
from edgeplane._errors import BackendError
from edgeplane.site._backend import Answer, Backend, Load
from edgeplane.site._upstream import UpstreamBackend


class LlamaCppBackend(Backend):
    kind = "llamacpp"

    def __init__(
        self, model: str, gguf_path: Path, *, parallel: int = 2, context_tokens: int = 1024, threads: int = 1
    ) -> None:
        super().__init__(model)
        self.gguf_path = Path(gguf_path)
        self.parallel = parallel
        self.context_tokens = context_tokens
        self.threads = threads
        self._server: Any = None
        self._upstream: UpstreamBackend | None = None

    @property
    def url(self) -> str | None:
        return self._upstream.base_url if self._upstream else None

    async def start(self) -> None:
        if not self.gguf_path.is_file():
            raise BackendError(f"GGUF file not found: {self.gguf_path}")
        import xllamacpp  # a heavy native module: loaded only when this backend is used

        params = xllamacpp.CommonParams()
        params.model.path = str(self.gguf_path)
        params.model_alias = {self.model}
        params.n_ctx = self.context_tokens
        params.n_parallel = self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.n_threads_http = 2
        params.endpoint_metrics = True
        params.verbosity = -1
        params.port = 0
        self._server = await asyncio.to_thread(xllamacpp.Server, params)
        self._upstream = UpstreamBackend(self.model, str(self._server.listening_address), capacity=self.parallel)

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
