"""The dashboard, a face of the control plane: a page at / with a map of the fleet (Leaflet and a world outline
from npm's world-atlas, both served from this package: no CDN, no tiles), fed by server-sent events at
/api/events.

The page reads the same state as /api/status, plus what the gateways report (requests per second per client
metro and the scope they were served at), unit telemetry and alarms, drains, drills, the audit log's tail and
the planner's latest scenario report. Actions go through the ordinary admin API with the token the operator
types in; the page holds it for the browser session only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from edgeplane.control import ControlPlane, ControlView
from edgeplane.web import authorised

STATIC = Path(__file__).resolve().parent / "static"
RATE_WINDOW_SECONDS = 10.0  # requests per second and scope shares are taken over this window
PUSH_SECONDS = 1.0  # an update at least this often (rates move without a snapshot change)
AUDIT_TAIL = 25
# Nothing the page loads may come from elsewhere; Leaflet positions its layers with inline styles.
# No other site may frame it either (clickjacking its buttons).
CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self';"
    " frame-ancestors 'none'"
)
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".json": "application/json"}


class Dashboard:
    """The page, its static files and its event stream, over what a control plane shows it (ControlView)."""

    def __init__(self, plane: ControlView, clock: Callable[[], float] = time.time) -> None:
        self.plane = plane
        self.clock = clock
        self._closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Dashboard of {self.plane!r}>"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{path:.+}", self._static)
        app.router.add_get("/api/dashboard", self._state)
        app.router.add_get("/api/events", self._events)

        async def closing(_: web.Application) -> None:
            self._closing.set()

        app.on_shutdown.append(closing)

    def state(self, authorised: bool = True) -> dict[str, Any]:
        """What the page shows. Not ``authorised`` (an admin token is set and the request did not carry it):
        without the audit log and the agents' pids, which /api/audit and /api/status keep to the token."""
        plane = self.plane
        status = plane.status()
        rows = plane.observed_demand(RATE_WINDOW_SECONDS)
        rps: dict[str, float] = {}
        for row in rows:
            rps[row["metro"]] = rps.get(row["metro"], 0.0) + float(row["requests_per_second"])
        mix = plane.traffic_mix(RATE_WINDOW_SECONDS)
        for metro in status["metros"]:
            place = plane.fleet.metro_by_code[metro["code"]]
            metro["latitude"], metro["longitude"] = place.latitude, place.longitude
            metro["rps"] = round(rps.get(metro["code"], 0.0), 3)
            metro["scopes"], metro["served_at"] = mix.get(metro["code"], ({}, {}))
        lifecycle = {u["code"]: u for u in plane.units()}
        for pop in status["pops"]:
            for code, unit in pop["units"].items():
                unit["lifecycle"] = lifecycle.get(code, {}).get("state")
                unit["out"] = pop["units_out"].get(code)
            pop.pop("models", None)  # per-model detail is on /api/status; the page shows units
            # Addresses of agents and of units' telemetry services are for the admin API only (/api/status).
            pop.pop("url", None)
            if not authorised:
                pop.pop("pid", None)
            for unit in pop["units"].values():
                unit.pop("redfish", None)
                unit.pop("dcgm", None)
        drills = plane.drills(10)  # newest first
        audit = plane.audit_tail(AUDIT_TAIL)  # newest first
        return {
            "at": self.clock(),
            "snapshot_version": status["snapshot_version"],
            "admin_token_required": plane.admin_token is not None,
            "metros": status["metros"],
            "pops": status["pops"],
            "units": list(lifecycle.values()),
            "drains": status["drains"],
            "drills": drills,
            "audit": audit if authorised else None,
            "scenarios": plane.scenario_summary,
        }

    async def _page(self, _: web.Request) -> web.StreamResponse:
        return self._file(STATIC / "dashboard.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        path = (STATIC / request.match_info["path"]).resolve()
        if not path.is_relative_to(STATIC) or not path.is_file():
            raise web.HTTPNotFound()
        return self._file(path)

    def _file(self, path: Path) -> web.Response:
        return web.Response(
            body=path.read_bytes(),
            content_type=TYPES.get(path.suffix, "application/octet-stream"),
            headers={
                "Content-Security-Policy": CSP,
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
            },
        )

    async def _state(self, request: web.Request) -> web.Response:
        state = self.state(authorised(request, self.plane.admin_token))
        return web.Response(body=orjson.dumps(state), content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """The dashboard's state as server-sent events: at once, on every change the control plane publishes,
        and at least every PUSH_SECONDS."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        allowed = authorised(request, self.plane.admin_token)
        try:
            while not self._closing.is_set():
                changed = self.plane.changes
                await response.write(b"event: state\ndata: " + orjson.dumps(self.state(allowed)) + b"\n\n")
                waits = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(self._closing.wait())]
                try:
                    await asyncio.wait(waits, timeout=PUSH_SECONDS, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
        except ConnectionError:
            pass  # the page went away
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response


def with_dashboard(plane: ControlPlane) -> ControlPlane:
    """``plane``, serving the dashboard at / beside its API."""
    plane.mount(Dashboard(plane.view()).routes)
    return plane
