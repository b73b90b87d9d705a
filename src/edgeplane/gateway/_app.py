"""The OpenAI-compatible data plane: route each request to the best site and relay the answer."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from edgeplane._errors import BackendError, ConnectError
from edgeplane.catalog import DEFAULT_OUTPUT_TOKENS
from edgeplane.gateway._inflight import InFlight
from edgeplane.gateway._snapshots import RoutingState, SnapshotWatcher
from edgeplane.gateway._sse import DONE, EventReader, StreamProgress, event_data, is_error_event, resume_body
from edgeplane.health import Health, HealthBook, HealthPolicy, Outcome
from edgeplane.routing import Candidate, SiteState, SiteView
from edgeplane.tenants import Bucket, Grant, KeyPolicy, key_hash
from edgeplane.web import (
    MAX_BODY_BYTES,
    PROBE_INTERVAL_SECONDS,
    Address,
    ApiError,
    Endpoint,
    HttpClient,
    InferenceRequest,
    Reply,
    address_of,
    error_event,
    error_message,
    error_response,
    json_errors,
    json_response,
    model_not_found,
    parse_request,
    probe_sites,
    read_body,
)

log = logging.getLogger("edgeplane.gateway")
# One JSON line per request. It never holds headers or keys: only the key's id and tenant.
access_log = logging.getLogger("edgeplane.access")
access_log.propagate = False

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
REPORT_SECONDS = 0.5
LEASE_POLL_SECONDS = 0.05
LEASE_LOW_REQUESTS = 2
LEASE_LOW_TOKENS = 1024
MAX_SAMPLES_PER_REPORT = 5000
# Site answers that say "not here, not now": safe to try the next candidate while nothing was sent yet.
# Inference has no side effects, so a 5xx or a 429 from one site is retried on the next.
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
POISON_SITES = 2  # a request two sites answer with 500 is refused as the request's fault


class ClientLocator:
    """The client's address: the peer, or, when the peer is a trusted proxy, the rightmost X-Forwarded-For
    address that is not itself a trusted proxy. Proxies append to the header, so everything left of the
    last address a trusted proxy wrote is whatever the client chose to send."""

    def __init__(self, trusted_proxies: Sequence[str] = DEFAULT_TRUSTED_PROXIES) -> None:
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in trusted_proxies]

    def _is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted)

    def locate(self, peer: str | None, forwarded_for: str | None) -> str:
        peer = peer or ""
        if not forwarded_for or not self._is_trusted(address_of(peer)):
            return peer
        chosen = peer
        for hop in reversed(forwarded_for.split(",")):
            address = address_of(hop)
            if address is None:
                break  # an unparsable entry must not move the client anywhere
            chosen = str(address)
            if not self._is_trusted(address):
                break
        return chosen


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
        self.residency = Counter(
            "edgeplane_gateway_residency_decisions",
            "Routing decisions limited to a key's residency, by pin and outcome (served, refused).",
            ["pin", "outcome"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "edgeplane_gateway_auth_failures", "Requests refused by authentication.", ["reason"], registry=registry
        )
        self.poisoned = Counter(
            "edgeplane_gateway_unprocessable_requests",
            "Requests two sites failed the same way (500): refused as the request's fault, held against no site.",
            registry=registry,
        )
        self.site_health = Gauge(
            "edgeplane_gateway_site_health",
            "1 for each site's health state as this gateway sees it (serving, degraded, down).",
            ["site", "state"],
            registry=registry,
        )


@dataclass(slots=True)
class _Ready:
    """A site's answer, held back until it is known to be good: the whole body, or the first stream event."""

    candidate: Candidate
    reply: Reply
    body: bytes | None = None
    events: EventReader | None = None
    first: bytes | None = None
    ttft_seconds: float | None = None  # streams only: until the first event


