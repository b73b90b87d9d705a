"""The placement: which models run at which PoPs, with how many replicas; applying one is refused (409) where
it would leave a model with no site or overload the sites that keep serving it, unless forced."""

from __future__ import annotations

import logging

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control._errors import PlacementRefused
from edgeplane.control.api._resource import Resource
from edgeplane.web import actor, admin, error_response, json_response, parse, read_body

log = logging.getLogger("edgeplane.control")


class PlacementApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/placement", self.current), web.post("/api/placement", self.apply)]

    async def current(self, request: web.Request) -> web.Response:
        sites = self.state.snapshot.sites
        return json_response(
            {
                "placement": [e.model_dump() for e in self.state.fleet.placement],
                "loaded": {code: sorted(view.models) for code, view in sites.items()},
                "loading": {p: r.loading for p, r in self.state.agents.reports.items() if r.loading},
            }
        )

    @admin
    async def apply(self, request: web.Request) -> web.Response:
        body = parse(bodies.PlacementBody, await read_body(request))
        entries = [(row.model, row.pop, row.replicas) for row in body.placement]
        try:
            change = self.state.apply_placement(entries, by=actor(request), force=body.force)
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
        self.plane.publish()
        log.info("placement applied: %s", change)
        return json_response({"applied": len(entries), **change, "snapshot_version": self.state.snapshot.version})
