"""The planner's failure-scenario report, as `plan scenarios --publish` sends it, for the dashboard."""

from __future__ import annotations

from aiohttp import web

from edgeplane.control.api._resource import Resource
from edgeplane.web import actor, admin, json_response, read_body


class ScenariosApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/plan/scenarios", self.report), web.post("/api/plan/scenarios", self.publish)]

    async def report(self, request: web.Request) -> web.Response:
        return json_response({"report": self.plane.scenarios.report})

    @admin
    async def publish(self, request: web.Request) -> web.Response:
        taken = self.plane.scenarios.publish(await read_body(request), by=actor(request))
        self.plane.state_moved()
        return json_response({"scenarios": taken})
