"""The dashboard's server side over real HTTP: the page and its vendored files (nothing from elsewhere), the
server-sent events it lives on, the traffic and scope per metro, and the planner's scenario report it shows."""

from __future__ import annotations

import re

import aiohttp
import orjson

from edgeplane.control import ControlPlane, FleetState, SQLiteStore
from edgeplane.dashboard import with_dashboard
from edgeplane.fleet import load_default_fleet
from tests.conftest import serving

ADMIN = {"Authorization": "Bearer s3cret-admin", "X-Edgeplane-Actor": "alice"}


def plane() -> ControlPlane:
    state = FleetState(load_default_fleet(), SQLiteStore(":memory:"))
    return with_dashboard(ControlPlane(state, admin_token="s3cret-admin", probe_interval_seconds=None))


async def next_state(events: aiohttp.ClientResponse) -> dict:  # type: ignore[type-arg]
    """The next `state` event of the stream."""
    kind, data = None, b""
    async for line in events.content:
        if line.startswith(b"event: "):
            kind = line[7:].strip()
        elif line.startswith(b"data: "):
            data = line[6:]
        elif line == b"\n" and kind == b"state":
            return dict(orjson.loads(data))
    raise AssertionError("the stream ended")


async def test_the_page_loads_only_what_the_control_plane_serves() -> None:
    async with serving(plane()) as url, aiohttp.ClientSession() as session:
        async with session.get(url + "/") as page:
            assert page.status == 200 and page.content_type == "text/html"
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
            html = await page.text()
        linked = [link for link in re.findall(r'(?:src|href)="([^"]+)"', html) if link != "data:,"]  # no favicon
        assert linked and all(link.startswith("/static/") for link in linked)
        for path in [*linked, "/static/vendor/world-atlas/countries-110m.json", "/static/vendor/leaflet/LICENSE"]:
            async with session.get(url + path) as answer:
                assert answer.status == 200, path
        for path in ("/static/%2e%2e/_service.py", "/static/nothing.js", "/static/vendor"):
            async with session.get(url + path) as answer:
                assert answer.status == 404, path


async def test_events_carry_every_metro_and_wake_on_a_drain_with_traffic_and_scope() -> None:
    control = plane()
    async with serving(control) as url, aiohttp.ClientSession() as session, session.get(url + "/api/events") as events:
        assert events.content_type == "text/event-stream"
        first = await next_state(events)
        assert {m["code"] for m in first["metros"]} == {m.code for m in control.state.fleet.metros}
        lon = next(m for m in first["metros"] if m["code"] == "lon")
        assert (lon["latitude"], lon["longitude"], lon["rps"], lon["state"]) == (
            51.51,
            -0.13,
            0.0,
            "down",
        )  # no agent yet
        assert first["admin_token_required"] and first["scenarios"] is None
        assert set(first["pops"][0]["units"]) <= {u["code"] for u in first["units"]}

        report = {
            "samples": [{"client_metro": "lon", "model": "m", "ttft_ms": 80, "metro": "lon", "scope": "metro"}] * 3
            + [{"client_metro": "lon", "model": "m", "ttft_ms": 90, "metro": "ams", "scope": "continent"}],
            "demand": [{"client_metro": "lon", "model": "m", "requests": 40}],
        }
        async with session.post(url + "/api/gateways/report", json=report, headers=ADMIN) as answer:
            assert answer.status == 200
        published = {"scenarios": [{"scenario": "pop sea1", "unserved_rps": 0.0, "busiest": None}]}
        async with session.post(url + "/api/plan/scenarios", json=published, headers=ADMIN) as answer:
            assert answer.status == 200
        async with session.post(url + "/api/drains", json={"kind": "metro", "code": "sea"}) as refused:
            assert refused.status == 401
        async with session.post(url + "/api/drains", json={"kind": "metro", "code": "sea"}, headers=ADMIN) as ok:
            assert ok.status == 200
        for _ in range(5):
            state = await next_state(events)
            if next(m for m in state["metros"] if m["code"] == "sea")["state"] == "drained":
                break
        else:
            raise AssertionError("the drain never reached the stream")
        lon = next(m for m in state["metros"] if m["code"] == "lon")
        assert lon["rps"] > 0 and lon["scopes"] == {"metro": 0.75, "continent": 0.25}
        assert lon["served_at"] == {"lon": 0.75, "ams": 0.25}
        assert [(d["kind"], d["code"], d["by"]) for d in state["drains"]] == [("metro", "sea", "alice")]
        assert state["audit"] is None  # with an admin token, the log is for those who have it
        async with session.get(url + "/api/audit?limit=25", headers=ADMIN) as answer:
            audit = (await answer.json())["audit"]
        assert [a["action"] for a in audit] == ["drain", "publish-scenarios"]  # newest first
        async with session.get(url + "/api/dashboard", headers=ADMIN) as answer:
            assert [a["action"] for a in (await answer.json())["audit"]] == ["drain", "publish-scenarios"]


async def test_the_planner_publishes_its_scenario_report_for_the_dashboard() -> None:
    async with serving(plane()) as url, aiohttp.ClientSession() as session:
        ams, lon = {"pop": "ams1", "utilisation": 0.7}, {"pop": "lon1", "utilisation": 0.95}
        rows = [
            {"scenario": "pop lon1", "failed": ["lon1"], "unserved_rps": 0.0, "busiest": ams},
            {"scenario": "metro fra", "failed": ["fra1"], "unserved_rps": 2.5, "busiest": lon,
             "breaches": [{"metro": "fra"}], "sites": [{"pop": "ams1", "model": "m", "utilisation": 0.9}]},
        ]  # fmt: skip
        async with session.post(url + "/api/plan/scenarios", json={"scenarios": rows}) as refused:
            assert refused.status == 401
        no_busiest = {"scenarios": [{"scenario": "pop lon1", "unserved_rps": 0.0}]}  # every row says its busiest
        for bad in ({"scenarios": "all"}, {"scenarios": [{"unserved_rps": 1}]}, {}, no_busiest):
            async with session.post(url + "/api/plan/scenarios", json=bad, headers=ADMIN) as answer:
                assert answer.status == 400 and "plan scenarios --json" in (await answer.json())["error"]["message"]
        async with session.post(
            url + "/api/plan/scenarios", json={"scenarios": rows, "title": "x2"}, headers=ADMIN
        ) as ok:
            assert ok.status == 200
        async with session.get(url + "/api/plan/scenarios") as answer:
            assert (await answer.json())["report"]["scenarios"] == rows
        async with session.get(url + "/api/dashboard", headers=ADMIN) as answer:
            state = await answer.json()
        summary = state["scenarios"]
        assert (summary["by"], summary["title"]) == ("alice", "x2")
        assert summary["lines"] == [
            {
                "scenario": "pop lon1",
                "unserved_rps": 0.0,
                "busiest": {"pop": "ams1", "utilisation": 0.7},
                "breaches": 0,
            },
            {
                "scenario": "metro fra",
                "unserved_rps": 2.5,
                "busiest": {"pop": "lon1", "utilisation": 0.95},
                "breaches": 1,
            },
        ]
        assert [a["action"] for a in state["audit"]] == ["publish-scenarios"]


def test_the_control_plane_knows_no_dashboard() -> None:
    """The dashboard is a face on the control plane's narrow ControlView; the control plane imports none of it."""
    import subprocess
    import sys

    check = "import sys, edgeplane.control; assert not [m for m in sys.modules if m.startswith('edgeplane.dashboard')]"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
