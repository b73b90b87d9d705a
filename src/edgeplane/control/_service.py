"""The control plane's HTTP API under /api/, and the dashboard at /."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from edgeplane._errors import BackendError
from edgeplane._http import HttpClient
from edgeplane._probe import PROBE_INTERVAL_SECONDS, probe_sites
from edgeplane._service import error_response, json_response, serve
from edgeplane.catalog import DEFAULT_OUTPUT_TOKENS
from edgeplane.control._dashboard import Dashboard, summarise_scenarios
from edgeplane.control._drills import DemandBook, DrillRunner, Traffic
from edgeplane.control._state import DrainRefused, FleetState, UnknownTarget
from edgeplane.control._store import AuditRecord
from edgeplane.faults import CATALOGUE
from edgeplane.routing import DEFAULT_PROMPT_TOKENS, SiteState
from edgeplane.tenants import WINDOW_SECONDS, LeaseBook
from edgeplane.units import LifecycleError

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

    def __repr__(self) -> str:
        return f"<ControlPlane {self.state!r}>"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
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
        Dashboard(self).routes(app)
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
    def _authorised(self, request: web.Request) -> bool:
        if self.admin_token is None:
            return True
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self.admin_token.encode())

    def _who(self, request: web.Request) -> str:
        return request.headers.get("X-Edgeplane-Actor", "") or f"api@{request.remote}"

    @staticmethod
    def _refused() -> web.Response:
        return error_response(
            401, "This action needs the admin token.", type="authentication_error", code="unauthorized"
        )

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

    async def _snapshot(self, request: web.Request) -> web.Response:
        refused = await self._long_poll(request, lambda: self.state.snapshot.version, lambda: self._changed)
        return refused or json_response(self.state.snapshot.to_json())

    async def _status(self, request: web.Request) -> web.Response:
        status = self.state.status()
        status["drills"] = [d.to_json() for d in self.drills.drills.values() if not d.to_json()["done"]]
        return json_response(status)

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

    async def _drain(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            kind, code = str(body["kind"]), str(body["code"])
            reason = str(body.get("reason", ""))
            force = bool(body.get("force", False))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error_response(
                400, 'Expected {"kind": "metro"|"pop"|"unit", "code": ...}.', type="invalid_request_error"
            )
        try:
            added = self.state.drain(kind, code, by=self._who(request), reason=reason, force=force)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        except DrainRefused as refused:
            message = f"Drain of {kind} {code} refused: {'; '.join(refused.reasons)}. To make it possible: "
            message += "; ".join(refused.advice) + "."
            body = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "drain_refused"},
                "reasons": refused.reasons,
                "advice": refused.advice,
                "check": refused.check.to_json() if refused.check else None,
            }
            return json_response(body, status=409)
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

    async def _undrain(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
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

    async def _audit(self, request: web.Request) -> web.Response:
        return json_response({"audit": [r.to_json() for r in self.state.store.audit_log()]})

    async def _report(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            data = orjson.loads(await request.read())
            if not isinstance(data, dict):
                raise ValueError("expected an object")
            self.state.report(request.match_info["pop"], data)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        except (orjson.JSONDecodeError, ValueError, TypeError) as error:
            return error_response(400, f"Bad report: {error}", type="invalid_request_error")
        self._publish()
        # The answer carries what this site should serve: a placement applied since it started reaches it here.
        # And which of its units carry no traffic: the agent sends nothing to their replicas.
        pop = request.match_info["pop"]
        models = self.state.fleet.models_at(pop)
        out = self.state.units_out(pop)
        return json_response({"snapshot_version": self.state.snapshot.version, "models": models, "units_out": out})

    async def _gateway_report(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            data = orjson.loads(await request.read())
            samples = data["samples"]
            demand = data.get("demand", [])
            if not isinstance(samples, list) or not isinstance(demand, list):
                raise TypeError("samples and demand must be lists")
        except (orjson.JSONDecodeError, KeyError, TypeError) as error:
            return error_response(400, f"Bad report: {error}", type="invalid_request_error")
        return json_response({"taken": self.traffic.add(samples), "demand_rows": self.demand.add(demand)})

    async def _observed_demand(self, request: web.Request) -> web.Response:
        try:
            window = float(request.query.get("window", "600"))
            if not window > 0:
                raise ValueError
        except ValueError:
            return error_response(400, "`window` must be a positive number of seconds.", type="invalid_request_error")
        covered, rows = self.demand.observed(window)
        return json_response({"window_seconds": round(covered, 3), "demand": rows})

    async def _list_keys(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        keys = [
            {**k.policy.to_json(), "created_at": k.created_at, "revoked_at": k.revoked_at}
            for k in self.state.store.api_keys()
        ]
        return json_response({"keys": keys})

    async def _create_key(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            if not isinstance(body, dict):
                raise TypeError("expected an object")
            models = body.get("models")
            if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
                raise TypeError("models must be a list of names")
            limits = {name: body.get(name) for name in ("rpm", "tpm")}
            for name, value in limits.items():
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                    raise TypeError(f"{name} must be an integer")
            policy, secret = self.state.create_key(
                str(body.get("tenant") or ""),
                by=self._who(request),
                continent=body.get("continent") or None,
                region=body.get("region") or None,
                rpm=limits["rpm"],
                tpm=limits["tpm"],
                models=models,
            )
        except (orjson.JSONDecodeError, TypeError, ValueError) as error:
            return error_response(400, f"Bad key request: {error}", type="invalid_request_error")
        self._publish()
        return json_response({**policy.to_json(), "key": secret}, status=201)

    async def _revoke_key(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            revoked = self.state.revoke_key(request.match_info["id"], by=self._who(request))
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        self._publish()
        return json_response({"id": request.match_info["id"], "revoked": True, "changed": revoked})

    async def _key_table(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        return json_response(self.state.key_table())

    async def _lease(self, request: web.Request) -> web.Response:
        """A share of a key's budget for this window, for one gateway to spend locally."""
        if not self._authorised(request):
            return self._refused()
        try:
            key_id = str(orjson.loads(await request.read())["key_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error_response(400, 'Expected {"key_id": ...}.', type="invalid_request_error")
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

    async def _start_drill(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            metro = str(body["metro"])
            duration = float(body.get("duration_seconds", 60.0))
            slo = body.get("slo_ttft_ms")
            slo = float(slo) if slo is not None else None
            if duration <= 0 or (slo is not None and slo <= 0):
                raise ValueError("duration_seconds and slo_ttft_ms must be positive")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            return error_response(
                400,
                f'Expected {{"metro": CODE, "duration_seconds": N, "slo_ttft_ms": N}} ({error}).',
                type="invalid_request_error",
            )
        try:
            drill = self.drills.submit(metro, duration, slo, self._who(request), bool(body.get("force", False)))
        except KeyError as error:
            return error_response(404, str(error.args[0]), type="invalid_request_error", code="not_found")
        return json_response(drill.to_json(), status=202)

    async def _get_drill(self, request: web.Request) -> web.Response:
        try:
            drill = self.drills.drills[int(request.match_info["id"])]
            wait = min(MAX_WAIT_SECONDS, float(request.query.get("wait", "0")))
        except (KeyError, ValueError):
            return error_response(404, "No such drill.", type="invalid_request_error", code="not_found")
        if wait > 0 and not drill.to_json()["done"]:
            try:
                async with asyncio.timeout(wait):
                    await self.drills.changed.wait()
            except TimeoutError:
                pass
        return json_response(drill.to_json())

    async def _faults(self, request: web.Request) -> web.Response:
        active = {code: report.fault for code, report in self.state.reports.items() if report.fault}
        catalogue = [{"fault": kind.value, "what": what} for kind, what in CATALOGUE.items()]
        return json_response({"catalogue": catalogue, "active": active})

    async def _relay_fault(self, request: web.Request, pop: str, method: str, payload: Any) -> web.Response:
        """Pass a fault on to the PoP's site agent, and audit it whatever the outcome."""
        report = self.state.reports.get(pop)
        if pop not in self.state.fleet.pop_by_code:
            return error_response(404, f"unknown PoP {pop!r}", type="invalid_request_error", code="not_found")
        action = "fault" if method == "POST" else "clear fault"
        fault = payload.get("fault") if isinstance(payload, dict) else None
        if report is None or report.url is None:
            status, data = 409, {"error": {"message": f"the site agent of {pop} has not reported an address"}}
        else:
            try:
                status, data = await self._client.request_json(method, f"{report.url}/api/faults", payload)
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

    async def _set_fault(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            pop = str(body.pop("pop"))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return error_response(400, 'Expected {"pop": CODE, "fault": NAME, ...}.', type="invalid_request_error")
        return await self._relay_fault(request, pop, "POST", body)

    async def _clear_fault(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
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

    async def _apply_placement(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            entries = [(str(e["model"]), str(e["pop"]), int(e["replicas"])) for e in body["placement"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return error_response(
                400,
                'Expected {"placement": [{"model": ..., "pop": ..., "replicas": N}, ...]}.',
                type="invalid_request_error",
            )
        try:
            change = self.state.apply_placement(entries, by=self._who(request))
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

    async def _bgp_action(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            pop, transit_asn, action = str(body["pop"]), int(body["transit_asn"]), str(body["action"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return error_response(
                400,
                'Expected {"pop": CODE, "transit_asn": N, "action": "prepend-1".."prepend-3"|"no-export"|"none"}.',
                type="invalid_request_error",
            )
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
        return json_response({"units": [u.to_json() for u in self.state.units()]})

    async def _unit(self, request: web.Request) -> web.Response:
        try:
            return json_response(self.state.unit(request.match_info["code"]).to_json())
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")

    async def _set_unit_state(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        code = request.match_info["code"]
        try:
            body = orjson.loads(await request.read())
            state, note, acceptance = str(body["state"]), str(body.get("note", "")), body.get("acceptance")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return error_response(
                400, 'Expected {"state": STATE, "note": TEXT, "acceptance": {"passed": true, ...}}.',
                type="invalid_request_error",
            )  # fmt: skip
        try:
            unit = self.state.set_unit_state(code, state, by=self._who(request), note=note, acceptance=acceptance)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        except LifecycleError as error:
            return error_response(409, str(error), type="invalid_request_error", code="lifecycle_refused")
        self._publish()
        log.info("unit %s is now %s", code, unit.state)
        return json_response(unit.to_json())

    async def _order_unit(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            pop, note, due = str(body["pop"]), str(body.get("note", "")), body.get("due")
            due = float(due) if due is not None else None
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return error_response(
                400, 'Expected {"pop": CODE, "note": TEXT, "due": UNIX_SECONDS}.', type="invalid_request_error"
            )
        try:
            unit = self.state.order_unit(pop, by=self._who(request), due=due, note=note)
        except UnknownTarget as error:
            return error_response(404, str(error), type="invalid_request_error", code="not_found")
        log.info("unit %s ordered for %s", unit.code, pop)
        return json_response(unit.to_json(), status=201)

    # -- the planner's scenario report ----------------------------------------------------------
    async def _scenarios(self, request: web.Request) -> web.Response:
        return json_response({"report": self.scenario_report})

    async def _publish_scenarios(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._refused()
        try:
            body = orjson.loads(await request.read())
            rows = body["scenarios"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) and "scenario" in r for r in rows):
                raise TypeError("scenarios must be a list of objects with a `scenario`")
            lines = summarise_scenarios(rows)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            return error_response(
                400, f'Expected {{"scenarios": [...]}} as `plan scenarios --json` prints ({error}).',
                type="invalid_request_error",
            )  # fmt: skip
        who = self._who(request)
        about = {"published_at": self.state.wall_clock(), "by": who, "title": str(body.get("title", ""))}
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
                background=lambda url: [self.tick_forever, self.probe_forever, self.drills.run_forever],
                stop=stop,
            )
        finally:
            await self._client.close()
            self.state.store.close()
