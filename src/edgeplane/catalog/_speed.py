"""The speed model of one replica: the one the emulator runs and the router and planner predict with."""

from __future__ import annotations

from dataclasses import dataclass

# One stream decodes at most this fast however idle the GPU is.
SINGLE_STREAM_TOKENS_PER_SECOND = 150.0
# Prefill is compute-bound and runs this many times faster than batched decode.
PREFILL_SPEEDUP = 8.0
BASE_OVERHEAD_SECONDS = 0.005
# Output length assumed when a request does not say (max_tokens absent).
DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True, slots=True)
class ReplicaSpeed:
    """How fast one replica runs, derived from the catalog's throughput on a GPU type."""

    throughput_tokens_per_second: float  # aggregate decode at full batch
    max_concurrency: int

    @property
    def itl_idle_seconds(self) -> float:
        return 1.0 / min(SINGLE_STREAM_TOKENS_PER_SECOND, self.throughput_tokens_per_second)

    @property
    def itl_full_seconds(self) -> float:
        return max(self.itl_idle_seconds, self.max_concurrency / self.throughput_tokens_per_second)

    def inter_token_seconds(self, batch: float) -> float:
        """Grows linearly with the batch from one idle stream to a full batch at the catalog throughput."""
        if self.max_concurrency <= 1:
            return self.itl_full_seconds
        fraction = (min(max(batch, 1), self.max_concurrency) - 1) / (self.max_concurrency - 1)
        return self.itl_idle_seconds + fraction * (self.itl_full_seconds - self.itl_idle_seconds)

    def prefill_seconds(self, prompt_tokens: float, batch: float) -> float:
        # Decoding neighbours (batch - 1 of them) share the GPU with this prefill.
        slowdown = 1.0 + (batch - 1 if batch > 1 else 0) / (self.max_concurrency or 1)
        return BASE_OVERHEAD_SECONDS + prompt_tokens / (self.throughput_tokens_per_second * PREFILL_SPEEDUP) * slowdown

    def queue_seconds(self, busy: int, replicas: int, output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> float:
        """Predicted wait for a batch slot with ``busy`` requests running or waiting over ``replicas``:
        the requests ahead beyond the free slots, drained at the full-batch completion rate."""
        slots = self.max_concurrency * replicas
        ahead = busy - slots + 1
        if ahead <= 0:
            return 0.0
        completions_per_second = replicas * self.throughput_tokens_per_second / max(1, output_tokens)
        return ahead / completions_per_second
