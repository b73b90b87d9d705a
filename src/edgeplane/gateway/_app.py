"""The OpenAI-compatible data plane: the aiohttp application, its routes, and the steps each inference
request goes through: authenticate, admit, check the model, locate, route within the key's residency,
forward and relay, record."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from edgeplane.gateway._attempt import Ready, SiteJudge, Tries
from edgeplane.gateway._auth import Authenticator
from edgeplane.gateway._forward import Forwarder, Unserved
from edgeplane.gateway._inflight import InFlight
from edgeplane.gateway._locate import ClientLocator
from edgeplane.gateway._metrics import GatewayMetrics
from edgeplane.gateway._models import check_model, model_object, visible
from edgeplane.gateway._quota import LeaseKeeper, Quotas
from edgeplane.gateway._record import RequestRecord
from edgeplane.gateway._relay import Relay
from edgeplane.gateway._residency import Residency
from edgeplane.gateway._route import Routing
from edgeplane.gateway._snapshots import RoutingState, SnapshotWatcher
from edgeplane.gateway._uplink import Uplink
from edgeplane.health import Health, HealthBook, HealthPolicy
from edgeplane.routing import Candidate, SiteState
from edgeplane.tenants import KeyPolicy
from edgeplane.web import (
    MAX_BODY_BYTES,
    PROBE_INTERVAL_SECONDS,
    ApiError,
    Endpoint,
    HttpClient,
    InferenceRequest,
    json_errors,
    json_response,
    model_not_found,
    parse_request,
    probe_sites,
    read_body,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    max_attempts: int = 3
    first_token_timeout_seconds: float = 10.0  # a stream's first event; then the next candidate is tried
    read_timeout_seconds: float = 300.0  # a whole non-streamed answer, or a silence inside a stream
    request_budget_seconds: float = 30.0  # when tries may start; a stream's try ends with it, a whole answer's runs on
    probe_interval_seconds: float = PROBE_INTERVAL_SECONDS
    auth: bool = False  # require an API key (always, when listening beyond loopback)
    health: HealthPolicy = field(default_factory=HealthPolicy)
    # The PoP whose gateway this is (`pop run`): its own site is served first and every answer carries
    # x-edgeplane-ingress. None for `up`'s one gateway, which stands in for every metro's and is no PoP's.
    pop: str | None = None


class Gateway:
    def __init__(
        self,
        watcher: SnapshotWatcher,
        *,
        locator: ClientLocator | None = None,
        options: GatewayOptions | None = None,
        client: HttpClient | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.watcher = watcher
        self.locator = locator or ClientLocator()
        self.options = options = options or GatewayOptions()
        self.client = client or HttpClient(read_timeout_seconds=options.read_timeout_seconds)
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.health = HealthBook(options.health)
        self.inflight = InFlight()  # (PoP, model): this gateway's requests there, now and lately
        self.auth = Authenticator(self.metrics.auth_failures)
        self.quotas = Quotas()
        self.leases = LeaseKeeper(self.quotas, self.client, watcher.control, watcher.auth_headers)
        self.residency = Residency(self.metrics.residency)
        self.routing = Routing(self.health, self.inflight, self.metrics.decision, pop=options.pop)
        tries = Tries(
            self.client,
            SiteJudge(self.health),
            self.metrics.attempts,
            first_token_timeout_seconds=options.first_token_timeout_seconds,
        )
        self.forwarder = Forwarder(
            tries,
            self.inflight,
            self.metrics.poisoned,
            max_attempts=options.max_attempts,
            request_budget_seconds=options.request_budget_seconds,
        )
        self.relay = Relay(
            tries, max_attempts=options.max_attempts, first_token_timeout_seconds=options.first_token_timeout_seconds
        )
        self.uplink = Uplink(self.client, watcher.control, watcher.auth_headers)

    def __repr__(self) -> str:
        return f"<Gateway {self.watcher!r} {self.health!r}>"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
        app.router.add_post(Endpoint.CHAT.value, self._inference(Endpoint.CHAT))
        app.router.add_post(Endpoint.COMPLETIONS.value, self._inference(Endpoint.COMPLETIONS))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.on_cleanup.append(self._close)
        if self.options.pop is not None:
            app.on_response_prepare.append(self._ingress)
        return app

    async def _ingress(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer of a PoP's gateway, errors and streams included, names the PoP that accepted the
        connection: where anycast brought the client, which x-edgeplane-site (where it was served) need not be."""
        assert self.options.pop is not None
        response.headers["x-edgeplane-ingress"] = self.options.pop

    async def _close(self, app: web.Application) -> None:
        await self.client.close()

    # Background work, each run (and supervised) by whoever serves the app.

    async def probe_forever(self) -> None:
        """Active probes, so a site that fails is found before clients meet it, and one that recovers
        is taken back after its rise count."""
        while True:
            state = self.watcher.state
            if state is not None:
                await probe_sites(self.health, self.client, state.snapshot.sites)
            await asyncio.sleep(self.options.probe_interval_seconds)

    async def report_forever(self) -> None:
        """Send the control plane what clients met (time to first token by client metro), for drills."""
        await self.uplink.report_forever()

    async def lease_forever(self) -> None:
        """Keep a lease in hand for every limited key, so no request waits for the control plane."""

        def policies() -> Iterable[KeyPolicy]:
            state = self.watcher.state
            return state.keys.values() if state is not None and self.options.auth else ()

        await self.leases.lease_forever(policies)

    # The inference pipeline.

    def _inference(self, endpoint: Endpoint) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.metrics.in_flight.inc()
            started = time.monotonic()
            record = RequestRecord("req-" + uuid.uuid4().hex[:20])
            response: web.StreamResponse | None = None
            try:
                response = await self._serve(endpoint, request, record)
                return response
            finally:
                self.metrics.in_flight.dec()
                self.quotas.spend_tokens(record.key_id, record.tokens)
                self.uplink.demand(record)
                status = response.status if response is not None else 499
                record.log(status, round(1000 * (time.monotonic() - started), 3))

        return handle

    async def _serve(self, endpoint: Endpoint, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        base_headers = {"x-request-id": record.request_id}
        try:
            return await self._pipeline(endpoint, request, record, base_headers)
        except ApiError as error:
            return web.Response(
                body=error.body(),
                status=error.status,
                content_type="application/json",
                headers={**base_headers, **error.headers},
            )

    async def _pipeline(
        self, endpoint: Endpoint, request: web.Request, record: RequestRecord, base_headers: dict[str, str]
    ) -> web.StreamResponse:
        """Every step that may refuse the request raises ApiError."""
        raw = await read_body(request)  # too large (413), or a body that stopped arriving (408)
        state = self.watcher.state
        if state is None:
            raise ApiError(503, "The gateway has no routing snapshot yet.", type="server_error", code="no_snapshot")
        policy: KeyPolicy | None = None
        if self.options.auth:
            policy = self.auth.authenticate(request.headers.get("Authorization", ""), state.keys)
            record.key_id, record.tenant = policy.id, policy.tenant
            self.quotas.admit(policy)
        parsed = parse_request(endpoint, raw)
        record.model, record.stream = parsed.model, parsed.stream
        check_model(state.fleet, parsed, policy)
        # Every X-Forwarded-For line, in order, as one list: a proxy may add its own line rather than append.
        client = self.locator.locate(request.remote, ",".join(request.headers.getall("X-Forwarded-For", ())))
        try:
            return await self._route_and_forward(request, state, client, policy, parsed, raw, record, base_headers)
        except ApiError as error:
            self.metrics.refused(parsed.model, error.status)
            raise

    async def _route_and_forward(
        self,
        request: web.Request,
        state: RoutingState,
        client: str,
        policy: KeyPolicy | None,
        parsed: InferenceRequest,
        raw: bytes,
        record: RequestRecord,
        base_headers: dict[str, str],
    ) -> web.StreamResponse:
        prompt_tokens = max(1, len(raw) // 4)
        decision = self.routing.decide(state, client, parsed, prompt_tokens, self.residency.within(state, policy))
        record.client_metro, record.tokens_in = decision.client_metro, prompt_tokens
        self.residency.judge(policy, parsed.model, served=bool(decision.candidates))
        if not decision.candidates:
            raise self.routing.unavailable(state, client, parsed.model)

        async def deliver(ready: Ready, attempts: int, rest: list[Candidate]) -> web.StreamResponse:
            served = ready.candidate
            record.served_at(served, attempts)
            if ready.ttft_seconds is not None:
                record.ttft_ms = round(1000 * ready.ttft_seconds, 3)
            if ready.body is not None:
                record.count_usage(ready.body)
            self.uplink.served(decision.client_metro, parsed.model, served, ready.ttft_seconds)
            self.metrics.requests.labels(parsed.model, served.metro, str(served.scope), str(ready.reply.status)).inc()
            return await self.relay.respond(request, parsed, ready, attempts, rest, base_headers, record)

        try:
            return await self.forwarder.forward(parsed, raw, list(decision.candidates), deliver)
        except Unserved as refusal:
            record.attempts = refusal.attempts
            raise

    # The other routes.

    def _visible_models(self, request: web.Request) -> list[str]:
        """The models this request's key may use (every one without auth); ApiError(401) for a bad key, as
        OpenAI answers every /v1 route without a valid key."""
        state = self.watcher.state
        if state is None:
            return []
        policy = None
        if self.options.auth:
            policy = self.auth.authenticate(request.headers.get("Authorization", ""), state.keys)
        return visible(state.fleet, policy)

    async def _models(self, request: web.Request) -> web.Response:
        try:
            names = self._visible_models(request)
        except ApiError as error:
            return web.Response(body=error.body(), status=error.status, content_type="application/json")
        return json_response({"object": "list", "data": [model_object(n) for n in names]})

    async def _model(self, request: web.Request) -> web.Response:
        """One model, as the SDK's ``models.retrieve`` reads it (404 for one the key may not use, too)."""
        name = request.match_info["model"]
        try:
            names = self._visible_models(request)
            if name not in names:
                raise model_not_found(name)
        except ApiError as error:
            return web.Response(body=error.body(), status=error.status, content_type="application/json")
        return json_response(model_object(name))

    async def _healthz(self, request: web.Request) -> web.Response:
        """ok only while this gateway has a site to send requests to."""
        state = self.watcher.state
        age = self.watcher.age_seconds()
        status = "no_snapshot"
        if state is not None:
            usable = self.routing.sites(state.snapshot).values()
            live = any(v.state in (SiteState.SERVING, SiteState.DEGRADED) for v in usable)
            status = "ok" if live else "no_site_available"
        body = {
            "status": status,
            "snapshot_version": state.snapshot.version if state else None,
            "snapshot_age_seconds": round(age, 3) if age is not None else None,
            "snapshot_source": self.watcher.source,
            "control_plane_reachable": self.watcher.reachable,
            "sites": {
                pop: str(h.state) for pop, h in sorted(self.health.sites.items()) if h.state is not Health.SERVING
            },
        }
        return json_response(body, status=200 if status == "ok" else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = self.metrics.exposition(self.watcher.state, self.watcher.age_seconds(), self.health)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
