"""Injected faults: the catalogue, those in force at each PoP, and setting or clearing one, passed on to the
PoP's site agent and audited here whatever the outcome."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from edgeplane._errors import BackendError
from edgeplane.control import _bodies as bodies
from edgeplane.control._store import AuditRecord
from edgeplane.control.api._resource import Resource
from edgeplane.faults import CATALOGUE
from edgeplane.web import RELAYED_HEADER, actor, admin, error_response, json_response, parse, read_body

log = logging.getLogger("edgeplane.control")


class FaultsApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/faults", self.list_faults),
            web.post("/api/faults", self.set_fault),
            web.delete("/api/faults/{pop}", self.clear),
        ]

    async def list_faults(self, request: web.Request) -> web.Response:
        reports = self.state.agents.reports
        active = {code: r.fault.model_dump() for code, r in reports.items() if r.fault is not None}
        catalogue = [{"fault": kind.value, "what": what} for kind, what in CATALOGUE.items()]
        return json_response({"catalogue": catalogue, "active": active})

    @admin
    async def set_fault(self, request: web.Request) -> web.Response:
        body = parse(bodies.FaultBody, await read_body(request))
        return await self._relay(request, body.pop, "POST", body.for_agent())

    @admin
    async def clear(self, request: web.Request) -> web.Response:
        return await self._relay(request, request.match_info["pop"], "DELETE", None)

    async def _relay(self, request: web.Request, pop: str, method: str, payload: dict[str, Any] | None) -> web.Response:
        """Pass a fault on to the PoP's site agent, and audit it here whatever the outcome (the agent audits
        only what is asked of it directly)."""
        report = self.state.agents.get(pop)
        if pop not in self.state.fleet.pop_by_code:
            return error_response(404, f"unknown PoP {pop!r}", type="invalid_request_error", code="not_found")
        action = "fault" if method == "POST" else "clear fault"
        fault = payload.get("fault") if payload is not None else None
        if report is None or report.url is None:
            status, data = 409, {"error": {"message": f"the site agent of {pop} has not reported an address"}}
        else:
            headers = {RELAYED_HEADER: "control", "X-Edgeplane-Actor": actor(request)}
            if self.admin_token:
                headers["Authorization"] = f"Bearer {self.admin_token}"
            try:
                status, data = await self.plane.client.request_json(
                    method, f"{report.url}/api/faults", payload, headers=headers
                )
            except BackendError as error:
                status, data = 502, {"error": {"message": f"cannot reach the site agent of {pop}: {error}"}}
        outcome = "ok" if status == 200 else f"failed ({status})"
        self.state.store.audit(
            AuditRecord(self.state.wall_clock(), actor(request), action, f"pop {pop}", outcome, {"fault": fault})
        )
        if status != 200:
            message = (data or {}).get("error", {}).get("message", "refused") if isinstance(data, dict) else "refused"
            return error_response(status, str(message), type="invalid_request_error", code="fault_refused")
        log.warning("%s at %s: %s", action, pop, fault or "")
        return json_response(data)
