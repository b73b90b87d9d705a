"""The fabric: objects pushed from an origin site to others over the fleet's links (each transfer planned, and
planned again around a site that breaks off), and what every site holds."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from edgeplane._errors import BackendError
from edgeplane.control import _bodies as bodies
from edgeplane.control._fabric import Transfer, TransferRefused
from edgeplane.control.api._resource import Resource
from edgeplane.fabric import Manifest
from edgeplane.web import RELAYED_HEADER, ApiError, Body, Code, admin, json_error, json_response, parse, read_body

log = logging.getLogger("edgeplane.control")

TELL_SECONDS = 2.0  # a site that does not take its new source this fast hears it with its next report
OBJECT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$"


class PushBody(Body):
    expected = "{manifest, origin?, targets?}"

    manifest: dict[str, Any]
    origin: Code | None = None
    targets: Annotated[list[Code], Field(min_length=1, max_length=10_000)] | None = None


class FabricApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/fabric/objects", self.objects),
            web.post("/api/fabric/transfers", self.create),
            web.get("/api/fabric/transfers/{name}", self.progress),
            web.post("/api/fabric/transfers/{name}/start", self.start),
            web.post("/api/fabric/transfers/{name}/stuck", self.stuck),
            web.delete("/api/fabric/transfers/{name}", self.remove),
        ]

    @property
    def book(self) -> Any:
        return self.plane.fabric

    async def objects(self, request: web.Request) -> web.Response:
        name = request.query.get("name")
        return json_response({"objects": self.book.objects(name)})

    @admin
    async def create(self, request: web.Request) -> web.Response:
        body = parse(PushBody, await read_body(request))
        try:
            manifest = Manifest.model_validate(body.manifest)
        except ValueError as error:
            raise ApiError(
                400,
                f"Bad manifest: {str(error)[:500]}",
                type="invalid_request_error",
                code="bad_manifest",
                param="manifest",
            ) from None
        if not re.fullmatch(OBJECT_NAME, manifest.name):
            raise ApiError(
                400, "An object's name is letters, digits and . _ : @ + - (at most 200), starting with a letter or"
                " digit.", type="invalid_request_error", param="manifest.name", code="bad_name",
            )  # fmt: skip
        try:
            transfer = self.book.create(manifest, body.origin, body.targets)
        except TransferRefused as error:
            return json_error(409, str(error), code="push_refused")
        return json_response(
            {**self.book.progress(transfer.name), "origin_url": self.book.url(transfer.origin)}, status=201
        )

    async def progress(self, request: web.Request) -> web.Response:
        return json_response(self.book.progress(request.match_info["name"]))

    @admin
    async def start(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        transfer = self.book.get(name)
        try:
            moved = self.book.start(name, await self._holds_complete(transfer.origin, transfer.sha256))
        except TransferRefused as error:
            return json_error(409, str(error), code="push_refused")
        await self.tell(self.book.get(name), moved)
        return json_response(self.book.progress(name))

    @admin
    async def stuck(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = parse(bodies.FabricStuck, await read_body(request))
        transfer = self.book.by_sha(name, body.sha256)
        moved = self.book.stuck(name, body)
        if moved:
            log.warning("fabric: %s: %s cannot fetch from %s (%s)", name, body.pop, body.source, body.error or "-")
        await self.tell(transfer, moved)
        return json_response({"moved": sorted(moved)})

    @admin
    async def remove(self, request: web.Request) -> web.Response:
        """Forget an object and have every site that holds it delete it (sites that do not answer keep it)."""
        transfer, holders = self.book.remove(request.match_info["name"])
        removed, failed = [], {}
        for pop in holders:
            url = self.book.url(pop)
            try:
                status, answer = await self.plane.client.request_json(
                    "DELETE", f"{url}/api/fabric/objects/{transfer.sha256}", headers=self._headers(),
                    timeout_seconds=TELL_SECONDS,
                )  # fmt: skip
            except BackendError as error:
                failed[pop] = str(error)
                continue
            if status in (200, 404):
                removed.append(pop)
            else:
                failed[pop] = f"HTTP {status}: {answer}"
        log.warning("fabric: %s removed from %s", transfer.name, ", ".join(removed) or "no site")
        return json_response({"name": transfer.name, "sha256": transfer.sha256, "removed_from": removed,
                              "failed": failed})  # fmt: skip

    async def _holds_complete(self, pop: str, sha: str) -> bool:
        """Whether the site's agent holds the object complete, asked now."""
        url = self.book.url(pop)
        if url is None:
            return False
        try:
            status, answer = await self.plane.client.request_json(
                "GET", f"{url}/api/fabric/objects/{sha}", headers=self._headers()
            )
        except BackendError:
            return False
        return status == 200 and isinstance(answer, dict) and answer.get("complete") is True

    def _headers(self) -> dict[str, str]:
        headers = {RELAYED_HEADER: "control", "X-Edgeplane-Actor": "fabric"}
        if self.admin_token:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        return headers

    async def tell(self, transfer: Transfer, moved: dict[str, list[dict[str, str]]]) -> None:
        """Tell each site that moved where to fetch from now, all at once (a site that misses it hears it in
        the answer to its next report)."""
        headers = self._headers()
        manifest = transfer.manifest.model_dump(mode="json")

        async def one(pop: str, sources: list[dict[str, str]]) -> None:
            url = self.book.url(pop)
            if url is None:
                return
            payload = {"manifest": manifest, "sources": sources}
            try:
                status, answer = await self.plane.client.request_json(
                    "POST", f"{url}/api/fabric/objects", payload, headers=headers, timeout_seconds=TELL_SECONDS
                )
            except BackendError as error:
                log.warning("fabric: cannot reach %s to start %s: %s", pop, transfer.name, error)
                return
            if status != 200:
                log.warning("fabric: %s refuses %s (%s): %s", pop, transfer.name, status, answer)

        await asyncio.gather(*(one(pop, sources) for pop, sources in sorted(moved.items())))
