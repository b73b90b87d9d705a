"""Tenants' API keys (the secret is shown once, at creation), the table gateways check keys against, and
leases: a share of a key's rate budget for one gateway to spend locally."""

from __future__ import annotations

import time

from aiohttp import web

from edgeplane.control import _bodies as bodies
from edgeplane.control.api._resource import Resource
from edgeplane.web import actor, admin, error_response, json_response, parse, read_body


class KeysApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/keys", self.list_keys),
            web.post("/api/keys", self.create),
            web.delete("/api/keys/{id}", self.revoke),
            web.get("/api/keys/table", self.table),
            web.post("/api/leases", self.lease),
        ]

    @admin
    async def list_keys(self, request: web.Request) -> web.Response:
        keys = [
            {**k.policy.to_json(), "created_at": k.created_at, "revoked_at": k.revoked_at}
            for k in self.state.store.api_keys()
        ]
        return json_response({"keys": keys})

    @admin
    async def create(self, request: web.Request) -> web.Response:
        body = parse(bodies.KeyBody, await read_body(request))
        try:
            policy, secret = self.state.keys.create(
                body.tenant, by=actor(request), continent=body.continent, region=body.region, rpm=body.rpm,
                tpm=body.tpm, models=body.models,
            )  # fmt: skip
        except ValueError as error:
            return error_response(400, f"Bad key request: {error}", type="invalid_request_error")
        self.plane.publish()
        return json_response({**policy.to_json(), "key": secret}, status=201)

    @admin
    async def revoke(self, request: web.Request) -> web.Response:
        revoked = self.state.keys.revoke(request.match_info["id"], by=actor(request))
        self.plane.publish()
        return json_response({"id": request.match_info["id"], "revoked": True, "changed": revoked})

    @admin
    async def table(self, request: web.Request) -> web.Response:
        return json_response(self.state.keys.table())

    @admin
    async def lease(self, request: web.Request) -> web.Response:
        """A share of a key's budget for this window, for one gateway to spend locally."""
        key_id = parse(bodies.LeaseBody, await read_body(request)).key_id
        policy = next((k.policy for k in self.state.store.api_keys() if k.policy.id == key_id), None)
        if policy is None or policy.revoked:
            return error_response(404, f"no active key {key_id!r}", type="invalid_request_error", code="not_found")
        grant = self.plane.leases.lease(key_id, policy.rpm, policy.tpm, time.time())
        return json_response(
            {
                "requests": grant.requests,
                "tokens": grant.tokens,
                "window": grant.window,
                "window_ends_in": grant.window_ends_in,
            }
        )
