"""The planner's replica capacity (an Erlang C queue over the batch slots) against the emulator under load.

    python bench/replica_capacity.py [--seconds 20] [--model llama-3.1-8b-instruct] [--gpu H100]

One emulated replica is driven with Poisson arrivals at fractions of the predicted capacity; each run
measures p99 time to first token. The measured capacity is the highest rate whose p99 stays within the
model's SLO (interpolated between runs); the goal is prediction within 10% of it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeplane.fleet import load_default_fleet
from edgeplane.planning import replica_capacity
from edgeplane.site._emulator import EmulatorBackend
from edgeplane.web import Endpoint, parse_request

PROMPT = "Summarise the state of the edge fleet for the operators on call tonight. " * 11  # about 200 tokens
MAX_TOKENS = 16


async def run(backend: EmulatorBackend, rate: float, seconds: float, seed: int) -> tuple[float, list[float]]:
    """The arrival rate achieved (a busy event loop falls behind the nominal one) and each TTFT."""
    raw = orjson.dumps(
        {"model": backend.model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
         "stream": True}
    )  # fmt: skip
    request = parse_request(Endpoint.CHAT, raw)
    draw = random.Random(seed)
    ttfts: list[float] = []

    async def one() -> None:
        started = time.monotonic()
        answer = await backend.generate(request, raw)
        first = True
        async for _ in answer.chunks:
            if first:
                ttfts.append(time.monotonic() - started)
                first = False
        answer.release()

    tasks = []
    started = time.monotonic()
    due = started
    while due < started + seconds:
        tasks.append(asyncio.create_task(one()))
        due += draw.expovariate(rate)
        await asyncio.sleep(max(0.0, due - time.monotonic()))  # keep to the schedule, not to sleep's drift
    achieved = len(tasks) / (time.monotonic() - started)
    await asyncio.gather(*tasks)
    return achieved, ttfts


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default="llama-3.1-8b-instruct")
    parser.add_argument("--gpu", default="H100")
    args = parser.parse_args()
    spec = load_default_fleet().model_by_name[args.model]
    prompt_tokens = len(PROMPT) // 4
    # The emulator's natural answer lengths (8 to 48 tokens, uniform) cut at max_tokens: their mean.
    output_tokens = sum(min(n, MAX_TOKENS) for n in range(8, 49)) / 41
    predicted = replica_capacity(spec, args.gpu, prompt_tokens, output_tokens)
    # The same queue model without the 90% batch-slot cap the planner adds: what the SLO alone allows.
    uncapped = replica_capacity(spec, args.gpu, prompt_tokens, output_tokens, utilisation_cap=False)
    slo = spec.slo_ttft_ms / 1000
    base = max(uncapped.requests_per_second, 1e-9)
    rows = []
    for fraction in (0.8, 0.9, 1.0, 1.1, 1.2, 1.3):
        backend = EmulatorBackend(spec, args.gpu, 1, seed=7)
        achieved, ttfts = await run(backend, fraction * base, args.seconds, seed=int(fraction * 100))
        rows.append((achieved, p99(ttfts), len(ttfts)))
        print(
            f"  rate {achieved:7.2f} rps (asked {fraction * base:7.2f}): p99 TTFT {p99(ttfts) * 1000:7.1f} ms"
            f" over {len(ttfts)} requests"
        )
    measured = rows[0][0] if rows[0][1] > slo else rows[-1][0]
    for (r0, t0, _), (r1, t1, _) in itertools.pairwise(rows):
        if t0 <= slo < t1:
            measured = r0 + (r1 - r0) * (slo - t0) / (t1 - t0)
            break
    print(
        f"replica capacity of {args.model} on {args.gpu} ({prompt_tokens} prompt, {output_tokens:.1f} output tokens,"
        f" SLO {spec.slo_ttft_ms:g} ms): predicted {predicted.requests_per_second:.2f} rps (with the 90% slot cap),"
        f" {uncapped.requests_per_second:.2f} rps (SLO alone); measured on the emulator {measured:.2f} rps;"
        f" ratio predicted/measured {predicted.requests_per_second / measured:.3f} (capped),"
        f" {uncapped.requests_per_second / measured:.3f} (SLO alone)"
    )


if __name__ == "__main__":
    asyncio.run(main())
