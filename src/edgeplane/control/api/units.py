"""Modular units: every unit and its lifecycle state (or a PoP's, or those in one state), ordering one for a PoP,
and moving one along its lifecycle (400 for a state that does not exist, 409 where the lifecycle does not allow
the move)."""

from __future__ import annotations

import logging

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control._errors import UnknownTarget
from edgeplane.control.api._resource import Resource
from edgeplane.units import LifecycleError, UnitState
from edgeplane.web import ApiError, actor, admin, error_response, json_response, parse, read_body

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
        """Every unit, or those of ``pop`` and in ``state``: a code that does not exist is refused, not
        answered with no units (a typo would read as an empty PoP)."""
        pop, state = request.query.get("pop"), request.query.get("state")
        known = self.state.fleet.pop_by_code
        if pop is not None and pop not in known:
            raise UnknownTarget(f"unknown PoP {pop!r}; expected one of: {', '.join(sorted(known))}")
        wanted = _unit_state(state) if state is not None else None
        units = [
            u for u in self.state.unit_book.units()
            if (pop is None or u.pop == pop) and (wanted is None or u.state is wanted)
        ]  # fmt: skip
        return json_response({"units": [u.to_json() for u in units]})

    async def unit(self, request: web.Request) -> web.Response:
        return json_response(self.state.unit_book.unit(request.match_info["code"]).to_json())

    @admin
    async def set_state(self, request: web.Request) -> web.Response:
        code = request.match_info["code"]
        body = parse(bodies.UnitStateBody, await read_body(request))
        state = _unit_state(body.state)  # a bad value (400) before a move the lifecycle refuses (409)
        try:
            unit = self.state.unit_book.set_state(
                code, state, by=actor(request), note=body.note, acceptance=body.acceptance
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


def _unit_state(value: str) -> UnitState:
    try:
        return UnitState(value)
    except ValueError:
        known = ", ".join(str(s) for s in UnitState)
        raise ApiError(
            400, f"Unknown unit state {value!r}; expected one of: {known}.", type="invalid_request_error",
            code="invalid_value", param="state",
        ) from None  # fmt: skip
