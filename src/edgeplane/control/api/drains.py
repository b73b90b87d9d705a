"""Drains: taking a metro, a PoP or a unit out of routing on purpose, refused where its neighbours lack the
headroom to take its traffic (409, with the reasons and what would make it possible)."""

from __future__ import annotations

import logging

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control._errors import DrainRefused
from edgeplane.control.api._resource import Resource
from edgeplane.web import actor, admin, json_response, parse, read_body

log = logging.getLogger("edgeplane.control")


class DrainsApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/drains", self.in_force),
            web.post("/api/drains", self.drain),
            web.delete("/api/drains/{kind}/{code}", self.undrain),
        ]

    async def in_force(self, request: web.Request) -> web.Response:
        return json_response({"drains": [d.to_json() for d in self.state.drains.in_force()]})

    @admin
    async def drain(self, request: web.Request) -> web.Response:
        body = parse(bodies.DrainBody, await read_body(request))
        kind, code = body.kind, body.code
        try:
            added = self.state.drains.drain(kind, code, by=actor(request), reason=body.reason, force=body.force)
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
        self.plane.publish()
        log.info("drained %s %s", kind, code)
        return json_response(
            {"kind": kind, "code": code, "drained": True, "changed": added, "snapshot_version": self._version()}
        )

    @admin
    async def undrain(self, request: web.Request) -> web.Response:
        kind, code = request.match_info["kind"], request.match_info["code"]
        removed = self.state.drains.undrain(kind, code, by=actor(request))
        self.plane.publish()
        log.info("undrained %s %s", kind, code)
        return json_response(
            {"kind": kind, "code": code, "drained": False, "changed": removed, "snapshot_version": self._version()}
        )

    def _version(self) -> int:
        return self.state.snapshot.version
