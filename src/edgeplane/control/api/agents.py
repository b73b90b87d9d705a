"""Site agents' reports: what each PoP serves and how loaded it is; the answer tells the agent what it should
serve now and which of its units carry no traffic."""

from __future__ import annotations

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control.api._resource import Resource
from edgeplane.control.api.fabric import FabricApi
from edgeplane.web import admin, json_response, parse, read_body


class AgentsApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/agents/{pop}/report", self.report)]

    @admin
    async def report(self, request: web.Request) -> web.Response:
        pop = request.match_info["pop"]
        body = parse(bodies.AgentReport, await read_body(request))
        self.state.report(pop, body)
        self.plane.replication.share(pop, body)
        self.plane.publish()
        # The answer carries what this site should serve: a placement applied since it started reaches it here.
        # And which of its units carry no traffic: the agent sends nothing to their replicas.
        models = self.state.fleet.models_at(pop)
        out = self.state.drains.units_out(pop)
        # And what it should be fetching over the fabric; a site back from a crash is planned in again.
        for name, moved in self.plane.fabric.heard(pop).items():
            await FabricApi(self.plane).tell(self.plane.fabric.get(name), moved)
        fabric = self.plane.fabric.assignments(pop)
        weights = self.plane.fabric.weights_for(pop)  # models it serves only once their weights arrived
        return json_response(
            {
                "snapshot_version": self.state.snapshot.version, "models": models, "units_out": out, "fabric": fabric,
                "weights": weights,
            }
        )  # fmt: skip
