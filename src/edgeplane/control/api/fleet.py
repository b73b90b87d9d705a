"""The fleet and what is published of it: health, metrics, the fleet file as loaded, the snapshot gateways
route by, a routing decision explained, and the status every face shows."""

from __future__ import annotations

import ipaddress

from aiohttp import web

from edgeplane.catalog import DEFAULT_OUTPUT_TOKENS
from edgeplane.control.api._resource import Resource, long_poll
from edgeplane.routing import DEFAULT_PROMPT_TOKENS, SiteState
from edgeplane.web import admin, error_response, json_response


class FleetApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.get("/metrics", self.metrics),
            web.get("/api/fleet", self.fleet),
            web.get("/api/snapshot", self.snapshot),
            web.get("/api/status", self.status),
            web.get("/api/route", self.route),
        ]

    async def healthz(self, request: web.Request) -> web.Response:
        return json_response(
            {"status": "ok", "snapshot_version": self.state.snapshot.version, **self.plane.replication.to_json()}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# HELP edgeplane_control_site_state 1 for each PoP's state: serving, degraded, drained or down.",
            "# TYPE edgeplane_control_site_state gauge",
        ]
        for pop, view in self.state.snapshot.sites.items():
            for state in SiteState:
                value = 1 if view.state is state else 0
                lines.append(f'edgeplane_control_site_state{{pop="{pop}",state="{state.value}"}} {value}')
        lines += [
            "# HELP edgeplane_control_snapshot_version Version of the snapshot published to gateways.",
            "# TYPE edgeplane_control_snapshot_version gauge",
            f"edgeplane_control_snapshot_version {self.state.snapshot.version}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def fleet(self, request: web.Request) -> web.Response:
        return json_response({"digest": self.state.digest, "fleet": self.state.fleet.model_dump(mode="json")})

    @admin  # it holds every agent's address
    async def snapshot(self, request: web.Request) -> web.Response:
        if self.state.warming_up():
            return error_response(
                503, "The control plane has just started; site agents are still reporting.", type="server_error",
                code="warming_up", headers={"Retry-After": "1"},
            )  # fmt: skip
        refused = await long_poll(request, lambda: self.state.snapshot.version, lambda: self.plane.changes)
        return refused or json_response(self.state.snapshot.to_json())

    @admin
    async def status(self, request: web.Request) -> web.Response:
        status = self.state.status()
        status["drills"] = [d.to_json() for d in self.plane.drills.drills.values() if not d.state.done]
        status["control"] = self.plane.replication.listing()
        return json_response(status)

    @admin  # the decision names the candidates' addresses
    async def route(self, request: web.Request) -> web.Response:
        client = request.query.get("client", "")
        model = request.query.get("model", "")
        if not client or not model:
            return error_response(400, "`client` and `model` are required.", type="invalid_request_error")
        try:
            ipaddress.ip_address(client)
        except ValueError:
            return error_response(400, f"`client` is not an IP address: {client!r}", type="invalid_request_error")
        if model not in self.state.fleet.model_by_name:
            return error_response(
                404, f"The model `{model}` does not exist.", type="invalid_request_error", code="model_not_found"
            )
        try:
            prompt_tokens = int(request.query.get("prompt_tokens", DEFAULT_PROMPT_TOKENS))
            output_tokens = int(request.query.get("max_tokens", DEFAULT_OUTPUT_TOKENS))
        except ValueError:
            return error_response(
                400, "`prompt_tokens` and `max_tokens` must be integers.", type="invalid_request_error"
            )
        decision = self.state.router.decide(
            client, model, self.state.snapshot.sites, prompt_tokens=prompt_tokens, output_tokens=output_tokens
        )
        return json_response({"snapshot_version": self.state.snapshot.version, **decision.to_json()})
