"""The control plane's HTTP API under /api/, and the dashboard at /."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from edgeplane.control._demand import DemandBook, Traffic
from edgeplane.control._drills import DrillRunner
from edgeplane.control._errors import UnknownTarget
from edgeplane.control._fabric import FabricBook
from edgeplane.control._replicas import Replication
from edgeplane.control._reports import ScenarioBoard
from edgeplane.control._state import FleetState
from edgeplane.control._store import StoreError
from edgeplane.control._view import ControlView
from edgeplane.control.api import RESOURCES
from edgeplane.tenants import WINDOW_SECONDS, LeaseBook
from edgeplane.web import (
    PROBE_INTERVAL_SECONDS,
    Handler,
    HttpClient,
    browser_guard,
    error_response,
    json_errors,
    probe_sites,
    serve,
    supervised,
)

log = logging.getLogger("edgeplane.control")

TICK_SECONDS = 0.25


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def state_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What any handler may meet in the state, answered once for all: a target the fleet does not know (404),
    a store that cannot be written (a full disk: 507, not a bare 500)."""
    try:
        return await handler(request)
    except UnknownTarget as error:
        return error_response(404, str(error), type="invalid_request_error", code="not_found")
    except StoreError as error:
        log.error("%s %s: %s", request.method, request.path, error)
        status, code = (507, "store_full") if error.full else (503, "store_unavailable")
        said = (
            f"The store cannot be read: {error}."
            if request.method in ("GET", "HEAD")
            else f"Nothing was changed: {error}."
        )
        return error_response(status, said, type="server_error", code=code)


class ControlPlane:
    """The control plane's service: the state and the books beside it (observed traffic and demand, leases,
    drills, the planner's report), the API's resources (control/api/), publication of every change to the
    long polls of gateways and speakers, and the background jobs (ticks, probes, drills)."""

    def __init__(
        self,
        state: FleetState,
        *,
        admin_token: str | None = None,
        probe_interval_seconds: float | None = PROBE_INTERVAL_SECONDS,
        limit_window_seconds: float = WINDOW_SECONDS,
    ) -> None:
        self.state = state
        self.probe_interval_seconds = probe_interval_seconds  # None: no active probes
        self.admin_token = admin_token
        self._changed = asyncio.Event()
        self._edge_changed = asyncio.Event()
        self.client = HttpClient(connect_timeout_seconds=1.0)
        self.traffic = Traffic()
        self.demand = DemandBook()
        self.leases = LeaseBook(limit_window_seconds, shared=state.store.spend if state.store.replicated else None)
        self.drills = DrillRunner(state, self.traffic, self.publish)
        self.scenarios = ScenarioBoard(state.store, state.wall_clock)
        self.fabric = FabricBook(state)
        state.drains.cold = self.fabric.cold
        self.replication = Replication(state, self.publish)
        self.replication.client = self.client
        if state.store.replicated:  # drills a lost leader left behind are rolled back by the next
            self.replication.on_lead = self.drills.release_orphans
        self._mounts: list[Callable[[web.Application], None]] = []

    def __repr__(self) -> str:
        return f"<ControlPlane {self.state!r}>"

    def mount(self, routes: Callable[[web.Application], None]) -> None:
        """Serve ``routes`` beside the API (a face such as the dashboard adds its own; the API knows none)."""
        self._mounts.append(routes)

    def view(self) -> ControlView:
        """What a face may read of this control plane."""
        return ControlView(self)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=1024 * 1024,
            middlewares=[json_errors, browser_guard(admin_token=self.admin_token), state_errors],
        )
        for resource in RESOURCES:
            app.add_routes(resource(self).routes())
        for mount in self._mounts:
            mount(app)
        return app

    @property
    def changes(self) -> asyncio.Event:
        """Set at the next published change (a new event each time)."""
        return self._changed

    @property
    def edge_changes(self) -> asyncio.Event:
        """Set at the next change of what the PoPs announce (a new event each time)."""
        return self._edge_changed

    # -- publishing ---------------------------------------------------------------------------
    def publish(self) -> None:
        """Publish what changed: a new snapshot for gateways, new intents for speakers."""
        if self.state.refresh():
            self.state_moved()
        if self.state.refresh_edge():
            self.edge_moved()

    def state_moved(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def edge_moved(self) -> None:
        changed, self._edge_changed = self._edge_changed, asyncio.Event()
        changed.set()

    async def probe_forever(self) -> None:
        """Active probes of every site, with the same health logic the gateways run."""
        while self.probe_interval_seconds is not None:
            await probe_sites(self.state.health, self.client, self.state.snapshot.sites)
            self.publish()
            await asyncio.sleep(self.probe_interval_seconds)

    async def tick_forever(self) -> None:
        """Notices agents that stopped reporting, and publishes load changes."""
        while True:
            self.publish()
            await asyncio.sleep(TICK_SECONDS)

    async def run(self, host: str, port: int, *, on_ready: Any = None, stop: asyncio.Event | None = None) -> None:
        if not is_loopback(host) and not self.admin_token:
            raise ValueError(
                f"the control plane listens on {host}, beyond loopback: set an admin token"
                " (--admin-token or EDGEPLANE_ADMIN_TOKEN)"
            )

        def background(url: str) -> list[Callable[[], Coroutine[Any, Any, None]]]:
            self.replication.url = url
            self.replication.start(asyncio.get_running_loop())
            return [
                supervised("control plane ticks", self.tick_forever),
                supervised("control plane probes", self.probe_forever),
                supervised("drills", self.drills.run_forever),
                supervised("replication", self.replication.run_forever),
            ]

        try:
            await serve(self.app(), host, port, on_ready=on_ready, background=background, stop=stop)
        finally:
            self.replication.stop()
            await self.client.close()
            self.state.store.close()
