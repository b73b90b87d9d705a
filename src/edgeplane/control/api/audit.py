"""The audit log: who changed what, when, and with what outcome, newest first."""

from __future__ import annotations

from aiohttp import web

from edgeplane.control.api._resource import Resource
from edgeplane.web import admin, error_response, json_response


class AuditApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/audit", self.tail)]

    @admin
    async def tail(self, request: web.Request) -> web.Response:
        """The newest records first; ``limit`` of them (100 unless asked, at most 1,000)."""
        limit = request.query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            return error_response(400, "`limit` must be an integer from 1 to 1000.", type="invalid_request_error")
        return json_response({"audit": [r.to_json() for r in self.state.store.audit_log(int(limit))]})
