"""What a client, an agent gone wrong or a web page in the operator's browser sends the control plane and the
site agents: a wrong shape is a 4xx naming the field, a page from elsewhere changes nothing, and nothing a
request carries stops the service."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.dashboard import with_dashboard
from edgeplane.fleet import load_default_fleet, load_fleet
from edgeplane.site import SiteAgent, SiteOptions, build_backends
from edgeplane.web import supervised
from tests._time import wait_for_async
from tests.conftest import SMALL_FLEET, serving

TOKEN = "s3cret-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}", "X-Edgeplane-Actor": "alice"}
MODEL = "llama-3.1-8b-instruct"


def plane(token: str | None = None, fleet_path: Any = None) -> ControlPlane:
    fleet = load_fleet(fleet_path) if fleet_path else load_default_fleet()
    return with_dashboard(
        ControlPlane(FleetState(fleet, SQLiteStore(":memory:")), admin_token=token, probe_interval_seconds=None)
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def call(
    session: aiohttp.ClientSession, method: str, url: str, *, data: Any = None, json: Any = None, **headers: str
) -> tuple[int, Any]:
    async with session.request(method, url, data=data, json=json, headers=headers) as response:
        body = await response.read()
        try:
            return response.status, await response.json(content_type=None)
        except ValueError:
            return response.status, body


async def test_a_malformed_agent_report_is_refused_naming_the_field_and_nothing_stops(
    session: aiohttp.ClientSession,
) -> None:
    control = plane()
    async with serving(control) as url:
        report = url + "/api/agents/lon1/report"
        status, _ = await call(session, "POST", report, data=b'{"models":{"%s":null}}' % MODEL.encode(),
                               **{"Content-Type": "text/plain"})  # fmt: skip
        assert status == 415
        for models, field in [({MODEL: None}, f"models.{MODEL}"), ({MODEL: [1]}, f"models.{MODEL}"),
                              ({MODEL: {"running": "3"}}, f"models.{MODEL}.running"),
                              ({MODEL: {"running": -1}}, f"models.{MODEL}.running")]:  # fmt: skip
            status, answer = await call(session, "POST", report, json={"backend": "emulator", "models": models})
            assert status == 400 and answer["error"]["param"] == field, (models, answer)
            assert field in answer["error"]["message"]
        units = {"lon1-u1": {"alarms": "leak"}}
        status, answer = await call(session, "POST", report, json={"backend": "x", "models": {}, "units": units})
        assert status == 400 and answer["error"]["param"] == "units.lon1-u1.alarms"
        status, answer = await call(session, "POST", report, json={})  # would wipe what the agent said last
        assert status == 400 and answer["error"]["param"] == "backend"
        status, answer = await call(session, "POST", report, data=b'{"backend": "x", "models": {}, "pid": 1e400}',
                                    **{"Content-Type": "application/json"})  # fmt: skip
        assert status == 400 and answer["error"]["code"] == "invalid_json"
        assert "lon1" not in control.state.agents.reports  # nothing malformed reached the state

        good = {"url": "http://127.0.0.1:9", "backend": "emulator", "models": {MODEL: {"running": 2}}}
        status, answer = await call(session, "POST", report, json=good)
        assert status == 200 and answer["models"]
        version = control.state.snapshot.version
        await wait_for_async(  # the ticks go on: the plane publishes the report's site
            "lon1 published serving", lambda: control.state.snapshot.sites["lon1"].state.value == "serving"
        )
        status, health = await call(session, "GET", url + "/healthz")
        assert status == 200 and health["status"] == "ok"
        assert control.state.snapshot.sites["lon1"].state.value == "serving"
        assert control.state.snapshot.version >= version


async def test_a_background_job_that_fails_is_logged_and_started_again(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise AttributeError("'NoneType' object has no attribute 'get'")
        done.set()

    with caplog.at_level(logging.ERROR, logger="edgeplane"):
        async with asyncio.timeout(10):
            await supervised("flaky job", flaky, first_seconds=0.01)()
    assert runs == [0, 1, 2] and done.is_set()
    failures = [r for r in caplog.records if "flaky job failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)


async def test_a_web_page_cannot_change_state_or_rebind_a_name_to_loopback(session: aiohttp.ClientSession) -> None:
    control = plane()  # no admin token: the loopback default, where only the browser guards stand
    async with serving(control) as url:
        drain = {"kind": "metro", "code": "lon"}
        host = url.removeprefix("http://")
        attempts: list[tuple[dict[str, Any], dict[str, str], int]] = [
            ({"data": b'{"kind": "metro", "code": "lon"}'}, {"Content-Type": "text/plain"}, 415),
            ({"data": b"kind=metro&code=lon"}, {"Content-Type": "application/x-www-form-urlencoded"}, 415),
            ({"data": b'{"kind": "metro", "code": "lon"}'}, {"Content-Type": "multipart/form-data; b=x"}, 415),
            ({"json": drain}, {"Origin": "http://evil.example"}, 403),
            ({"json": drain}, {"Origin": "null"}, 403),
            ({"json": drain}, {"Origin": f"http://{host}", "Sec-Fetch-Site": "cross-site"}, 403),
            ({"json": drain}, {"Host": "evil.example"}, 421),
            ({"json": drain}, {"Host": f"evil.example:{host.split(':')[1]}"}, 421),
        ]
        for body, headers, expected in attempts:
            status, answer = await call(session, "POST", url + "/api/drains", **body, **headers)
            assert status == expected, (headers, answer)
            assert answer["error"]["message"]
        status, _ = await call(session, "GET", url + "/api/drains", Host="rebound.example")
        assert status == 421
        status, answer = await call(session, "GET", url + "/api/drains")
        assert answer["drains"] == []  # nothing was drained

        for headers in ({}, {"Origin": f"http://{host}"}, {"Host": "localhost"}, {"Sec-Fetch-Site": "same-origin"}):
            status, _ = await call(session, "POST", url + "/api/drains", json={**drain, "force": True}, **headers)
            assert status == 200, headers
            status, _ = await call(session, "DELETE", url + "/api/drains/metro/lon", **headers)
            assert status == 200, headers
        async with session.get(url + "/") as page:
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_routes_and_fields_are_refused_as_openai_errors(session: aiohttp.ClientSession) -> None:
    control = plane(TOKEN)
    async with serving(control) as url:
        status, answer = await call(session, "GET", url + "/api/nope")
        assert status == 404 and answer["error"]["code"] == "not_found"
        # Beyond loopback the fleet names its control plane by DNS; with the token, any name will do.
        status, _ = await call(session, "GET", url + "/api/status", Host="control.example:8081")
        assert status == 421
        status, _ = await call(session, "GET", url + "/api/status", Host="control.example:8081", **ADMIN)
        assert status == 200
        status, answer = await call(session, "PUT", url + "/api/drains", json={}, **ADMIN)
        assert status == 405 and answer["error"]["type"] == "invalid_request_error"

        for header in (TOKEN, f"Basic {TOKEN}", f"Bearer{TOKEN}", f"Bearer {TOKEN}x"):
            status, _ = await call(session, "POST", url + "/api/drains", json={"kind": "metro", "code": "lon"},
                                   Authorization=header)  # fmt: skip
            assert status == 401, header

        refused: list[tuple[str, bytes, str]] = [
            ("/api/drills", b'{"metro": "lon", "duration_seconds": NaN}', "invalid_json"),
            ("/api/drills", b'{"metro": "lon", "duration_seconds": "nan"}', "duration_seconds"),
            ("/api/drills", b'{"metro": "lon", "duration_seconds": 1e999}', "invalid_json"),
            ("/api/drills", b'{"metro": "lon", "slo_ttft_ms": -1}', "slo_ttft_ms"),
            ("/api/units", b'{"pop": "lon1", "due": "NaN"}', "due"),
            ("/api/units", b'{"pop": "lon1", "due": Infinity}', "invalid_json"),
            ("/api/drains", b'{"kind": "metro", "code": "lon", "force": "no"}', "force"),
            ("/api/placement", b'{"placement": [], "force": "no"}', "force"),
            ("/api/keys", b'{"tenant": "acme", "rpm": 1180591620717411303424}', "rpm"),
            ("/api/bgp/actions", b'{"pop": "lon1", "transit_asn": 99999999999, "action": "none"}', "transit_asn"),
        ]
        for path, raw, field in refused:
            status, answer = await call(session, "POST", url + path, data=raw,
                                        **{**ADMIN, "Content-Type": "application/json"})  # fmt: skip
            assert status == 400, (path, raw, answer)
            error = answer["error"]
            assert field in (error["param"] or "", error["code"]), (raw, error)
        status, answer = await call(session, "GET", url + "/api/drills")
        assert answer["drills"] == []

        actor = 'mallory\t"root" drained everything ' + "x" * 500
        status, _ = await call(session, "POST", url + "/api/drains", json={"kind": "pop", "code": "lon1"},
                               **{**ADMIN, "X-Edgeplane-Actor": actor})  # fmt: skip
        assert status == 200
        for limit in ("0", "abc", "-1", "100000", "1e3", "NaN"):
            status, answer = await call(session, "GET", url + f"/api/audit?limit={limit}", **ADMIN)
            assert status == 400 and "limit" in answer["error"]["message"], limit
        status, answer = await call(session, "GET", url + "/api/audit?limit=1", **ADMIN)
        assert status == 200 and len(answer["audit"]) == 1
        who = answer["audit"][0]["who"]
        assert "\t" not in who and len(who) <= 70 and who.startswith('\'mallory?"root"')


async def test_a_placement_that_empties_a_model_is_refused_unless_forced(session: aiohttp.ClientSession) -> None:
    control = plane(fleet_path=SMALL_FLEET)
    async with serving(control) as url:
        status, answer = await call(session, "POST", url + "/api/placement", json={"placement": []})
        assert status == 409 and answer["error"]["code"] == "placement_refused"
        assert {"tiny-llama would be served nowhere", "tiny-chat would be served nowhere"} <= set(answer["reasons"])
        # Busy sites: taking tiny-llama away from nyc1, ord1 and ams1 leaves their load to iad1 alone.
        for pop in ("nyc1", "iad1", "ord1", "ams1"):
            models = {m: {"running": 3, "capacity": 4} for m in control.state.fleet.models_at(pop)}
            report = {"url": f"http://127.0.0.1:9/{pop}", "backend": "emulator", "models": models}
            assert (await call(session, "POST", url + f"/api/agents/{pop}/report", json=report))[0] == 200
        control.state.refresh()
        only_llama = {"placement": [{"model": "tiny-llama", "pop": "nyc1", "replicas": 1}]}
        status, answer = await call(session, "POST", url + "/api/placement", json=only_llama)
        assert status == 409 and "tiny-chat would be served nowhere" in answer["reasons"]
        assert len(control.state.fleet.placement) == 6  # unchanged
        # Placed only where nothing serves now is served nowhere either.
        assert (await call(session, "POST", url + "/api/drains", json={"kind": "pop", "code": "ams1", "force": True}))[
            0
        ] == 200
        control.state.refresh()
        keep = [{"model": p.model, "pop": p.pop, "replicas": p.replicas} for p in control.state.fleet.placement]
        chat_at_ams = [e for e in keep if e["model"] != "tiny-chat"] + [
            {"model": "tiny-chat", "pop": "ams1", "replicas": 1}
        ]
        status, answer = await call(session, "POST", url + "/api/placement", json={"placement": chat_at_ams})
        assert status == 409 and "tiny-chat would be served only at ams1, where nothing serves now" in answer["reasons"]
        assert (await call(session, "DELETE", url + "/api/drains/pop/ams1"))[0] == 200
        control.state.refresh()
        shrink = {"placement": [{"model": "tiny-llama", "pop": "iad1", "replicas": 1},
                                {"model": "tiny-chat", "pop": "nyc1", "replicas": 1}]}  # fmt: skip
        status, answer = await call(session, "POST", url + "/api/placement", json=shrink)
        assert status == 409 and any("iad1 would carry" in r for r in answer["reasons"]), answer
        status, answer = await call(session, "POST", url + "/api/placement", json={**shrink, "force": True})
        assert status == 200 and len(control.state.fleet.placement) == 2
        status, answer = await call(session, "GET", url + "/api/audit")
        placements = [r["outcome"] for r in answer["audit"] if r["action"] == "apply placement"]
        assert placements == ["ok (forced)", "refused", "refused", "refused", "refused"]  # newest first


async def test_site_agents_need_the_admin_token_and_audit_through_the_control_plane(
    session: aiohttp.ClientSession,
) -> None:
    control = plane(TOKEN, SMALL_FLEET)
    fleet = control.state.fleet
    registry = CollectorRegistry()
    backends = build_backends(fleet, "nyc1", SiteOptions(time_scale=0.01), registry)
    async with serving(control) as url:
        agent = SiteAgent("nyc1", backends, kind="emulator", registry=registry, control_url=url, admin_token=TOKEN)
        async with serving(agent) as agent_url:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                status, _ = await call(session, "POST", agent_url + "/api/faults", json={"fault": "crash"}, **headers)
                assert status == 401, headers
                status, _ = await call(session, "DELETE", agent_url + "/api/faults", **headers)
                assert status == 401, headers
            status, _ = await call(session, "POST", agent_url + "/api/faults", data=b'{"fault": "slow"}',
                                   **{**ADMIN, "Content-Type": "text/plain"})  # fmt: skip
            assert status == 415
            status, _ = await call(session, "POST", agent_url + "/api/faults", json={"fault": "slow"},
                                   **{**ADMIN, "Origin": "http://evil.example"})  # fmt: skip
            assert status == 403
            for too_much in ({"factor": 2_000_000}, {"seconds": 1e300}, {"tokens": 2**40}):
                fault = {"fault": "http-503", **too_much}
                status, _ = await call(session, "POST", agent_url + "/api/faults", json=fault, **ADMIN)
                assert status == 400, too_much  # what the control plane would refuse in its reports
            status, answer = await call(session, "POST", agent_url + "/api/faults", json={"fault": "slow"}, **ADMIN)
            assert status == 200 and answer["active"]["fault"] == "slow"
            status, _ = await call(session, "DELETE", agent_url + "/api/faults", **ADMIN)
            assert status == 200
            # Through the control plane: audited there once, not again by the agent.
            status, _ = await call(session, "POST", url + "/api/faults", json={"pop": "nyc1", "fault": "slow"}, **ADMIN)
            assert status == 200

            async def audit() -> list[dict[str, Any]]:
                return list((await call(session, "GET", url + "/api/audit", **ADMIN))[1]["audit"])

            async def audited() -> bool:
                return len(await audit()) >= 6

            await wait_for_async("six audit rows", audited, every=0.1)
            audit_rows = await audit()
        rows = sorted((r["who"], r["action"], r["target"], r["outcome"]) for r in audit_rows)
        assert rows == [
            ("alice", "fault", "pop nyc1", "ok"),  # through the control plane: audited there, at once
            ("alice at nyc1", "clear fault", "pop nyc1", "ok"),  # straight to the agent: with its next report
            ("alice at nyc1", "fault", "pop nyc1", "ok"),
            *[("alice at nyc1", "fault", "pop nyc1", "refused")] * 3,  # the agent's own refusals are kept too
        ]
        status, _ = await call(session, "GET", url + "/api/status")
        assert status == 401
        status, answer = await call(session, "GET", url + "/api/dashboard")
        assert status == 200 and all("url" not in p for p in answer["pops"])  # agents' addresses are not public


@pytest.fixture
def small_disk(tmp_path: Any) -> Iterator[Path]:
    """A 1 MiB file system of its own (tmpfs; root only), removed afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


async def test_a_full_disk_is_said_not_a_bare_500(session: aiohttp.ClientSession, small_disk: Path) -> None:
    store = SQLiteStore(small_disk / "edgeplane.db")
    control = ControlPlane(FleetState(load_default_fleet(), store), probe_interval_seconds=None)
    async with serving(control) as url:
        filler = small_disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"x" * 4096)
                out.flush()
        for path, body in [("/api/drains", {"kind": "metro", "code": "lon", "force": True}),
                           ("/api/keys", {"tenant": "acme"})]:  # fmt: skip
            status, answer = await call(session, "POST", url + path, json=body)
            assert status == 507, answer
            assert answer["error"]["code"] == "store_full" and "disk is full" in answer["error"]["message"]
        status, _ = await call(session, "GET", url + "/healthz")
        assert status == 200  # and it goes on serving what it can
        filler.unlink()
        status, _ = await call(session, "POST", url + "/api/drains", json={"kind": "pop", "code": "lon1"})
        assert status == 200
