"""A backend that forwards to any OpenAI-compatible server (vLLM, SGLang, llama.cpp, TGI)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from edgeplane._errors import BackendError
from edgeplane.site._backend import Answer, Backend, Load
from edgeplane.web import HttpClient, InferenceRequest

# Load gauges under the names the common servers export: vLLM (both KV-cache names), llama.cpp, SGLang.
_RUNNING = ("vllm:num_requests_running", "llamacpp:requests_processing", "sglang:num_running_reqs")
_WAITING = ("vllm:num_requests_waiting", "llamacpp:requests_deferred", "sglang:num_queue_reqs")
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "llamacpp:kv_cache_usage_ratio")


def parse_load(metrics_text: str, capacity: int, model: str | None = None) -> Load:
    """Read running, waiting and KV-cache use from Prometheus text, summing replicas of one model."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labelled = sample.labels.get("model_name")
            if model is not None and labelled is not None and labelled != model:
                continue
            if sample.name in _KV:
                found[sample.name] = max(found.get(sample.name, 0.0), sample.value)
            elif sample.name in _RUNNING or sample.name in _WAITING:
                found[sample.name] = found.get(sample.name, 0.0) + sample.value

    def first(names: tuple[str, ...]) -> float:
        return next((found[n] for n in names if n in found), 0.0)

    return Load(int(first(_RUNNING)), int(first(_WAITING)), float(first(_KV)), capacity)


class UpstreamBackend(Backend):
    kind = "upstream"

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        capacity: int = 64,
        client: HttpClient | None = None,
        close_after_streams: bool = False,
    ) -> None:
        super().__init__(model)
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.capacity = capacity
        # A server that closes its connection after each stream while announcing keep-alive (llama.cpp does)
        # would have the pool send the next request on a connection it is closing: ask for the close instead.
        self._stream_headers = {"Connection": "close"} if close_after_streams else None
        self._client = client or HttpClient()
        self._owns_client = client is None

    async def stop(self) -> None:
        if self._owns_client:
            await self._client.close()

    async def generate(self, request: InferenceRequest, raw: bytes) -> Answer:
        headers = self._stream_headers if request.stream else None
        reply = await self._client.post(self.base_url + request.endpoint.value, raw, headers)
        return Answer(reply.status, reply.content_type, reply.chunks(), reply.release)

    async def load(self) -> Load:
        try:
            text = await self._client.get_text(self.base_url + "/metrics", timeout_seconds=2.0)
        except BackendError:
            return Load(capacity=self.capacity)
        try:
            return parse_load(text, self.capacity, self.model)
        except ValueError:
            return Load(capacity=self.capacity)
