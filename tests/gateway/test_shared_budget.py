"""Two gateways spend one key's budget: the total admitted in a window stays within 10% of it."""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Awaitable, Callable

import aiohttp
from prometheus_client import CollectorRegistry

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.fleet import load_fleet
from edgeplane.gateway import Gateway, GatewayOptions, SnapshotWatcher
from edgeplane.site import SiteAgent, SiteOptions, build_backends
from edgeplane.web import serve
from tests._time import wait_for_async
from tests.conftest import SMALL_FLEET

WINDOW_SECONDS = 5.0
RPM = 1200  # 100 requests in a 5-second window


async def start(
    run: Callable[[Callable[[str], None], asyncio.Event], Awaitable[None]],
) -> tuple[str, asyncio.Event, asyncio.Task[None]]:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(run(ready.set_result, stop))
    return await asyncio.wait_for(ready, 30), stop, task


async def test_two_gateways_stay_within_ten_percent_of_a_shared_budget() -> None:
    fleet = load_fleet(SMALL_FLEET)
    plane = ControlPlane(
        FleetState(fleet, SQLiteStore(":memory:"), agent_timeout_seconds=30),
        probe_interval_seconds=None,
        limit_window_seconds=WINDOW_SECONDS,
    )
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []
    control_url, stop, task = await start(lambda ready, stop: plane.run("127.0.0.1", 0, on_ready=ready, stop=stop))
    stops.append((stop, task))
    registry = CollectorRegistry()
    agent = SiteAgent(
        "nyc1",
        build_backends(fleet, "nyc1", SiteOptions(time_scale=0), registry),
        kind="emulator",
        registry=registry,
        control_url=control_url,
    )
    _, stop, task = await start(lambda ready, stop: agent.run("127.0.0.1", 0, on_ready=ready, stop=stop))
    stops.append((stop, task))
    gateways = []
    watchers = []
    for _ in range(2):
        watcher = SnapshotWatcher(control_url)
        watchers.append(watcher)
        gateway = Gateway(watcher, options=GatewayOptions(auth=True))
        jobs = [watcher.watch_forever, gateway.lease_forever]
        url, stop, task = await start(
            lambda ready, stop, g=gateway, j=jobs: serve(
                g.app(), "127.0.0.1", 0, on_ready=ready, background=lambda u: j, stop=stop
            )
        )
        stops.append((stop, task))
        gateways.append(url)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(control_url + "/api/keys", json={"tenant": "shared", "rpm": RPM}) as response:
                key = (await response.json())["key"]
            headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "198.18.0.7"}
            body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

            async def knows_the_key(url: str) -> bool:
                async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                    return response.status in (200, 429)

            for url in gateways:  # both gateways know the key
                await wait_for_async(f"{url} knows the key", functools.partial(knows_the_key, url))
            # Start on a fresh window, and load both gateways through most of it.
            next_window = (math.floor(time.time() / WINDOW_SECONDS) + 1) * WINDOW_SECONDS
            await asyncio.sleep(next_window - time.time() + 0.1)
            end = time.monotonic() + WINDOW_SECONDS - 0.4
            counts = {200: 0, 429: 0}

            async def worker(url: str) -> None:
                while time.monotonic() < end:
                    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                        await response.read()
                        counts[response.status] = counts.get(response.status, 0) + 1
                        if response.status == 429:
                            assert int(response.headers["Retry-After"]) >= 1
                            await asyncio.sleep(0.02)

            await asyncio.gather(*(worker(url) for url in gateways for _ in range(6)))
        budget = RPM * WINDOW_SECONDS / 60
        assert counts[429] > 0, counts  # the load was well over the budget
        assert abs(counts[200] - budget) <= 0.1 * budget, counts
        assert set(counts) == {200, 429}
    finally:
        for stop, task in reversed(stops):
            stop.set()
            await task
        for watcher in watchers:
            await watcher.close()
