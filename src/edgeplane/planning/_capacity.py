"""How many requests per second one replica sustains within its model's SLO: an M/M/c queue (Erlang C)
over the replica's batch slots, with service times from the catalog's speed model (the emulator's)."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from edgeplane.catalog import ModelSpec, ReplicaSpeed
from edgeplane.planning._headroom import MAX_UTILISATION

P99 = 0.99


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """Probability that an arrival finds all ``servers`` busy in a loss system offered ``offered_erlangs``."""
    if offered_erlangs <= 0:
        return 0.0
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_erlangs * blocking / (k + offered_erlangs * blocking)
    return blocking


def site_blocking(
    speed: ReplicaSpeed, replicas: int, prompt_tokens: int, output_tokens: float, offered_rps: float
) -> float:
    """Probability that a request finds every batch slot of a site taken, so that the gateway's router calls it
    full and moves on. A loss system whose completion rate depends on how many requests are in flight: with
    ``n`` of them spread over the replicas, each takes prefill plus its decode steps at the inter-token time of
    a batch of ``n / replicas`` (the speed model the emulator runs), so ``n`` complete at ``n / S(n)`` per
    second, and state ``n`` is ``prod(rate * S(k) / k for k <= n)`` times as likely as an empty site. Erlang B
    is the case where ``S`` does not depend on ``n``."""
    if offered_rps <= 0 or replicas <= 0 or speed.max_concurrency <= 0:
        return 0.0
    base = _log_hold(speed, replicas, prompt_tokens, float(output_tokens))
    states = np.arange(1, len(base) + 1)
    log_weight = base + states * math.log(offered_rps)
    top = max(0.0, float(log_weight.max()))
    return float(math.exp(log_weight[-1] - top) / (math.exp(-top) + np.exp(log_weight - top).sum()))


@functools.lru_cache(maxsize=4096)
def _log_hold(speed: ReplicaSpeed, replicas: int, prompt_tokens: int, output_tokens: float) -> np.ndarray:
    """``cumsum(log(S(k) / k))`` for k = 1 .. every slot of the site: what site_blocking weighs states by."""
    slots = speed.max_concurrency * replicas
    n = np.arange(1, slots + 1, dtype=float)
    batch = n / replicas
    c = speed.max_concurrency
    fraction = (np.clip(batch, 1, c) - 1) / (c - 1) if c > 1 else np.ones_like(batch)
    itl = speed.itl_idle_seconds + fraction * (speed.itl_full_seconds - speed.itl_idle_seconds)
    prefill = np.array([speed.prefill_seconds(prompt_tokens, 1.0)]) + (
        speed.prefill_seconds(prompt_tokens, 2.0) - speed.prefill_seconds(prompt_tokens, 1.0)
    ) * np.maximum(batch - 1, 0)  # linear in the batch past one
    hold = prefill + max(0.0, output_tokens - 1) * itl  # the first token comes with the prefill
    result: np.ndarray = np.cumsum(np.log(hold / n))
    return result


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
    speed: ReplicaSpeed
    prompt_tokens: int
    output_tokens: float

    @property
    def saturation_rps(self) -> float:
        """The rate at which every batch slot is taken at full-batch speed: beyond it the queue only grows,
        and the gateway's router calls the site full."""
        full = (
            self.speed.prefill_seconds(self.prompt_tokens, self.slots)
            + self.output_tokens * self.speed.itl_full_seconds
        )
        return self.slots / full if full > 0 else 0.0

    def ttft_p99_seconds(self, requests_per_second: float) -> float:
        """Predicted p99 time to first token at this load (inf when the queue is unstable)."""
        service = service_seconds(self.speed, self.prompt_tokens, self.output_tokens, requests_per_second)
        return self.prefill_seconds + wait_p99_seconds(self.slots, service, requests_per_second)


def wait_p99_seconds(slots: int, service_seconds: float, requests_per_second: float) -> float:
    rate = slots / service_seconds  # completions per second with every slot busy
    if requests_per_second >= rate:
        return math.inf
    waits = erlang_c(slots, requests_per_second * service_seconds)
    if waits <= 1 - P99:
        return 0.0
    return math.log(waits / (1 - P99)) / (rate - requests_per_second)


def replica_capacity(
    spec: ModelSpec, gpu_type: str, prompt_tokens: int, output_tokens: float, *, utilisation_cap: bool = True
) -> ReplicaCapacity:
    """The most requests per second one replica takes with p99 TTFT within ``spec.slo_ttft_ms`` and (unless
    ``utilisation_cap`` is off) its batch slots at most 90% busy at full-batch speed, the drain check's limit.
    0 when even an idle replica breaks the SLO."""
    return _capacity(
        spec.name,
        gpu_type,
        spec.replica_throughput(gpu_type),
        spec.max_concurrency,
        spec.slo_ttft_ms,
        prompt_tokens,
        output_tokens,
        utilisation_cap,
    )


def service_seconds(speed: ReplicaSpeed, prompt_tokens: int, output_tokens: float, requests_per_second: float) -> float:
    """One request's time in a batch slot at this load. Decoding slows as the batch grows (the speed model),
    and the batch is the load times that time (Little's law): the fixed point of the two, at most full."""
    slots = speed.max_concurrency
    batch = 1.0
    for _ in range(100):
        whole = round(batch)
        service = speed.prefill_seconds(prompt_tokens, whole) + output_tokens * speed.inter_token_seconds(whole)
        nxt = min(float(slots), max(1.0, requests_per_second * service))
        if abs(nxt - batch) < 1e-3:
            break
        batch = (batch + nxt) / 2
    return service


@functools.lru_cache(maxsize=4096)
def _capacity(
    name: str,
    gpu_type: str,
    throughput: float,
    slots: int,
    slo_ttft_ms: float,
    prompt_tokens: int,
    output_tokens: float,
    utilisation_cap: bool = True,
) -> ReplicaCapacity:
    speed = ReplicaSpeed(throughput, slots)
    prefill = speed.prefill_seconds(prompt_tokens, slots)
    full = prefill + output_tokens * speed.itl_full_seconds
    slo = slo_ttft_ms / 1000.0
    extra = (speed, prompt_tokens, output_tokens)
    if throughput <= 0 or prefill >= slo:
        return ReplicaCapacity(name, gpu_type, 0.0, full, prefill, slots, "ttft-slo", *extra)

    def meets(rate: float) -> bool:
        return (
            prefill + wait_p99_seconds(slots, service_seconds(speed, prompt_tokens, output_tokens, rate), rate) <= slo
        )

    high = slots / full  # every slot busy at full-batch speed: no more than this completes
    low = 0.0
    for _ in range(32):  # to a few parts in a billion of the saturation rate
        middle = (low + high) / 2
        if meets(middle):
            low = middle
        else:
            high = middle
    service = service_seconds(speed, prompt_tokens, output_tokens, low)
    cap = MAX_UTILISATION * slots / full
    if utilisation_cap and low > cap:
        return ReplicaCapacity(name, gpu_type, cap, full, prefill, slots, "utilisation", *extra)
    return ReplicaCapacity(name, gpu_type, low, service, prefill, slots, "ttft-slo", *extra)
