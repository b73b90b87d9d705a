"""Observed demand, as the gateways report it: samples of where each client metro was served (the scope mix
and drills' moved traffic) and requests per model (what the planner can plan for)."""

from __future__ import annotations

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control.api._resource import Resource
from edgeplane.web import admin, error_response, json_response, parse, read_body


class TrafficApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/gateways/report", self.gateway_report), web.get("/api/demand", self.observed)]

    @admin
    async def gateway_report(self, request: web.Request) -> web.Response:
        body = parse(bodies.GatewayReport, await read_body(request))
        self.plane.replication.pass_on(body.model_dump(mode="json"))  # the leader judges drills on every sample
        taken = self.plane.traffic.add(body.samples)
        return json_response({"taken": taken, "demand_rows": self.plane.demand.add(body.demand)})

    async def observed(self, request: web.Request) -> web.Response:
        try:
            window = float(request.query.get("window", "600"))
            if not window > 0:
                raise ValueError
        except ValueError:
            return error_response(400, "`window` must be a positive number of seconds.", type="invalid_request_error")
        covered, rows = self.plane.demand.observed(window)
        return json_response({"window_seconds": round(covered, 3), "demand": rows})
