"""The OpenAI-compatible data plane: route each request to the best site and relay the answer."""

from __future__ import annotations

import ipaddress
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from edgeplane._api import MAX_BODY_BYTES, ApiError, Endpoint, model_not_found, parse_request
from edgeplane._errors import BackendError
from edgeplane._http import HttpClient, Reply
from edgeplane._service import error_response, json_response, relay_stream
from edgeplane.gateway._snapshots import SnapshotWatcher
from edgeplane.routing import Candidate

log = logging.getLogger("edgeplane.gateway")

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
# Site answers that say "not here, not now": safe to try the next candidate when nothing was sent yet.
_RETRYABLE_STATUS = frozenset({502, 503})


class ClientLocator:
    """The client's address: the peer, or the first X-Forwarded-For address when the peer is a trusted proxy."""

    def __init__(self, trusted_proxies: Sequence[str] = DEFAULT_TRUSTED_PROXIES) -> None:
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.trusted)

    def locate(self, peer: str | None, forwarded_for: str | None) -> str:
        peer = peer or ""
        if forwarded_for and self._is_trusted(peer):
            first = forwarded_for.split(",", 1)[0].strip()
            try:
                return str(ipaddress.ip_address(first))
            except ValueError:
                pass  # an unparsable header must not move the client anywhere
        return peer


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "edgeplane_gateway_requests",
            "Requests answered, by serving metro and scope.",
            ["model", "metro", "scope", "status"],
            registry=registry,
        )
        self.attempts = Counter(
            "edgeplane_gateway_attempts", "Tries sent to sites.", ["site", "outcome"], registry=registry
        )
        self.in_flight = Gauge("edgeplane_gateway_requests_in_flight", "Requests being served.", registry=registry)
        self.decision = Histogram(
            "edgeplane_gateway_routing_decision_seconds",
            "Time to take a routing decision.",
            buckets=(1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3),
            registry=registry,
        )
        self.snapshot_version = Gauge(
            "edgeplane_gateway_snapshot_version", "Version of the snapshot in use.", registry=registry
        )
        self.snapshot_age = Gauge(
            "edgeplane_gateway_snapshot_age_seconds",
            "Seconds since the control plane confirmed the snapshot.",
            registry=registry,
        )


