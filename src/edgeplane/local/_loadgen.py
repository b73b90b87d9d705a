"""A load generator that replays a demand file against a gateway: Poisson arrivals per metro and model, each
request from an address inside its metro's client prefixes, and where each one was served."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgeplane._errors import BackendError
from edgeplane.fleet import Fleet
from edgeplane.planning import Demand
from edgeplane.web import HttpClient


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    by_metro: dict[str, int] = field(default_factory=dict)  # serving metro -> requests answered there
    latencies: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        answered = sum(self.by_metro.values()) or 1
        ordered = sorted(self.latencies)
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "served_by_metro": dict(sorted(self.by_metro.items())),
            "shares": {m: round(n / answered, 4) for m, n in sorted(self.by_metro.items())},
            "latency_p50_ms": round(1000 * ordered[len(ordered) // 2], 1) if ordered else None,
        }


def client_address(fleet: Fleet, metro: str, draw: random.Random) -> str:
    """A random host of the metro's first IPv4 client prefix (or its first prefix of any family)."""
    prefixes = [ipaddress.ip_network(p) for p in fleet.metro_by_code[metro].client_prefixes]
    network = next((p for p in prefixes if p.version == 4), prefixes[0])
    return str(network.network_address + draw.randrange(1, min(network.num_addresses - 1, 1 << 16)))


async def replay(
    fleet: Fleet,
    demand: Sequence[Demand],
    gateway_url: str,
    *,
    duration_seconds: float,
    max_tokens: int = 16,
    api_key: str | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[tuple[str, str], Tally]:
    """Send the demand for ``duration_seconds`` and wait for every answer; tallies per (metro, model)."""
    client = HttpClient(connect_timeout_seconds=5.0, read_timeout_seconds=120.0)
    url = gateway_url.rstrip("/") + "/v1/chat/completions"
    tallies = {(d.metro, d.model): Tally() for d in demand}
    site_metro = {p.code: p.metro for p in fleet.pops}
    sent = 0

    async def one(d: Demand, draw: random.Random) -> None:
        tally = tallies[d.metro, d.model]
        # About four characters a token, as the sites estimate it.
        body = {"model": d.model, "messages": [{"role": "user", "content": "abc " * max(1, d.prompt_tokens)}],
                "max_tokens": max_tokens}  # fmt: skip
        headers = {"X-Forwarded-For": client_address(fleet, d.metro, draw)}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        started = time.monotonic()
        try:
            reply = await client.post(url, orjson.dumps(body), headers)
            try:
                await reply.read()
                site = reply.headers.get("x-edgeplane-site", "")
            finally:
                reply.release()
        except BackendError:
            tally.failed += 1
            return
        if reply.status != 200:
            tally.failed += 1
            return
        tally.ok += 1
        tally.latencies.append(time.monotonic() - started)
        metro = site_metro.get(site, site or "?")
        tally.by_metro[metro] = tally.by_metro.get(metro, 0) + 1

    async def stream_of(d: Demand, index: int) -> None:
        nonlocal sent
        draw = random.Random(seed * 1_000_003 + index)
        begun = time.monotonic()
        due = begun + draw.expovariate(d.requests_per_second)
        async with asyncio.TaskGroup() as group:
            while due < begun + duration_seconds:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                group.create_task(one(d, draw))
                tallies[d.metro, d.model].sent += 1
                sent += 1
                if progress is not None:
                    progress(sent)
                due += draw.expovariate(d.requests_per_second)

    try:
        async with asyncio.TaskGroup() as group:
            for index, d in enumerate(demand):
                if d.requests_per_second > 0:
                    group.create_task(stream_of(d, index))
    finally:
        await client.close()
    return tallies