@dataclass(slots=True)
class RequestRecord:
    """One request as the gateway saw it, filled in as it goes: what the access log writes (never a header
    or a key), what the key's lease is charged and what the planner's observed demand counts."""

    request_id: str
    key_id: str | None = None
    tenant: str | None = None
    model: str | None = None
    stream: bool | None = None
    client_metro: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    metro: str | None = None  # where it was served
    site: str | None = None
    scope: str | None = None
    attempts: int | None = None
    ttft_ms: float | None = None
    status: int | None = None
    duration_ms: float | None = None

    def served_at(self, candidate: Candidate, attempts: int) -> None:
        self.metro, self.site, self.scope, self.attempts = (
            candidate.metro,
            candidate.pop,
            str(candidate.scope),
            attempts,
        )

    def count_usage(self, body: bytes) -> None:
        """Token counts from the usage a backend reported, found without parsing the whole answer."""
        for name, pattern in (("tokens_in", _PROMPT_TOKENS), ("tokens_out", _COMPLETION_TOKENS)):
            match = pattern.search(body)
            if match:
                setattr(self, name, int(match.group(1)))

    @property
    def tokens(self) -> int:
        return (self.tokens_in or 0) + (self.tokens_out or 0)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__ if getattr(self, name) is not None}


@dataclass(frozen=True, slots=True)
class _Failure:
    """A try that did not give an answer to pass on. ``suspect``: the site answered 500, which may be the
    request's own fault (a body the model server chokes on): it counts against the site only once another
    site has served the same request, and the request itself is refused when a second site does the same."""

    reason: str
    suspect: bool = False
    message: str = ""


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    max_attempts: int = 3
    first_token_timeout_seconds: float = 10.0  # a stream's first event; then the next candidate is tried
    read_timeout_seconds: float = 300.0  # a whole non-streamed answer, or a silence inside a stream
    request_budget_seconds: float = 30.0  # all tries before the first byte reaches the client
    probe_interval_seconds: float = PROBE_INTERVAL_SECONDS
    auth: bool = False  # require an API key (always, when listening beyond loopback)
    health: HealthPolicy = field(default_factory=HealthPolicy)


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
        self.options = options or GatewayOptions()
        self.client = client or HttpClient(read_timeout_seconds=self.options.read_timeout_seconds)
        self.registry = registry or CollectorRegistry()
        self.metrics = _Metrics(self.registry)
        self.health = HealthBook(self.options.health)
        self.inflight = InFlight()  # (PoP, model): this gateway's requests there, now and lately
        self._samples: list[dict[str, Any]] = []  # where each request was served (and its TTFT), for the control plane
        # Requests and tokens per (client metro, model) since the last report: the demand the planner reads.
        self._demand: dict[tuple[str, str], list[int]] = {}
        self._residency: dict[tuple[str, str | None, str | None], frozenset[str]] = {}
        self._buckets: dict[str, Bucket] = {}  # key id -> what is left of its leases
        self._views: tuple[tuple[int, int], dict[str, SiteView]] | None = None

    def __repr__(self) -> str:
        return f"<Gateway {self.watcher!r} {self.health!r}>"

    def _sites(self, snapshot_version: int, sites: dict[str, SiteView] | Any) -> dict[str, SiteView]:
        """The snapshot's sites as this gateway's own health verdicts amend them, busy counts less this
        gateway's own requests (added back fresh per decision); rebuilt only on change."""
        key = (snapshot_version, self.health.generation)
        if self._views is None or self._views[0] != key:
            self._views = (key, self.inflight.others(self.health.overlay(sites)))
        return self._views[1]

    def _authenticate(self, request: web.Request, keys: dict[str, KeyPolicy]) -> KeyPolicy:
        """The policy of the request's key, or ApiError(401). The key itself is never kept or logged."""
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            self.metrics.auth_failures.labels("missing").inc()
            raise ApiError(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
                type="invalid_request_error",
                code="invalid_api_key",
            )
        policy = keys.get(key_hash(secret.strip()))
        if policy is None:
            self.metrics.auth_failures.labels("unknown").inc()
            raise ApiError(401, "Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key")
        if policy.revoked:
            self.metrics.auth_failures.labels("revoked").inc()
            raise ApiError(401, "This API key has been revoked.", type="invalid_request_error", code="invalid_api_key")
        return policy

    def _admit(self, policy: KeyPolicy) -> None:
        """Spend one request of the key's local lease, or raise ApiError(429) with Retry-After."""
        now = time.monotonic()
        bucket = self._buckets.setdefault(policy.id, Bucket())
        bucket.expire(now)
        if bucket.requests <= 0 or (policy.tpm is not None and bucket.tokens <= 0):
            what = "requests" if bucket.requests <= 0 else "tokens"
            per = policy.rpm if what == "requests" else policy.tpm
            raise ApiError(
                429,
                f"Rate limit reached for this API key: {per} {what} per minute. Retry after the time given.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(bucket.retry_after(now))},
            )
        bucket.requests -= 1

    def _spend_tokens(self, record: RequestRecord) -> None:
        bucket = self._buckets.get(record.key_id) if record.key_id else None
        if bucket is not None:
            bucket.tokens -= record.tokens

    async def lease_forever(self) -> None:
        """Keep a lease in hand for every limited key, so no request waits for the control plane."""
        url = self.watcher.control_url + "/api/leases"
        while True:
            state = self.watcher.state
            if state is not None and self.options.auth:
                now = time.monotonic()
                wanted = []
                for policy in state.keys.values():
                    if policy.revoked or (policy.rpm is None and policy.tpm is None):
                        continue
                    bucket = self._buckets.setdefault(policy.id, Bucket())
                    bucket.expire(now)
                    low = bucket.requests < LEASE_LOW_REQUESTS or (
                        policy.tpm is not None and bucket.tokens < LEASE_LOW_TOKENS
                    )
                    if low and not bucket.exhausted:
                        wanted.append(policy.id)

                async def one(key_id: str) -> None:
                    try:
                        status, data = await self.client.request_json(
                            "POST", url, {"key_id": key_id}, timeout_seconds=2.0, headers=self.watcher.auth_headers
                        )
                    except BackendError:
                        return  # keep what is left of the last lease
                    if status == 200:
                        self._buckets[key_id].add(Grant(**data), time.monotonic())

                async with asyncio.TaskGroup() as group:
                    for key_id in wanted:
                        group.create_task(one(key_id))
            await asyncio.sleep(LEASE_POLL_SECONDS)

    def _within(self, state: RoutingState, policy: KeyPolicy | None) -> frozenset[str] | None:
        """The metros a key's requests may be served in; None when it is not pinned."""
        if policy is None or policy.pinned is None:
            return None
        cache_key = (state.snapshot.fleet_digest, policy.continent, policy.region)
        metros = self._residency.get(cache_key)
        if metros is None:
            metros = self._residency[cache_key] = state.router.metros_within(policy.continent, policy.region)
        return metros

    def _record(self, site: str, outcome: Outcome, *, ttft_seconds: float | None = None, why: str = "") -> None:
        before = self.health.state(site)
        after = self.health.record(site, outcome, time.monotonic(), ttft_seconds=ttft_seconds, why=why)
        if after is not before:
            log.warning("site %s is %s here (%s)", site, after, why or outcome.value)

    async def report_forever(self) -> None:
        """Send the control plane what clients met (time to first token by client metro), for drills."""
        url = self.watcher.control_url + "/api/gateways/report"
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            samples, self._samples = self._samples, []
            demand, self._demand = self._demand, {}
            if samples or demand:
                rows = [
                    {"client_metro": m, "model": n, "requests": t[0], "prompt_tokens": t[1], "output_tokens": t[2]}
                    for (m, n), t in demand.items()
                ]
                try:
                    await self.client.request_json(
                        "POST",
                        url,
                        {"samples": samples, "demand": rows},
                        timeout_seconds=2.0,
                        headers=self.watcher.auth_headers,
                    )
                except BackendError:
                    pass  # the samples of a partition are lost; serving goes on

    async def probe_forever(self) -> None:
        """Active probes, so a site that fails is found before clients meet it, and one that recovers
        is taken back after its rise count."""
        while True:
            state = self.watcher.state
            if state is not None:
                await probe_sites(self.health, self.client, state.snapshot.sites)
            await asyncio.sleep(self.options.probe_interval_seconds)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors])
        app.router.add_post(Endpoint.CHAT.value, self._inference(Endpoint.CHAT))
        app.router.add_post(Endpoint.COMPLETIONS.value, self._inference(Endpoint.COMPLETIONS))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model:.+}", self._model)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        await self.client.close()

    def _inference(self, endpoint: Endpoint) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.metrics.in_flight.inc()
            started = time.monotonic()
            info = RequestRecord("req-" + uuid.uuid4().hex[:20])
            response: web.StreamResponse | None = None
            try:
                response = await self._serve(endpoint, request, info)
                return response
            finally:
                self.metrics.in_flight.dec()
                self._spend_tokens(info)
                if info.client_metro is not None and info.model is not None:
                    tally = self._demand.setdefault((info.client_metro, info.model), [0, 0, 0])
                    tally[0] += 1
                    tally[1] += info.tokens_in or 0
                    tally[2] += info.tokens_out or 0
                if access_log.handlers:
                    info.status = response.status if response is not None else 499
                    info.duration_ms = round(1000 * (time.monotonic() - started), 3)
                    access_log.info(orjson.dumps(info.to_json()).decode())

        return handle

    async def _serve(self, endpoint: Endpoint, request: web.Request, info: RequestRecord) -> web.StreamResponse:
        request_id = info.request_id
        base_headers = {"x-request-id": request_id}
        try:
            raw = await read_body(request)
        except ApiError as error:  # too large (413), or a body that stopped arriving (408)
            return web.Response(
                body=error.body(),
                status=error.status,
                content_type="application/json",
                headers={**base_headers, **error.headers},
            )
        state = self.watcher.state
        if state is None:
            return error_response(
                503,
                "The gateway has no routing snapshot yet.",
                type="server_error",
                code="no_snapshot",
                headers=base_headers,
            )
        policy: KeyPolicy | None = None
        try:
            if self.options.auth:
                policy = self._authenticate(request, state.keys)
                info.key_id, info.tenant = policy.id, policy.tenant
                if policy.rpm is not None or policy.tpm is not None:
                    self._admit(policy)
            parsed = parse_request(endpoint, raw)
            info.model, info.stream = parsed.model, parsed.stream
            spec = state.fleet.model_by_name.get(parsed.model)
            if spec is None:
                raise model_not_found(parsed.model)
            unsupported = sorted(parsed.inputs - set(spec.inputs))
            if unsupported:
                raise ApiError(
                    400,
                    f"The model `{parsed.model}` takes {' and '.join(spec.inputs)} input only; this request carries"
                    f" {' and '.join(unsupported)} content.",
                    type="invalid_request_error",
                    code="unsupported_input",
                    param="messages",
                )
            if policy is not None and policy.models is not None and parsed.model not in policy.models:
                raise ApiError(
                    403,
                    f"This API key may not use the model `{parsed.model}`.",
                    type="permission_error",
                    code="model_not_allowed",
                    param="model",
                )
        except ApiError as error:
            return web.Response(
                body=error.body(),
                status=error.status,
                content_type="application/json",
                headers={**base_headers, **error.headers},
            )

        # Every X-Forwarded-For line, in order, as one list: a proxy may add its own line rather than append.
        client = self.locator.locate(request.remote, ",".join(request.headers.getall("X-Forwarded-For", ())))
        started = time.perf_counter()
        sites = self._sites(state.snapshot.version, state.snapshot.sites)
        max_tokens = parsed.body.get("max_completion_tokens") or parsed.body.get("max_tokens")
        within = self._within(state, policy)
        decision = state.router.decide(
            client,
            parsed.model,
            sites,
            explain=False,
            prompt_tokens=max(1, len(raw) // 4),
            output_tokens=max_tokens if isinstance(max_tokens, int) else DEFAULT_OUTPUT_TOKENS,
            local_busy=self.inflight.now,
            within=within,
        )
        self.metrics.decision.observe(time.perf_counter() - started)
        info.client_metro = decision.client_metro
        info.tokens_in = max(1, len(raw) // 4)
        pin = policy.pinned if policy is not None else None
        if pin is not None:
            self.metrics.residency.labels(pin, "served" if decision.candidates else "refused").inc()
        if not decision.candidates and pin is not None:
            self.metrics.requests.labels(parsed.model, "", "", "503").inc()
            return error_response(
                503,
                f"No site in {pin} can serve `{parsed.model}` now, and this API key is pinned to {pin}: it is"
                " never served outside it.",
                type="server_error",
                code="no_site_in_residency",
                headers={**base_headers, "x-edgeplane-attempts": "0"},
            )
        if not decision.candidates:
            decision = state.router.decide(client, parsed.model, sites, local_busy=self.inflight.now)
            self.metrics.requests.labels(parsed.model, "", "", "503").inc()
            reasons = "; ".join(f"{p.pop}: {p.reason}" for p in decision.passed_over[:6])
            return error_response(
                503,
                f"No site can serve `{parsed.model}` now ({reasons}).",
                type="server_error",
                code="no_site_available",
                headers={**base_headers, "x-edgeplane-attempts": "0"},
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.request_budget_seconds
        candidates = list(decision.candidates)
        attempts = 0
        failures: list[str] = []
        suspects: list[_Failure] = []  # 500s: the site's fault or the request's, not known yet
        suspect_sites: list[str] = []
        while candidates and attempts < self.options.max_attempts and loop.time() < deadline:
            candidate = candidates.pop(0)
            attempts += 1
            key = (candidate.pop, parsed.model)
            self.inflight.change(key, 1)
            try:
                outcome = await self._attempt(candidate, endpoint, raw, parsed.stream, deadline - loop.time())
                if isinstance(outcome, _Failure):
                    failures.append(outcome.reason)
                    if outcome.suspect:
                        suspects.append(outcome)
                        suspect_sites.append(candidate.pop)
                    if len(suspects) >= POISON_SITES:
                        return self._poisoned(parsed, suspects, attempts, base_headers, info)
                    continue
                for site in suspect_sites:  # another site served it: those 500s were the sites' own
                    self._record(site, Outcome.ERROR, why="answered 500 to a request another site served")
                info.served_at(candidate, attempts)
                if outcome.ttft_seconds is not None:
                    info.ttft_ms = round(1000 * outcome.ttft_seconds, 3)
                if outcome.body is not None:
                    info.count_usage(outcome.body)
                if len(self._samples) < MAX_SAMPLES_PER_REPORT:
                    # Every answer counts where it was served (the dashboard's scope mix); streams also carry
                    # their time to first token (drills judge it), whole answers have none to tell.
                    ttft = outcome.ttft_seconds
                    self._samples.append(
                        {
                            "client_metro": decision.client_metro,
                            "model": parsed.model,
                            "ttft_ms": round(1000 * ttft + candidate.rtt_ms, 3) if ttft is not None else None,
                            "metro": candidate.metro,
                            "scope": str(candidate.scope),
                        }
                    )
                return await self._respond(request, parsed, endpoint, outcome, candidates, attempts, base_headers, info)
            finally:
                self.inflight.change(key, -1)
        self.metrics.requests.labels(parsed.model, "", "", "503").inc()
        info.attempts = attempts
        why = "; ".join(failures[-3:]) or "the request budget ran out"
        return error_response(
            503,
            f"Every site tried for `{parsed.model}` failed ({why}).",
            type="server_error",
            code="no_site_available",
            headers={**base_headers, "x-edgeplane-attempts": str(attempts)},
        )

    def _poisoned(
        self,
        parsed: InferenceRequest,
        suspects: list[_Failure],
        attempts: int,
        base_headers: dict[str, str],
        info: RequestRecord,
    ) -> web.Response:
        """The same request failed the same way at two sites: the request's fault, answered as a client
        error, and held against neither site."""
        self.metrics.requests.labels(parsed.model, "", "", "400").inc()
        self.metrics.poisoned.inc()
        info.attempts = attempts
        said = suspects[-1].message or "an internal error"
        return error_response(
            400,
            f"The model server could not process this request at {len(suspects)} sites ({said}). Check the"
            " request: it is not retried further.",
            type="invalid_request_error",
            code="request_not_processable",
            headers={**base_headers, "x-edgeplane-attempts": str(attempts)},
        )

    async def _respond(
        self,
        request: web.Request,
        parsed: InferenceRequest,
        endpoint: Endpoint,
        outcome: _Ready,
        candidates: list[Candidate],
        attempts: int,
        base_headers: dict[str, str],
        info: RequestRecord,
    ) -> web.StreamResponse:
        candidate = outcome.candidate
        headers = {
            **base_headers,
            "x-edgeplane-metro": candidate.metro,
            "x-edgeplane-site": candidate.pop,
            "x-edgeplane-scope": str(candidate.scope),
            "x-edgeplane-attempts": str(attempts),
        }
        unit = outcome.reply.headers.get("x-edgeplane-unit")
        if unit:
            headers["x-edgeplane-unit"] = unit
        self.metrics.requests.labels(
            parsed.model, candidate.metro, str(candidate.scope), str(outcome.reply.status)
        ).inc()
        if outcome.events is None:
            outcome.reply.release()
            content_type = outcome.reply.content_type.split(";")[0] or "application/json"
            return web.Response(
                body=outcome.body, status=outcome.reply.status, content_type=content_type, headers=headers
            )
        return await self._relay(request, parsed, endpoint, outcome, candidates, attempts, headers, info)

    async def _attempt(
        self, candidate: Candidate, endpoint: Endpoint, raw: bytes, stream: bool, budget_seconds: float
    ) -> _Ready | _Failure:
        """Try one site and hold its answer back until it is known to be good; a _Failure says why not."""
        assert candidate.url is not None
        site = candidate.pop
        sent = time.monotonic()
        try:
            async with asyncio.timeout(budget_seconds):
                reply = await self.client.post(candidate.url + endpoint.value, raw)
        except ConnectError as error:
            return self._failed(site, "connect_error", f"{site}: {error}", Outcome.CONNECT_ERROR)
        except (BackendError, TimeoutError) as error:
            return self._failed(site, "connect_error", f"{site}: {error or 'no answer in time'}")
        if reply.status == 500:
            return await self._suspect(site, reply)
        if reply.status in _RETRYABLE_STATUS:
            reply.close()
            return self._failed(site, f"status_{reply.status}", f"{site}: answered {reply.status}")
        if not (stream and reply.status == 200 and reply.content_type.startswith("text/event-stream")):
            try:
                body = await reply.read()
            except BackendError as error:
                reply.close()
                return self._failed(site, "read_error", f"{site}: {error}")
            if reply.status == 200 and _is_error_body(body):
                return self._failed(site, "error_body", f"{site}: answered 200 with an error body")
            self.metrics.attempts.labels(site, "ok").inc()
            self._record(site, Outcome.OK)
            return _Ready(candidate, reply, body=body)
        events = EventReader(reply.chunks())
        timeout = min(self.options.first_token_timeout_seconds, max(0.0, budget_seconds))
        try:
            async with asyncio.timeout(timeout):
                first = await events.next()
        except TimeoutError:
            reply.close()
            await events.aclose()
            return self._failed(site, "first_token_timeout", f"{site}: no first token in {timeout:.1f} s")
        except BackendError as error:
            reply.close()
            await events.aclose()
            return self._failed(site, "read_error", f"{site}: {error}")
        if first is None or is_error_event(event_data(first)):
            reply.close()
            await events.aclose()
            what = "an empty stream" if first is None else "an error event"
            return self._failed(site, "error_body", f"{site}: answered 200 with {what}")
        self.metrics.attempts.labels(site, "ok").inc()
        ttft = time.monotonic() - sent
        self._record(site, Outcome.OK, ttft_seconds=ttft)
        return _Ready(candidate, reply, events=events, first=first, ttft_seconds=ttft)

    def _failed(self, site: str, label: str, reason: str, outcome: Outcome = Outcome.ERROR) -> _Failure:
        self.metrics.attempts.labels(site, label).inc()
        self._record(site, outcome, why=reason)
        return _Failure(reason)

    async def _suspect(self, site: str, reply: Reply) -> _Failure:
        """A 500: not held against the site yet (see _Failure)."""
        self.metrics.attempts.labels(site, "status_500").inc()
        try:
            body = await reply.read()
        except BackendError:
            reply.close()
            body = b""
        else:
            reply.release()
        return _Failure(f"{site}: answered 500", suspect=True, message=error_message(body))

    async def _relay(
        self,
        request: web.Request,
        parsed: InferenceRequest,
        endpoint: Endpoint,
        ready: _Ready,
        candidates: list[Candidate],
        attempts: int,
        headers: dict[str, str],
        info: RequestRecord,
    ) -> web.StreamResponse:
        """Relay a stream event by event. If it breaks before the model finished, resume it on the next
        candidate (the prompt plus what was sent); if that cannot be done, end with an error event."""
        response = web.StreamResponse(status=200, headers=headers)
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        progress = StreamProgress()
        resumable = endpoint is Endpoint.CHAT or isinstance(parsed.body.get("prompt"), str)
        current: _Ready | None = ready
        try:
            while current is not None:
                assert current.events is not None and current.first is not None
                event: bytes | None = current.first
                broke = ""
                try:
                    while event is not None:
                        progress.observe(event)
                        await response.write(event)
                        if progress.done:
                            break
                        event = await current.events.next()
                except BackendError as error:
                    broke = str(error)
                finally:
                    current.reply.release()
                    await current.events.aclose()
                if progress.done:
                    break
                if progress.finished:
                    # The model finished; only the closing marker was lost.
                    await response.write(DONE)
                    break
                site = current.candidate.pop
                self.metrics.attempts.labels(site, "stream_broken").inc()
                self._record(site, Outcome.ERROR, why=f"stream broke after {progress.tokens} tokens")
                log.warning("stream from %s broke after %d tokens: %s", site, progress.tokens, broke or "ended early")
                current = None
                while resumable and candidates and attempts < self.options.max_attempts:
                    candidate = candidates.pop(0)
                    attempts += 1
                    again = orjson.dumps(resume_body(parsed.body, progress, chat=endpoint is Endpoint.CHAT))
                    outcome = await self._attempt(
                        candidate, endpoint, again, True, self.options.first_token_timeout_seconds
                    )
                    if isinstance(outcome, _Failure):
                        continue
                    note = f": edgeplane resumed at {candidate.pop} after {progress.tokens} tokens from {site}\n\n"
                    await response.write(note.encode())
                    self.metrics.attempts.labels(candidate.pop, "resumed").inc()
                    current = outcome
                    break
                if current is None:
                    message = f"The stream was cut short after {progress.tokens} tokens and could not be resumed."
                    await response.write(error_event(message, type="server_error", code="stream_interrupted"))
                    break
            await response.write_eof()
        except ConnectionError:
            pass  # the client left; the finally blocks above released the site's answer
        before = info.tokens_out
        if progress.events:
            info.count_usage(progress.events[-1])
        if info.tokens_out == before:  # no usage reported: count the events that carried tokens
            info.tokens_out = max(0, len(progress.events) - 1)
        info.attempts = attempts
        return response

    def _visible_models(self, request: web.Request) -> list[str]:
        """The models this request's key may use (every one without auth); ApiError(401) for a bad key, as
        OpenAI answers every /v1 route without a valid key."""
        state = self.watcher.state
        if state is None:
            return []
        names = [m.name for m in state.fleet.models]
        if not self.options.auth:
            return names
        policy = self._authenticate(request, state.keys)
        return [n for n in names if policy.models is None or n in policy.models]

    async def _models(self, request: web.Request) -> web.Response:
        try:
            names = self._visible_models(request)
        except ApiError as error:
            return web.Response(body=error.body(), status=error.status, content_type="application/json")
        return json_response({"object": "list", "data": [_model_object(n) for n in names]})

    async def _model(self, request: web.Request) -> web.Response:
        """One model, as the SDK's ``models.retrieve`` reads it (404 for one the key may not use, too)."""
        name = request.match_info["model"]
        try:
            names = self._visible_models(request)
            if name not in names:
                raise model_not_found(name)
        except ApiError as error:
            return web.Response(body=error.body(), status=error.status, content_type="application/json")
        return json_response(_model_object(name))

    async def _healthz(self, request: web.Request) -> web.Response:
        """ok only while this gateway has a site to send requests to."""
        state = self.watcher.state
        age = self.watcher.age_seconds()
        status = "no_snapshot"
        if state is not None:
            usable = self._sites(state.snapshot.version, state.snapshot.sites).values()
            live = any(v.state in (SiteState.SERVING, SiteState.DEGRADED) for v in usable)
            status = "ok" if live else "no_site_available"
        body = {
            "status": status,
            "snapshot_version": state.snapshot.version if state else None,
            "snapshot_age_seconds": round(age, 3) if age is not None else None,
            "control_plane_reachable": self.watcher.reachable,
            "sites": {
                pop: str(h.state) for pop, h in sorted(self.health.sites.items()) if h.state is not Health.SERVING
            },
        }
        return json_response(body, status=200 if status == "ok" else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        state = self.watcher.state
        if state is not None:
            self.metrics.snapshot_version.set(state.snapshot.version)
            self.metrics.snapshot_age.set(self.watcher.age_seconds() or 0.0)
            for pop in state.snapshot.sites:
                current = self.health.state(pop)
                for health in Health:
                    self.metrics.site_health.labels(pop, health.value).set(1.0 if health is current else 0.0)
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "edgeplane"}


def _is_error_body(body: bytes) -> bool:
    """A 200 whose body is an error instead of a completion."""
    if not body.startswith(b"{") or b'"error"' not in body:
        return False
    try:
        return is_error_event(orjson.loads(body))
    except orjson.JSONDecodeError:
        return False