class Gateway:
    def __init__(
        self,
        watcher: SnapshotWatcher,
        *,
        locator: ClientLocator | None = None,
        max_attempts: int = 3,
        client: HttpClient | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.watcher = watcher
        self.locator = locator or ClientLocator()
        self.max_attempts = max_attempts
        self.client = client or HttpClient()
        self.registry = registry or CollectorRegistry()
        self.metrics = _Metrics(self.registry)

    def __repr__(self) -> str:
        return f"<Gateway {self.watcher!r}>"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(Endpoint.CHAT.value, self._inference(Endpoint.CHAT))
        app.router.add_post(Endpoint.COMPLETIONS.value, self._inference(Endpoint.COMPLETIONS))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        await self.client.close()

    def _inference(self, endpoint: Endpoint) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.metrics.in_flight.inc()
            try:
                return await self._serve(endpoint, request)
            finally:
                self.metrics.in_flight.dec()

        return handle

    async def _serve(self, endpoint: Endpoint, request: web.Request) -> web.StreamResponse:
        request_id = "req-" + uuid.uuid4().hex[:20]
        base_headers = {"x-request-id": request_id}
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                413,
                f"Request body too large (limit {MAX_BODY_BYTES} bytes).",
                type="invalid_request_error",
                code="request_too_large",
                headers=base_headers,
            )
        state = self.watcher.state
        try:
            parsed = parse_request(endpoint, raw)
            if state is None:
                return error_response(
                    503,
                    "The gateway has no routing snapshot yet.",
                    type="server_error",
                    code="no_snapshot",
                    headers=base_headers,
                )
            if parsed.model not in state.fleet.model_by_name:
                raise model_not_found(parsed.model)
        except ApiError as error:
            return web.Response(
                body=error.body(), status=error.status, content_type="application/json", headers=base_headers
            )

        client = self.locator.locate(request.remote, request.headers.get("X-Forwarded-For"))
        started = time.perf_counter()
        decision = state.router.decide(client, parsed.model, state.snapshot.sites, explain=False)
        self.metrics.decision.observe(time.perf_counter() - started)
        if not decision.candidates:
            decision = state.router.decide(client, parsed.model, state.snapshot.sites)
            self.metrics.requests.labels(parsed.model, "", "", "503").inc()
            reasons = "; ".join(f"{p.pop}: {p.reason}" for p in decision.passed_over[:6])
            return error_response(
                503,
                f"No site can serve `{parsed.model}` now ({reasons}).",
                type="server_error",
                code="no_site_available",
                headers={**base_headers, "x-edgeplane-attempts": "0"},
            )

        attempts = 0
        last_error = ""
        for candidate in decision.candidates[: self.max_attempts]:
            attempts += 1
            reply = await self._try(candidate, endpoint, raw)
            if isinstance(reply, str):
                last_error = reply
                continue
            headers = {
                **base_headers,
                "x-edgeplane-metro": candidate.metro,
                "x-edgeplane-site": candidate.pop,
                "x-edgeplane-scope": str(candidate.scope),
                "x-edgeplane-attempts": str(attempts),
            }
            try:
                if parsed.stream and reply.status == 200:
                    self.metrics.requests.labels(parsed.model, candidate.metro, str(candidate.scope), "200").inc()
                    return await relay_stream(request, reply.status, reply.content_type, reply.chunks(), headers)
                try:
                    body = await reply.read()
                except BackendError as error:
                    # Nothing reached the client yet, so another site may answer instead.
                    self.metrics.attempts.labels(candidate.pop, "read_error").inc()
                    last_error = f"{candidate.pop}: {error}"
                    continue
                self.metrics.requests.labels(
                    parsed.model, candidate.metro, str(candidate.scope), str(reply.status)
                ).inc()
                return web.Response(
                    body=body,
                    status=reply.status,
                    content_type=reply.content_type.split(";")[0] or "application/json",
                    headers=headers,
                )
            finally:
                reply.release()
        self.metrics.requests.labels(parsed.model, "", "", "503").inc()
        return error_response(
            503,
            f"Every site tried for `{parsed.model}` failed (last: {last_error}).",
            type="server_error",
            code="no_site_available",
            headers={**base_headers, "x-edgeplane-attempts": str(attempts)},
        )

    async def _try(self, candidate: Candidate, endpoint: Endpoint, raw: bytes) -> Reply | str:
        """Send to one site; a string says why the next candidate should be tried instead."""
        assert candidate.url is not None
        try:
            reply = await self.client.post(candidate.url + endpoint.value, raw)
        except BackendError as error:
            self.metrics.attempts.labels(candidate.pop, "connect_error").inc()
            return f"{candidate.pop}: {error}"
        if reply.status in _RETRYABLE_STATUS:
            reply.close()
            self.metrics.attempts.labels(candidate.pop, f"status_{reply.status}").inc()
            return f"{candidate.pop}: answered {reply.status}"
        self.metrics.attempts.labels(candidate.pop, "ok").inc()
        return reply

    async def _models(self, request: web.Request) -> web.Response:
        state = self.watcher.state
        models = state.fleet.models if state else []
        data = [{"id": m.name, "object": "model", "created": 0, "owned_by": "edgeplane"} for m in models]
        return json_response({"object": "list", "data": data})

    async def _healthz(self, request: web.Request) -> web.Response:
        state = self.watcher.state
        age = self.watcher.age_seconds()
        body = {
            "status": "ok" if state else "no_snapshot",
            "snapshot_version": state.snapshot.version if state else None,
            "snapshot_age_seconds": round(age, 3) if age is not None else None,
            "control_plane_reachable": self.watcher.reachable,
        }
        return json_response(body, status=200 if state else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        state = self.watcher.state
        if state is not None:
            self.metrics.snapshot_version.set(state.snapshot.version)
            self.metrics.snapshot_age.set(self.watcher.age_seconds() or 0.0)
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
