"""The network edge: what every PoP announces and why, each PoP's intents for its BGP speaker (long-polled),
and operators' standing actions towards a transit (prepend, no-export)."""

from __future__ import annotations

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control.api._resource import Resource, long_poll
from edgeplane.web import actor, admin, error_response, json_response, parse, read_body


class EdgeApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/bgp", self.edge),
            web.get("/api/bgp/intents", self.intents),
            web.post("/api/bgp/actions", self.action),
        ]

    async def edge(self, request: web.Request) -> web.Response:
        book = self.state.edge_book
        plan = book.plan
        return json_response(
            {
                "version": book.version,
                "asn": self.state.fleet.asn,
                "graceful_shutdown_seconds": book.graceful_shutdown_seconds,
                "pops": [e.to_json() for e in plan.pops.values()],
                "withdrawn_metros": sorted(plan.withdrawn_metros()),
                "held": list(plan.held),
                "actions": {
                    pop: {str(asn): ":".join(map(str, c)) for asn, c in actions.items()}
                    for pop, actions in book.actions.items()
                    if actions
                },
            }
        )

    async def intents(self, request: web.Request) -> web.Response:
        pop = request.query.get("pop", "")
        if pop not in self.state.fleet.pop_by_code:
            known = ", ".join(sorted(self.state.fleet.pop_by_code))
            return error_response(
                404, f"Unknown PoP {pop!r}; expected one of: {known}.", type="invalid_request_error", code="not_found"
            )
        book = self.state.edge_book
        refused = await long_poll(request, lambda: book.version, lambda: self.plane.edge_changes)
        if refused is not None:
            return refused
        return json_response(
            {
                "version": book.version,
                "pop": pop,
                "asn": self.state.fleet.asn,
                "state": book.plan.pops[pop].to_json(),
                "intents": [i.to_json() for i in book.intents(pop)],
            }
        )

    @admin
    async def action(self, request: web.Request) -> web.Response:
        body = parse(bodies.BgpActionBody, await read_body(request))
        pop, transit_asn, action = body.pop, body.transit_asn, body.action
        try:
            self.state.edge_book.set_action(pop, transit_asn, action, by=actor(request))
        except ValueError as error:
            return error_response(400, str(error), type="invalid_request_error")
        self.plane.edge_moved()
        version = self.state.edge_book.version
        return json_response({"pop": pop, "transit_asn": transit_asn, "action": action, "version": version})
