"""Modular units: every unit and its lifecycle state, ordering one for a PoP, and moving one along its
lifecycle (409 where the lifecycle does not allow the move)."""

from __future__ import annotations

import logging

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control.api._resource import Resource
from edgeplane.units import LifecycleError
from edgeplane.web import actor, admin, error_response, json_response, parse, read_body

log = logging.getLogger("edgeplane.control")


class UnitsApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/units", self.list_units),
            web.post("/api/units", self.order),
            web.get("/api/units/{code}", self.unit),
            web.post("/api/units/{code}/state", self.set_state),
        ]

    async def list_units(self, request: web.Request) -> web.Response:
        return json_response({"units": [u.to_json() for u in self.state.unit_book.units()]})

    async def unit(self, request: web.Request) -> web.Response:
        return json_response(self.state.unit_book.unit(request.match_info["code"]).to_json())

    @admin
    async def set_state(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        body = parse(bodies.UnitStateBody, await read_body(request))
        try:
            unit = self.state.unit_book.set_state(
                code, body.state, by=actor(request), note=body.note, acceptance=body.acceptance
            )
        except LifecycleError as error:
            return error_response(409, str(error), type="invalid_request_error", code="lifecycle_refused")
        self.plane.publish()
        log.info("unit %s is now %s", code, unit.state)
        return json_response(unit.to_json())

    @admin
    async def order(self, request: web.Request) -> web.Response:
        body = parse(bodies.UnitOrderBody, await read_body(request))
        unit = self.state.unit_book.order(body.pop, by=actor(request), due=body.due, note=body.note)
        log.info("unit %s ordered for %s", unit.code, body.pop)
        return json_response(unit.to_json(), status=201)
