"""The control plane's network-edge API over real HTTP: intents per PoP, long-polls, actions and their errors."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.fleet import load_default_fleet
from tests.conftest import serving


async def test_intents_long_poll_wakes_on_a_drain_and_actions_are_checked() -> None:
    state = FleetState(load_default_fleet(), SQLiteStore(":memory:"), graceful_shutdown_seconds=60)
    plane = ControlPlane(state, probe_interval_seconds=None)
    async with serving(plane) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/api/bgp/intents?pop=fra1") as response:
            first = await response.json()
        assert first["state"]["state"] == "announced" and len(first["intents"]) == 8

        async def wait_for_change() -> tuple[float, dict[str, object]]:
            started = time.monotonic()
            query = f"pop=fra1&after={first['version']}&wait=10"
            async with session.get(f"{url}/api/bgp/intents?{query}") as response:
                return time.monotonic() - started, await response.json()

        waiting = asyncio.create_task(wait_for_change())
        await asyncio.sleep(0.2)  # a head start for the long-poll (were it late, the new version answers it at once)
        body = {"kind": "metro", "code": "fra", "force": True}
        async with session.post(f"{url}/api/drains", json=body) as response:
            assert response.status == 200
        waited, changed = await waiting
        assert waited < 10, "the long-poll answered when the drain landed, not at its timeout"
        assert changed["state"]["state"] == "graceful-shutdown"  # type: ignore[index]
        assert changed["intents"][0]["communities"] == ["65535:0"]  # type: ignore[index]

        for params, status, code in [
            ("pop=nope", 404, "not_found"),
            ("pop=fra1&after=x", 400, None),
        ]:
            async with session.get(f"{url}/api/bgp/intents?{params}") as response:
                assert response.status == status
                assert (await response.json())["error"]["code"] == code
        for action, status, text in [
            ({"pop": "fra1", "transit_asn": 64497, "action": "prepend-1"}, 404, "not a transit of fra1"),
            ({"pop": "fra1", "transit_asn": 64499, "action": "prepend-7"}, 400, "unknown action"),
            ({"pop": "fra1"}, 400, "Expected"),
        ]:
            async with session.post(f"{url}/api/bgp/actions", json=action) as response:
                assert response.status == status
                assert text in (await response.json())["error"]["message"]
        async with session.get(f"{url}/api/bgp") as response:
            summary = await response.json()
        assert {p["pop"]: p["state"] for p in summary["pops"]}["fra1"] == "graceful-shutdown"
        assert summary["graceful_shutdown_seconds"] == 60
