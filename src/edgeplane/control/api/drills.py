"""Drills: a metro drained for a while on purpose, its moved traffic judged against the SLO, rolled back by
itself when the SLO breaks."""

from __future__ import annotations

import asyncio

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control.api._resource import Resource, wait_seconds
from edgeplane.web import actor, admin, error_response, json_response, parse, read_body


class DrillsApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/drills", self.list_drills),
            web.post("/api/drills", self.start),
            web.get("/api/drills/{id}", self.get),
        ]

    async def list_drills(self, request: web.Request) -> web.Response:
        return json_response({"drills": [d.to_json() for d in self.plane.drills.drills.values()]})

    @admin
    async def start(self, request: web.Request) -> web.Response:
        body = parse(bodies.DrillBody, await read_body(request))
        drill = self.plane.drills.submit(
            body.metro, body.duration_seconds, body.slo_ttft_ms, actor(request), body.force
        )
        return json_response(drill.to_json(), status=202)

    async def get(self, request: web.Request) -> web.Response:
        """A drill; with ``wait``, held up to that many seconds until it changes, if it is not done."""
        try:
            drill = self.plane.drills.drills[int(request.match_info["id"])]
        except (KeyError, ValueError):
            return error_response(404, "No such drill.", type="invalid_request_error", code="not_found")
        wait = wait_seconds(request)
        if isinstance(wait, web.Response):
            return wait
        if wait > 0 and not drill.state.done:
            try:
                async with asyncio.timeout(wait):
                    await self.plane.drills.changed.wait()
            except TimeoutError:
                pass
        return json_response(drill.to_json())
