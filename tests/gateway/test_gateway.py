"""The gateway in process against a real control plane and real site agents on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.dashboard import with_dashboard
from edgeplane.fleet import Fleet, load_fleet
from edgeplane.gateway import ClientLocator, Gateway, GatewayOptions, SnapshotWatcher
from edgeplane.site import SiteAgent, SiteOptions, build_backends
from edgeplane.web import serve
from tests._time import wait_for_async
from tests.conftest import SMALL_FLEET, free_port, serving

NYC_CLIENT = "198.18.0.20"
AMS_CLIENT = "198.18.48.9"


def test_client_address_comes_from_a_trusted_proxy_only() -> None:
    locator = ClientLocator()
    assert locator.locate("::1", "2001:db8:100::5") == "2001:db8:100::5"
    assert locator.locate("192.0.2.7", "198.18.0.1") == "192.0.2.7"
    assert locator.locate("127.0.0.1", "not-an-ip") == "127.0.0.1"
    assert ClientLocator(["192.0.2.0/24"]).locate("192.0.2.7", "198.18.0.1") == "198.18.0.1"


def test_the_client_is_the_rightmost_address_no_trusted_proxy_wrote() -> None:
    """Proxies append: a client that sends its own X-Forwarded-For cannot choose its metro through it."""
    locator = ClientLocator(["127.0.0.0/8", "::1/128", "192.0.2.0/24"])
    # The client sent "198.18.96.7" (a London address) itself; the proxy appended the real peer 198.18.0.9.
    assert locator.locate("127.0.0.1", "198.18.96.7, 198.18.0.9") == "198.18.0.9"
    assert locator.locate("127.0.0.1", "198.18.96.7,198.18.0.9, 192.0.2.1, 192.0.2.2") == "198.18.0.9"
    assert locator.locate("127.0.0.1", "192.0.2.1, 192.0.2.2") == "192.0.2.1"  # all proxies: the leftmost
    assert locator.locate("::ffff:127.0.0.1", "::ffff:198.18.0.9") == "198.18.0.9"  # mapped forms
    assert locator.locate("127.0.0.1", "[2001:db8:100::5]:4711, 192.0.2.1") == "2001:db8:100::5"
    assert locator.locate("127.0.0.1", "[2001:db8:100::5]") == "2001:db8:100::5"
    assert locator.locate("127.0.0.1", "198.18.0.9:5555") == "198.18.0.9"
    assert locator.locate("127.0.0.1", "198.18.96.7, unknown") == "127.0.0.1"  # junk where the proxy wrote
    assert locator.locate("127.0.0.1", "") == "127.0.0.1"


@dataclass
class Edge:
    fleet: Fleet
    control_url: str
    gateway_url: str
    stops: dict[str, asyncio.Event] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def stop(self, name: str) -> None:
        self.stops[name].set()
        await self.tasks[name]


async def _start(edge: Edge, name: str, run: object) -> str:
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    edge.stops[name] = stop
    edge.tasks[name] = asyncio.create_task(run(ready.set_result, stop))  # type: ignore[operator]
    return await asyncio.wait_for(ready, 30)


@pytest.fixture
async def edge(request: pytest.FixtureRequest) -> AsyncIterator[Edge]:
    """Probes (control plane and gateway) are off unless the test asks for them with indirect=True."""
    probes = bool(getattr(request, "param", False))
    fleet = load_fleet(SMALL_FLEET)
    edge = Edge(fleet, "", "")
    plane = with_dashboard(
        ControlPlane(
            FleetState(fleet, SQLiteStore(":memory:"), agent_timeout_seconds=30),
            probe_interval_seconds=0.2 if probes else None,
        )
    )
    port = free_port()
    edge.control_url = await _start(
        edge, "control", lambda ready, stop: plane.run("127.0.0.1", port, on_ready=ready, stop=stop)
    )
    for pop in ("iad1", "ams1"):
        registry = CollectorRegistry()
        backends = build_backends(fleet, pop, SiteOptions(time_scale=0.01), registry)
        agent = SiteAgent(pop, backends, kind="emulator", registry=registry, control_url=edge.control_url)
        await _start(edge, pop, lambda ready, stop, agent=agent: agent.run("127.0.0.1", 0, on_ready=ready, stop=stop))
    # nyc1's agent has just died: the control plane still believes its last report.
    async with aiohttp.ClientSession() as session:
        dead = f"http://127.0.0.1:{free_port()}"
        report = {"url": dead, "pid": 1, "backend": "emulator", "models": {"tiny-llama": {}}, "load": 0.0}
        async with session.post(f"{edge.control_url}/api/agents/nyc1/report", json=report) as response:
            assert response.status == 200
    watcher = SnapshotWatcher(edge.control_url)
    gateway = Gateway(watcher, options=GatewayOptions(probe_interval_seconds=0.2))
    jobs = [watcher.watch_forever, gateway.report_forever, *([gateway.probe_forever] if probes else [])]

    async def run_gateway(ready: object, stop: asyncio.Event) -> None:
        try:
            await serve(gateway.app(), "127.0.0.1", 0, on_ready=ready, background=lambda url: jobs, stop=stop)  # type: ignore[arg-type]
        finally:
            await watcher.close()

    edge.gateway_url = await _start(edge, "gateway", run_gateway)

    def sites_known() -> bool:
        state = watcher.state
        return bool(state and {p for p, v in state.snapshot.sites.items() if v.url} >= {"nyc1", "iad1", "ams1"})

    await wait_for_async("the gateway's snapshot has every site", sites_known)
    try:
        yield edge
    finally:
        for name in reversed(list(edge.tasks)):
            if not edge.tasks[name].done():
                await edge.stop(name)


async def test_every_forwarded_for_line_counts_and_the_proxys_own_is_believed(edge: Edge) -> None:
    """A proxy may add its own X-Forwarded-For line instead of appending: an Amsterdam address the client wrote
    on its own line does not make a New York client Amsterdam's."""
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with aiohttp.ClientSession() as session:
        headers = [("X-Forwarded-For", "198.18.48.9"), ("X-Forwarded-For", NYC_CLIENT)]
        async with session.post(edge.gateway_url + "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status == 200
            # nyc1 is dead here: a New York client is served in its region, at iad; Amsterdam's would be at ams.
            assert response.headers["x-edgeplane-metro"] == "iad"


async def test_whole_answers_count_in_the_scope_mix_as_streams_do(edge: Edge) -> None:
    """The dashboard's "served at" fed on streams' first tokens only: traffic of whole answers showed no scope."""
    api = AsyncOpenAI(
        base_url=edge.gateway_url + "/v1", api_key="x", max_retries=0, default_headers={"X-Forwarded-For": NYC_CLIENT}
    )
    async with api, aiohttp.ClientSession() as session:
        for _ in range(4):  # nyc1 is dead: New York's clients are served at iad, at region scope
            await api.chat.completions.create(
                model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )

        async def nyc() -> dict[str, Any]:
            async with session.get(edge.control_url + "/api/dashboard") as answer:
                return next(m for m in (await answer.json())["metros"] if m["code"] == "nyc")

        async def reported() -> bool:
            return bool((await nyc())["scopes"])

        await wait_for_async("the gateway reports New York's traffic", reported, every=0.1)
        shown = await nyc()
    assert (shown["scopes"], shown["served_at"]) == ({"region": 1.0}, {"iad": 1.0})


async def test_a_dead_site_is_tried_then_the_next_scope_serves(edge: Edge) -> None:
    api = AsyncOpenAI(
        base_url=edge.gateway_url + "/v1", api_key="x", max_retries=0, default_headers={"X-Forwarded-For": NYC_CLIENT}
    )
    async with api:
        raw = await api.chat.completions.with_raw_response.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert raw.headers["x-edgeplane-attempts"] == "2"
        assert (raw.headers["x-edgeplane-metro"], raw.headers["x-edgeplane-scope"]) == ("iad", "region")
        assert raw.parse().choices[0].finish_reason in ("stop", "length")
    async with aiohttp.ClientSession() as session, session.get(edge.gateway_url + "/metrics") as response:
        text = await response.text()
    assert 'edgeplane_gateway_attempts_total{outcome="connect_error",site="nyc1"} 1.0' in text


async def test_gateway_keeps_serving_on_its_last_snapshot_without_the_control_plane(edge: Edge) -> None:
    await edge.stop("control")
    api = AsyncOpenAI(
        base_url=edge.gateway_url + "/v1",
        api_key="x",
        max_retries=0,
        default_headers={"X-Forwarded-For": "198.18.48.1"},
    )
    async with api:
        for _ in range(3):
            raw = await api.chat.completions.with_raw_response.create(
                model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            assert raw.headers["x-edgeplane-metro"] == "ams"
    async with aiohttp.ClientSession() as session:

        async def gateway_health() -> dict[str, Any]:
            async with session.get(edge.gateway_url + "/healthz") as response:
                return dict(await response.json())

        async def unreachable() -> bool:
            return (await gateway_health())["control_plane_reachable"] is False

        await wait_for_async("the gateway finds the control plane gone", unreachable, every=0.1)
        health = await gateway_health()
    assert health["status"] == "ok" and health["control_plane_reachable"] is False
    assert health["snapshot_age_seconds"] > 0


async def test_no_snapshot_yet_is_a_clear_503() -> None:
    watcher = SnapshotWatcher(f"http://127.0.0.1:{free_port()}")
    gateway = Gateway(watcher)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(gateway.app(), "127.0.0.1", 0, on_ready=ready.set_result, stop=stop))
    url = await ready
    try:
        async with aiohttp.ClientSession() as session:
            body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
            async with session.post(url + "/v1/chat/completions", json=body) as response:
                assert response.status == 503
                assert (await response.json())["error"]["code"] == "no_snapshot"
            async with session.get(url + "/healthz") as response:
                assert response.status == 503
    finally:
        stop.set()
        await task
        with contextlib.suppress(Exception):
            await watcher.close()


@pytest.mark.parametrize("edge", [True], indirect=True)
async def test_probes_find_a_dead_site_and_both_metrics_show_it(edge: Edge) -> None:
    async with aiohttp.ClientSession() as session:

        async def text(url: str) -> str:
            async with session.get(url) as response:
                return await response.text()

        async def gateway_finds_nyc1_down() -> bool:
            async with session.get(edge.gateway_url + "/healthz") as response:
                return bool((await response.json())["sites"].get("nyc1") == "down")

        await wait_for_async("the gateway's probes find nyc1 down", gateway_finds_nyc1_down)
        gateway_metric = 'edgeplane_gateway_site_health{site="nyc1",state="down"} 1.0'
        assert gateway_metric in await text(edge.gateway_url + "/metrics")

        async def control_shows_nyc1_down() -> bool:
            return 'edgeplane_control_site_state{pop="nyc1",state="down"} 1' in await text(
                edge.control_url + "/metrics"
            )

        await wait_for_async("the control plane shows nyc1 down", control_shows_nyc1_down)
        async with session.get(edge.control_url + "/api/status") as response:
            pops = {p["code"]: p for p in (await response.json())["pops"]}
        assert pops["nyc1"]["state"] == "down" and "probe" in pops["nyc1"]["reason"]


async def test_drain_refusal_and_force_through_the_cli(edge: Edge) -> None:
    import sys

    # nyc1 (whose agent "died" but still counts as reporting) holds 20 requests; iad1 and ams1, real
    # idle agents, have room for 3 each at most.
    async with aiohttp.ClientSession() as session:
        report = {
            "url": f"http://127.0.0.1:{free_port()}",
            "pid": 1,
            "backend": "emulator",
            "load": 1.0,
            "models": {"tiny-llama": {"running": 4, "waiting": 16, "capacity": 4}},
        }
        async with session.post(f"{edge.control_url}/api/agents/nyc1/report", json=report) as response:
            assert response.status == 200

    async def cli(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgeplane",
            "--control",
            edge.control_url,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        return process.returncode or 0, out.decode()

    async def nyc1_load_published() -> bool:  # load-only changes are published at most once a second
        async with aiohttp.ClientSession() as session, session.get(f"{edge.control_url}/api/status") as response:
            return any(p["code"] == "nyc1" and p["load"] == 1.0 for p in (await response.json())["pops"])

    await wait_for_async("the control plane publishes nyc1's report", nyc1_load_published)
    code, out = await cli("drain", "metro", "nyc")
    assert code == 1 and "refused" in out and "would carry" in out and "--force" in out
    code, out = await cli("drain", "metro", "nyc", "--force")
    assert code == 0 and "metro nyc drained" in out


async def test_admin_actions_need_the_token_compared_in_constant_time_and_are_audited() -> None:
    fleet = load_fleet(SMALL_FLEET)
    plane = ControlPlane(
        FleetState(fleet, SQLiteStore(":memory:")), admin_token="s3cret-admin", probe_interval_seconds=None
    )
    async with serving(plane) as url:
        async with aiohttp.ClientSession() as session:
            actions = [
                ("POST", "/api/drains", {"kind": "metro", "code": "nyc"}),
                ("DELETE", "/api/drains/metro/nyc", None),
                ("POST", "/api/keys", {"tenant": "acme"}),
                ("POST", "/api/faults", {"pop": "nyc1", "fault": "slow"}),
                ("POST", "/api/drills", {"metro": "nyc", "duration_seconds": 1}),
                ("POST", "/api/bgp/actions", {"pop": "nyc1", "transit_asn": 64497, "action": "prepend-1"}),
            ]
            for method, path, body in actions:
                for token in (None, "wrong"):
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with session.request(method, url + path, json=body, headers=headers) as response:
                        assert response.status == 401, (method, path, token)
            admin = {"Authorization": "Bearer s3cret-admin", "X-Edgeplane-Actor": "alice"}
            async with session.post(
                url + "/api/drains", json={"kind": "metro", "code": "nyc"}, headers=admin
            ) as response:
                assert response.status == 200
            for read in ("/api/audit", "/api/status"):  # they show actors and agents' addresses
                async with session.get(url + read) as response:
                    assert response.status == 401, read
            async with session.get(url + "/api/audit", headers=admin) as response:
                audit = (await response.json())["audit"]
        assert (audit[0]["who"], audit[0]["action"], audit[0]["target"], audit[0]["outcome"]) == (
            "alice",
            "drain",
            "metro nyc",
            "ok",
        )
        with pytest.raises(ValueError, match="beyond loopback"):
            await ControlPlane(FleetState(fleet, SQLiteStore(":memory:"))).run("0.0.0.0", 0)


async def test_a_whole_answer_longer_than_the_request_budget_is_not_cut(edge: Edge) -> None:
    """The budget bounds when tries may start; a whole answer's head comes with its last byte, so its try runs to
    the read timeout. It was cut at the budget: every non-streamed answer longer than 30 s failed by default."""
    watcher = SnapshotWatcher(edge.control_url)
    gateway = Gateway(watcher, options=GatewayOptions(request_budget_seconds=0.2, probe_interval_seconds=60))

    async def run_gateway(ready: object, stop: asyncio.Event) -> None:
        try:
            background = lambda url: [watcher.watch_forever]  # noqa: E731
            await serve(gateway.app(), "127.0.0.1", 0, on_ready=ready, background=background, stop=stop)  # type: ignore[arg-type]
        finally:
            await watcher.close()

    url = await _start(edge, "short-budget gateway", run_gateway)
    await wait_for_async("its snapshot", lambda: watcher.state is not None)
    ams1 = watcher.state.snapshot.sites["ams1"].url  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{ams1}/api/faults", json={"fault": "slow", "factor": 2000}) as answer:
            assert answer.status == 200
        body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
        headers = {"X-Forwarded-For": AMS_CLIENT}
        try:
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                assert (response.headers["x-edgeplane-metro"], response.headers["x-edgeplane-attempts"]) == ("ams", "1")
                assert (await response.json())["choices"][0]["finish_reason"] in ("stop", "length")
        finally:
            async with session.delete(f"{ams1}/api/faults") as cleared:
                assert cleared.status == 200
