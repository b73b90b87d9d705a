"""The control plane's HTTP API under /api/, and the dashboard at /."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from edgeplane._errors import BackendError
from edgeplane.catalog import DEFAULT_OUTPUT_TOKENS
from edgeplane.control import _bodies as bodies
from edgeplane.control._drills import DemandBook, DrillRunner, Traffic
from edgeplane.control._errors import DrainRefused, PlacementRefused, UnknownTarget
from edgeplane.control._reports import summarise_scenarios
from edgeplane.control._state import FleetState
from edgeplane.control._store import AuditRecord, StoreError
from edgeplane.control._view import ControlView
from edgeplane.faults import CATALOGUE
from edgeplane.routing import DEFAULT_PROMPT_TOKENS, SiteState
from edgeplane.tenants import WINDOW_SECONDS, LeaseBook
from edgeplane.units import LifecycleError
from edgeplane.web import (
    PROBE_INTERVAL_SECONDS,
    RELAYED_HEADER,
    Handler,
    HttpClient,
    actor,
    admin,
    browser_guard,
    decode,
    error_response,
    json_errors,
    json_response,
    parse,
    probe_sites,
    read_body,
    serve,
    supervised,
)

log = logging.getLogger("edgeplane.control")

TICK_SECONDS = 0.25
MAX_WAIT_SECONDS = 30.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@web.middleware
async def store_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A store that cannot be written (a full disk) answers what happened, not a bare 500."""
    try:
        return await handler(request)
    except StoreError as error:
        log.error("%s %s: %s", request.method, request.path, error)
        status, code = (507, "store_full") if error.full else (503, "store_unavailable")
        return error_response(status, f"Nothing was changed: {error}.", type="server_error", code=code)


