"""Drills: a metro drained for a while on purpose, its moved traffic judged against the SLO, rolled back by
itself when the SLO breaks."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from edgeplane._errors import BackendError
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
        passed = await self._at_leader(request)
        if passed is not None:
            return passed
        return json_response({"drills": [d.to_json() for d in self.plane.drills.drills.values()]})

    async def _at_leader(self, request: web.Request, body: dict[str, Any] | None = None) -> web.Response | None:
        """Drills are the leader's work (their drains and rollbacks happen once, judged on every gateway's
        samples, which the other replicas pass on to it): a replica that does not lead asks the leader, and
        answers what it answered. None when this replica leads."""
        replication = self.plane.replication
        if replication.leading:
            return None
        if replication.leader_url is None:
            return error_response(
                503, "No control plane replica leads right now (an election is under way); try again.",
                type="server_error", code="no_leader", headers={"Retry-After": "1"},
            )  # fmt: skip
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-edgeplane-actor")}
        try:
            status, answer = await self.plane.client.request_json(
                request.method, replication.leader_url + request.path_qs,
                body, timeout_seconds=35.0, headers=headers,
            )  # fmt: skip
        except BackendError as error:
            return error_response(
                503, f"The leading replica did not answer ({error}); a new one may be being elected: try again.",
                type="server_error", code="no_leader", headers={"Retry-After": "1"},
            )  # fmt: skip
        return json_response(answer, status=status)

    @admin
    async def start(self, request: web.Request) -> web.Response:
        body = parse(bodies.DrillBody, await read_body(request))  # refused here (4xx naming the field) if bad
        passed = await self._at_leader(request, body.model_dump(mode="json"))
        if passed is not None:
            return passed
        drill = self.plane.drills.submit(
            body.metro, body.duration_seconds, body.slo_ttft_ms, actor(request), body.force
        )
        return json_response(drill.to_json(), status=202)

    async def get(self, request: web.Request) -> web.Response:
        """A drill; with ``wait``, held up to that many seconds until it changes, if it is not done."""
        passed = await self._at_leader(request)
        if passed is not None:
            return passed
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
