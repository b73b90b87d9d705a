"""How many requests per second one replica sustains within its model's SLO: an M/M/c queue (Erlang C)
over the replica's batch slots, with service times from the catalog's speed model (the emulator's)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from edgeplane.catalog import ModelSpec, ReplicaSpeed
from edgeplane.planning._headroom import MAX_UTILISATION

P99 = 0.99


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """Probability that an arrival waits, in an M/M/c queue with ``servers`` and load ``offered_erlangs``."""
    if offered_erlangs <= 0:
        return 0.0
    if offered_erlangs >= servers:
        return 1.0
    blocking = 1.0  # Erlang B by its stable recursion, then C from B
    for k in range(1, servers + 1):
        blocking = offered_erlangs * blocking / (k + offered_erlangs * blocking)
    return servers * blocking / (servers - offered_erlangs * (1 - blocking))


@dataclass(frozen=True, slots=True)
class ReplicaCapacity:
    model: str
    gpu_type: str
    requests_per_second: float  # sustained within the SLO
    service_seconds: float  # one request's time in a batch slot at full batch
    prefill_seconds: float
    slots: int
    limited_by: str  # "ttft-slo" or "utilisation"

    def ttft_p99_seconds(self, requests_per_second: float) -> float:
        """Predicted p99 time to first token at this load (inf when the queue is unstable)."""
        return self.prefill_seconds + wait_p99_seconds(self.slots, self.service_seconds, requests_per_second)


def wait_p99_seconds(slots: int, service_seconds: float, requests_per_second: float) -> float:
    rate = slots / service_seconds  # completions per second with every slot busy
    if requests_per_second >= rate:
        return math.inf
    waits = erlang_c(slots, requests_per_second * service_seconds)
    if waits <= 1 - P99:
        return 0.0
    return math.log(waits / (1 - P99)) / (rate - requests_per_second)


def replica_capacity(spec: ModelSpec, gpu_type: str, prompt_tokens: int, output_tokens: int) -> ReplicaCapacity:
    """The most requests per second one replica takes with p99 TTFT within ``spec.slo_ttft_ms`` and its batch
    slots at most 90% busy (the drain check's limit). 0 when even an idle replica breaks the SLO."""
    return _capacity(
        spec.name,
        gpu_type,
        spec.replica_throughput(gpu_type),
        spec.max_concurrency,
        spec.slo_ttft_ms,
        prompt_tokens,
        output_tokens,
    )


@functools.lru_cache(maxsize=4096)
def _capacity(
    name: str, gpu_type: str, throughput: float, slots: int, slo_ttft_ms: float, prompt_tokens: int, output_tokens: int
) -> ReplicaCapacity:
    speed = ReplicaSpeed(throughput, slots)
    prefill = speed.prefill_seconds(prompt_tokens, slots)
    service = prefill + output_tokens * speed.itl_full_seconds
    slo = slo_ttft_ms / 1000.0
    utilisation_cap = MAX_UTILISATION * slots / service
    if throughput <= 0 or prefill >= slo:
        return ReplicaCapacity(name, gpu_type, 0.0, service, prefill, slots, "ttft-slo")
    if prefill + wait_p99_seconds(slots, service, utilisation_cap) <= slo:
        return ReplicaCapacity(name, gpu_type, utilisation_cap, service, prefill, slots, "utilisation")
    low, high = 0.0, utilisation_cap
    for _ in range(60):
        middle = (low + high) / 2
        if prefill + wait_p99_seconds(slots, service, middle) <= slo:
            low = middle
        else:
            high = middle
    return ReplicaCapacity(name, gpu_type, low, service, prefill, slots, "ttft-slo")