class ControlPlane:
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
        self._client = HttpClient(connect_timeout_seconds=1.0)
        self.traffic = Traffic()
        self.demand = DemandBook()
        self.leases = LeaseBook(limit_window_seconds)
        self.drills = DrillRunner(state, self.traffic, self._publish)
        # The planner's latest report, as `plan scenarios --publish` sent it, and its summary for the dashboard.
        self.scenario_report: dict[str, Any] | None = None
        self.scenario_summary: dict[str, Any] | None = None
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
            middlewares=[json_errors, browser_guard(admin_token=self.admin_token), store_errors],
        )
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/fleet", self._fleet)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/route", self._route)
        app.router.add_get("/api/drains", self._drains)
        app.router.add_post("/api/drains", self._drain)
        app.router.add_delete("/api/drains/{kind}/{code}", self._undrain)
        app.router.add_get("/api/audit", self._audit)
        app.router.add_post("/api/agents/{pop}/report", self._report)
        app.router.add_post("/api/gateways/report", self._gateway_report)
        app.router.add_get("/api/keys", self._list_keys)
        app.router.add_post("/api/keys", self._create_key)
        app.router.add_delete("/api/keys/{id}", self._revoke_key)
        app.router.add_get("/api/keys/table", self._key_table)
        app.router.add_post("/api/leases", self._lease)
        app.router.add_get("/api/drills", self._list_drills)
        app.router.add_post("/api/drills", self._start_drill)
        app.router.add_get("/api/drills/{id}", self._get_drill)
        app.router.add_get("/api/faults", self._faults)
        app.router.add_post("/api/faults", self._set_fault)
        app.router.add_delete("/api/faults/{pop}", self._clear_fault)
        app.router.add_get("/api/demand", self._observed_demand)
        app.router.add_get("/api/placement", self._placement)
        app.router.add_post("/api/placement", self._apply_placement)
        app.router.add_get("/api/bgp", self._bgp)
        app.router.add_get("/api/bgp/intents", self._bgp_intents)
        app.router.add_post("/api/bgp/actions", self._bgp_action)
        app.router.add_get("/api/units", self._units)
        app.router.add_post("/api/units", self._order_unit)
        app.router.add_get("/api/units/{code}", self._unit)
        app.router.add_post("/api/units/{code}/state", self._set_unit_state)
        app.router.add_get("/api/plan/scenarios", self._scenarios)
        app.router.add_post("/api/plan/scenarios", self._publish_scenarios)
        for mount in self._mounts:
            mount(app)
        return app

    @property
    def changes(self) -> asyncio.Event:
        """Set at the next published change (a new event each time)."""
        return self._changed

    # -- publishing ---------------------------------------------------------------------------
    def _publish(self) -> None:
        if self.state.refresh():
            self._state_moved()
        if self.state.refresh_edge():
            self._edge_moved()

    def _state_moved(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _edge_moved(self) -> None:
        changed, self._edge_changed = self._edge_changed, asyncio.Event()
        changed.set()

    async def probe_forever(self) -> None:
        """Active probes of every site, with the same health logic the gateways run."""
        while self.probe_interval_seconds is not None:
            await probe_sites(self.state.health, self._client, self.state.snapshot.sites)
            self._publish()
            await asyncio.sleep(self.probe_interval_seconds)

    async def tick_forever(self) -> None:
        """Notices agents that stopped reporting, and publishes load changes."""
        while True:
            self._publish()
            await asyncio.sleep(TICK_SECONDS)

    # -- guards -------------------------------------------------------------------------------
    @staticmethod
    def _who(request: web.Request) -> str:
        return actor(request)

    # -- handlers -----------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "snapshot_version": self.state.snapshot.version})

    async def _metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# HELP edgeplane_control_site_state 1 for each PoP's state: serving, degraded, drained or down.",
            "# TYPE edgeplane_control_site_state gauge",
        ]
        for pop, view in self.state.snapshot.sites.items():
            for state in SiteState:
                value = 1 if view.state is state else 0
                lines.append(f'edgeplane_control_site_state{{pop="{pop}",state="{state.value}"}} {value}')
        lines += [
            "# HELP edgeplane_control_snapshot_version Version of the snapshot published to gateways.",
            "# TYPE edgeplane_control_snapshot_version gauge",
            f"edgeplane_control_snapshot_version {self.state.snapshot.version}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _fleet(self, request: web.Request) -> web.Response:
        return json_response({"digest": self.state.digest, "fleet": self.state.fleet.model_dump(mode="json")})

    async def _long_poll(
        self, request: web.Request, version: Callable[[], int], changed: Callable[[], asyncio.Event]
    ) -> web.Response | None:
        """Hold a request asking for a version past `after` for up to `wait` seconds, until it is published.
        ``changed`` is read when waiting starts: each publication replaces the event. A bad query: a 400."""
        try:
            after = int(request.query.get("after", "0"))
            wait = min(MAX_WAIT_SECONDS, float(request.query.get("wait", "0")))
        except ValueError:
            return error_response(400, "`after` must be an integer and `wait` a number.", type="invalid_request_error")
        if version() <= after and wait > 0:
            try:
                async with asyncio.timeout(wait):
                    await changed().wait()
            except TimeoutError:
                pass
        return None

    @admin  # it holds every agent's address
    async def _snapshot(self, request: web.Request) -> web.Response:
        if self.state.warming_up():
            return error_response(
                503, "The control plane has just started; site agents are still reporting.", type="server_error",
                code="warming_up", headers={"Retry-After": "1"},
            )  # fmt: skip
        refused = await self._long_poll(request, lambda: self.state.snapshot.version, lambda: self._changed)
        return refused or json_response(self.state.snapshot.to_json())

    @admin
    async def _status(self, request: web.Request) -> web.Response:
        status = self.state.status()
        status["drills"] = [d.to_json() for d in self.drills.drills.values() if not d.to_json()["done"]]
        return json_response(status)

    @admin  # the decision names the candidates' addresses
    async def _route(self, request: web.Request) -> web.Response:
        client = request.query.get("client", "")
        model = request.query.get("model", "")
        if not client or not model:
            return error_response(400, "`client` and `model` are required.", type="invalid_request_error")
        try:
            ipaddress.ip_address(client)
        except ValueError:
            return error_response(400, f"`client` is not an IP address: {client!r}", type="invalid_request_error")
        if model not in self.state.fleet.model_by_name:
            return error_response(
                404,
                f"The model `{model}` does not exist.",
                type="invalid_request_error",
                code="model_not_found",
            )
        try:
            prompt_tokens = int(request.query.get("prompt_tokens", DEFAULT_PROMPT_TOKENS))
            output_tokens = int(request.query.get("max_tokens", DEFAULT_OUTPUT_TOKENS))
        except ValueError:
            return error_response(
                400, "`prompt_tokens` and `max_tokens` must be integers.", type="invalid_request_error"
            )
        decision = self.state.router.decide(
            client, model, self.state.snapshot.sites, prompt_tokens=prompt_tokens, output_tokens=output_tokens
        )
        return json_response({"snapshot_version": self.state.snapshot.version, **decision.to_json()})

    async def _drains(self, request: web.Request) -> web.Response:
        return json_response({"drains": [d.to_json() for d in self.state.store.drains()]})

    @admin
    async def _drain(self, request: web.Request) -> web.Response:
        body = parse(bodies.DrainBody, await read_body(request))
        kind, code = body.kind, body.code
        try:
            added = self.state.drain(kind, code, by=self._who(request), reason=body.reason, force=body.force)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        except DrainRefused as refused:
            message = f"Drain of {kind} {code} refused: {'; '.join(refused.reasons)}. To make it possible: "
            message += "; ".join(refused.advice) + "."
            answer = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "drain_refused"},
                "reasons": refused.reasons,
                "advice": refused.advice,
                "check": refused.check.to_json() if refused.check else None,
            }
            return json_response(answer, status=409)
        self._publish()
        log.info("drained %s %s", kind, code)
        return json_response(
            {
                "kind": kind,
                "code": code,
                "drained": True,
                "changed": added,
                "snapshot_version": self.state.snapshot.version,
            }
        )

    @admin
    async def _undrain(self, request: web.Request) -> web.Response:
        kind, code = request.match_info["kind"], request.match_info["code"]
        try:
            removed = self.state.undrain(kind, code, by=self._who(request))
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        self._publish()
        log.info("undrained %s %s", kind, code)
        return json_response(
            {
                "kind": kind,
                "code": code,
                "drained": False,
                "changed": removed,
                "snapshot_version": self.state.snapshot.version,
            }
        )

    @admin
    async def _audit(self, request: web.Request) -> web.Response:
        """The newest records first; ``limit`` of them (100 unless asked, at most 1,000)."""
        limit = request.query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return error_response(400, "`limit` must be an integer from 1 to 1000.", type="invalid_request_error")
        return json_response({"audit": [r.to_json() for r in self.state.store.audit_log(int(limit))]})

    @admin
    async def _report(self, request: web.Request) -> web.Response:
        body = parse(bodies.AgentReport, await read_body(request))
        try:
            self.state.report(request.match_info["pop"], body)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        self._publish()
        # The answer carries what this site should serve: a placement applied since it started reaches it here.
        # And which of its units carry no traffic: the agent sends nothing to their replicas.
        pop = request.match_info["pop"]
        models = self.state.fleet.models_at(pop)
        out = self.state.units_out(pop)
        return json_response({"snapshot_version": self.state.snapshot.version, "models": models, "units_out": out})

    @admin
    async def _gateway_report(self, request: web.Request) -> web.Response:
        body = parse(bodies.GatewayReport, await read_body(request))
        return json_response({"taken": self.traffic.add(body.samples), "demand_rows": self.demand.add(body.demand)})

    async def _observed_demand(self, request: web.Request) -> web.Response:
        try:
            window = float(request.query.get("window", "600"))
            if not window > 0:
                raise ValueError
        except ValueError:
            return error_response(400, "`window` must be a positive number of seconds.", type="invalid_request_error")
        covered, rows = self.demand.observed(window)
        return json_response({"window_seconds": round(covered, 3), "demand": rows})

    @admin
    async def _list_keys(self, request: web.Request) -> web.Response:
        keys = [
            {**k.policy.to_json(), "created_at": k.created_at, "revoked_at": k.revoked_at}
            for k in self.state.store.api_keys()
        ]
        return json_response({"keys": keys})

    @admin
    async def _create_key(self, request: web.Request) -> web.Response:
        body = parse(bodies.KeyBody, await read_body(request))
        try:
            policy, secret = self.state.keys.create(
                body.tenant,
                by=self._who(request),
                continent=body.continent,
                region=body.region,
                rpm=body.rpm,
                tpm=body.tpm,
                models=body.models,
            )
        except ValueError as error:
            return error_response(400, f"Bad key request: {error}", type="invalid_request_error")
        self._publish()
        return json_response({**policy.to_json(), "key": secret}, status=201)

    @admin
    async def _revoke_key(self, request: web.Request) -> web.Response:
        try:
            revoked = self.state.keys.revoke(request.match_info["id"], by=self._who(request))
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        self._publish()
        return json_response({"id": request.match_info["id"], "revoked": True, "changed": revoked})

    @admin
    async def _key_table(self, request: web.Request) -> web.Response:
        return json_response(self.state.keys.table())

    @admin
    async def _lease(self, request: web.Request) -> web.Response:
        """A share of a key's budget for this window, for one gateway to spend locally."""
        key_id = parse(bodies.LeaseBody, await read_body(request)).key_id
        policy = next((k.policy for k in self.state.store.api_keys() if k.policy.id == key_id), None)
        if policy is None or policy.revoked:
            return error_response(404, f"no active key {key_id!r}", type="invalid_request_error", code="not_found")
        grant = self.leases.lease(key_id, policy.rpm, policy.tpm, time.time())
        return json_response(
            {
                "requests": grant.requests,
                "tokens": grant.tokens,
                "window": grant.window,
                "window_ends_in": grant.window_ends_in,
            }
        )

    async def _list_drills(self, request: web.Request) -> web.Response:
        return json_response({"drills": [d.to_json() for d in self.drills.drills.values()]})

    @admin
    async def _start_drill(self, request: web.Request) -> web.Response:
        body = parse(bodies.DrillBody, await read_body(request))
        try:
            drill = self.drills.submit(
                body.metro, body.duration_seconds, body.slo_ttft_ms, self._who(request), body.force
            )
        except KeyError as error:
            return error_response(404, str(error.args[0]), type="invalid_request_error", code="not_found")
        return json_response(drill.to_json(), status=202)

    async def _get_drill(self, request: web.Request) -> web.Response:
        try:
            drill = self.drills.drills[int(request.match_info["id"])]
        except (KeyError, ValueError):
            return error_response(404, "No such drill.", type="invalid_request_error", code="not_found")
        try:
            wait = min(MAX_WAIT_SECONDS, float(request.query.get("wait", "0")))
        except ValueError:
            return error_response(400, "`wait` must be a number of seconds.", type="invalid_request_error")
        if wait > 0 and not drill.to_json()["done"]:
            try:
                async with asyncio.timeout(wait):
                    await self.drills.changed.wait()
            except TimeoutError:
                pass
        return json_response(drill.to_json())

    async def _faults(self, request: web.Request) -> web.Response:
        active = {code: r.fault.model_dump() for code, r in self.state.reports.items() if r.fault is not None}
        catalogue = [{"fault": kind.value, "what": what} for kind, what in CATALOGUE.items()]
        return json_response({"catalogue": catalogue, "active": active})

    async def _relay_fault(
        self, request: web.Request, pop: str, method: str, payload: dict[str, Any] | None
    ) -> web.Response:
        """Pass a fault on to the PoP's site agent, and audit it here whatever the outcome (the agent audits
        only what is asked of it directly)."""
        report = self.state.reports.get(pop)
        if pop not in self.state.fleet.pop_by_code:
            return error_response(404, f"unknown PoP {pop!r}", type="invalid_request_error", code="not_found")
        action = "fault" if method == "POST" else "clear fault"
        fault = payload.get("fault") if payload is not None else None
        if report is None or report.url is None:
            status, data = 409, {"error": {"message": f"the site agent of {pop} has not reported an address"}}
        else:
            headers = {RELAYED_HEADER: "control", "X-Edgeplane-Actor": self._who(request)}
            if self.admin_token:
                headers["Authorization"] = f"Bearer {self.admin_token}"
            try:
                status, data = await self._client.request_json(
                    method, f"{report.url}/api/faults", payload, headers=headers
                )
            except BackendError as error:
                status, data = 502, {"error": {"message": f"cannot reach the site agent of {pop}: {error}"}}
        outcome = "ok" if status == 200 else f"failed ({status})"
        self.state.store.audit(
            AuditRecord(self.state.wall_clock(), self._who(request), action, f"pop {pop}", outcome, {"fault": fault})
        )
        if status != 200:
            message = (data or {}).get("error", {}).get("message", "refused") if isinstance(data, dict) else "refused"
            return error_response(status, str(message), type="invalid_request_error", code="fault_refused")
        log.warning("%s at %s: %s", action, pop, fault or "")
        return json_response(data)

    @admin
    async def _set_fault(self, request: web.Request) -> web.Response:
        body = parse(bodies.FaultBody, await read_body(request))
        return await self._relay_fault(request, body.pop, "POST", body.for_agent())

    @admin
    async def _clear_fault(self, request: web.Request) -> web.Response:
        return await self._relay_fault(request, request.match_info["pop"], "DELETE", None)

    # -- placement ------------------------------------------------------------------------------
    async def _placement(self, request: web.Request) -> web.Response:
        sites = self.state.snapshot.sites
        return json_response(
            {
                "placement": [e.model_dump() for e in self.state.fleet.placement],
                "loaded": {code: sorted(view.models) for code, view in sites.items()},
                "loading": {p: r.loading for p, r in self.state.reports.items() if r.loading},
            }
        )

    @admin
    async def _apply_placement(self, request: web.Request) -> web.Response:
        body = parse(bodies.PlacementBody, await read_body(request))
        entries = [(row.model, row.pop, row.replicas) for row in body.placement]
        try:
            change = self.state.apply_placement(entries, by=self._who(request), force=body.force)
        except PlacementRefused as refused:
            message = f"Placement refused: {'; '.join(refused.reasons)}. Send it with force to apply it anyway."
            answer = {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "placement_refused",
                },
                "reasons": refused.reasons,
                "check": refused.check.to_json() if refused.check else None,
            }
            return json_response(answer, status=409)
        except ValueError as error:
            return error_response(
                400, f"Placement refused: {error}.", type="invalid_request_error", code="bad_placement"
            )
        self._publish()
        log.info("placement applied: %s", change)
        return json_response({"applied": len(entries), **change, "snapshot_version": self.state.snapshot.version})

    # -- the network edge -----------------------------------------------------------------------
    async def _bgp(self, request: web.Request) -> web.Response:
        edge = self.state.edge
        return json_response(
            {
                "version": self.state.edge_version,
                "asn": self.state.fleet.asn,
                "graceful_shutdown_seconds": self.state.graceful_shutdown_seconds,
                "pops": [e.to_json() for e in edge.pops.values()],
                "withdrawn_metros": sorted(edge.withdrawn_metros()),
                "held": list(edge.held),
                "actions": {
                    pop: {str(asn): ":".join(map(str, c)) for asn, c in actions.items()}
                    for pop, actions in self.state.bgp_actions.items()
                    if actions
                },
            }
        )

    async def _bgp_intents(self, request: web.Request) -> web.Response:
        pop = request.query.get("pop", "")
        if pop not in self.state.fleet.pop_by_code:
            known = ", ".join(sorted(self.state.fleet.pop_by_code))
            return error_response(
                404, f"Unknown PoP {pop!r}; expected one of: {known}.", type="invalid_request_error", code="not_found"
            )
        refused = await self._long_poll(request, lambda: self.state.edge_version, lambda: self._edge_changed)
        if refused is not None:
            return refused
        return json_response(
            {
                "version": self.state.edge_version,
                "pop": pop,
                "asn": self.state.fleet.asn,
                "state": self.state.edge.pops[pop].to_json(),
                "intents": [i.to_json() for i in self.state.pop_intents(pop)],
            }
        )

    @admin
    async def _bgp_action(self, request: web.Request) -> web.Response:
        body = parse(bodies.BgpActionBody, await read_body(request))
        pop, transit_asn, action = body.pop, body.transit_asn, body.action
        try:
            self.state.set_bgp_action(pop, transit_asn, action, by=self._who(request))
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        except ValueError as error:
            return error_response(400, str(error), type="invalid_request_error")
        self._edge_moved()
        return json_response(
            {"pop": pop, "transit_asn": transit_asn, "action": action, "version": self.state.edge_version}
        )

    async def _units(self, request: web.Request) -> web.Response:
        return json_response({"units": [u.to_json() for u in self.state.unit_book.units()]})

    async def _unit(self, request: web.Request) -> web.Response:
        try:
            return json_response(self.state.unit_book.unit(request.match_info["code"]).to_json())
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")

    @admin
    async def _set_unit_state(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        body = parse(bodies.UnitStateBody, await read_body(request))
        state, note, acceptance = body.state, body.note, body.acceptance
        try:
            unit = self.state.unit_book.set_state(code, state, by=self._who(request), note=note, acceptance=acceptance)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        except LifecycleError as error:
            return error_response(409, str(error), type="invalid_request_error", code="lifecycle_refused")
        self._publish()
        log.info("unit %s is now %s", code, unit.state)
        return json_response(unit.to_json())

    @admin
    async def _order_unit(self, request: web.Request) -> web.Response:
        body = parse(bodies.UnitOrderBody, await read_body(request))
        pop, note, due = body.pop, body.note, body.due
        try:
            unit = self.state.unit_book.order(pop, by=self._who(request), due=due, note=note)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        log.info("unit %s ordered for %s", unit.code, pop)
        return json_response(unit.to_json(), status=201)

    # -- the planner's scenario report ----------------------------------------------------------
    async def _scenarios(self, request: web.Request) -> web.Response:
        return json_response({"report": self.scenario_report})

    @admin
    async def _publish_scenarios(self, request: web.Request) -> web.Response:
        data = decode(await read_body(request))
        body = parse(bodies.ScenariosBody, data)
        lines = summarise_scenarios(body.scenarios)
        rows = data["scenarios"]  # kept as they came (checked): the report is the planner's
        who = self._who(request)
        about = {"published_at": self.state.wall_clock(), "by": who, "title": body.title}
        self.scenario_report = {**about, "scenarios": rows}
        self.scenario_summary = {**about, "lines": lines}
        self.state.store.audit(
            AuditRecord(self.state.wall_clock(), who, "publish-scenarios", "planner", "ok", {"scenarios": len(rows)})
        )
        self._state_moved()
        return json_response({"scenarios": len(rows)})

    async def run(self, host: str, port: int, *, on_ready: Any = None, stop: asyncio.Event | None = None) -> None:
        if not is_loopback(host) and not self.admin_token:
            raise ValueError(
                f"the control plane listens on {host}, beyond loopback: set an admin token"
                " (--admin-token or EDGEPLANE_ADMIN_TOKEN)"
            )
        try:
            await serve(
                self.app(),
                host,
                port,
                on_ready=on_ready,
                background=lambda url: [
                    supervised("control plane ticks", self.tick_forever),
                    supervised("control plane probes", self.probe_forever),
                    supervised("drills", self.drills.run_forever),
                ],
                stop=stop,
            )
        finally:
            await self._client.close()
            self.state.store.close()
