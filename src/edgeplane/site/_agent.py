"""The site agent: one process per PoP serving the models placed there, reporting state upward."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from edgeplane._errors import BackendError, ConfigError, StreamCut
from edgeplane.fabric import FabricNode
from edgeplane.faults import CATALOGUE, Fault, FaultError, FaultKind
from edgeplane.fleet import Fleet
from edgeplane.site._backend import Backend
from edgeplane.site._emulator import EmulatorBackend
from edgeplane.site._llamacpp import LlamaCppBackend
from edgeplane.site._upstream import UpstreamBackend
from edgeplane.telemetry import UnitWatch
from edgeplane.web import (
    MAX_BODY_BYTES,
    PROBE_HEADER,
    RELAYED_HEADER,
    ApiError,
    ConnectionLimits,
    ControlUrls,
    Endpoint,
    HttpClient,
    Listener,
    abort,
    actor,
    admin,
    browser_guard,
    error_body,
    error_event,
    error_response,
    json_errors,
    json_response,
    model_not_found,
    openai_error,
    parse_request,
    read_body,
    relay_stream,
    serve,
    supervised,
)

log = logging.getLogger("edgeplane.site")

BACKEND_KINDS = ("emulator", "llamacpp", "upstream")
MAX_AUDIT_KEPT = 1000


@dataclass(frozen=True)
class SiteOptions:
    backend: str = "emulator"
    seed: int = 0
    time_scale: float = 1.0
    gguf_path: Path | None = None  # llamacpp: the model file every model of this site loads
    upstream_url: str | None = None  # upstream: the OpenAI-compatible server behind this site


# The emulator reads a model's weights from local NVMe at this rate when it is placed on a site.
DISK_GB_PER_SECOND = 2.0


def build_backend(
    fleet: Fleet, pop: str, model: str, replicas: int, options: SiteOptions, registry: CollectorRegistry
) -> Backend:
    """One backend for one model at the PoP, of the kind asked for."""
    if pop not in fleet.pop_by_code:
        raise ConfigError(f"unknown PoP {pop!r}; expected one of: {', '.join(sorted(fleet.pop_by_code))}")
    if model not in fleet.model_by_name:
        raise ConfigError(f"unknown model {model!r}; expected one of: {', '.join(fleet.model_by_name)}")
    spec = fleet.model_by_name[model]
    if options.backend == "emulator":
        gpu_type = fleet.best_gpu_type(model, pop) or next(iter(spec.throughput_tokens_per_second))
        pop_seed = options.seed * 7919 + fleet.pop_by_code[pop].id
        units = fleet.unit_replicas(pop, model, replicas)
        return EmulatorBackend(
            spec, gpu_type, replicas, seed=pop_seed, time_scale=options.time_scale, registry=registry, units=units
        )
    if options.backend == "llamacpp":
        if options.gguf_path is None:
            raise ConfigError("the llamacpp backend needs a GGUF file (--gguf PATH)")
        return LlamaCppBackend(model, options.gguf_path)
    if options.backend == "upstream":
        if not options.upstream_url:
            raise ConfigError("the upstream backend needs a URL (--upstream URL)")
        return UpstreamBackend(model, options.upstream_url, capacity=spec.max_concurrency * replicas)
    raise ConfigError(f"unknown backend {options.backend!r}; expected one of: {', '.join(BACKEND_KINDS)}")


def load_seconds(fleet: Fleet, model: str, options: SiteOptions) -> float:
    """How long the emulator takes to load a model: its file over the local disk (others load for real)."""
    if options.backend != "emulator":
        return 0.0
    return fleet.model_by_name[model].file_size_gb / DISK_GB_PER_SECOND * options.time_scale


def build_backends(fleet: Fleet, pop: str, options: SiteOptions, registry: CollectorRegistry) -> dict[str, Backend]:
    """One backend per model placed at the PoP, of the kind asked for."""
    return {
        model: build_backend(fleet, pop, model, replicas, options, registry)
        for model, replicas in fleet.models_at(pop).items()
    }


WEIGHTS_POLL_SECONDS = 0.1


class ModelLoader:
    """Builds and loads the backend of a model newly placed on a site (the placement is applied live). A model
    whose weights travel over the fabric (``weights``: model -> object sha256, from the control plane) loads only
    once the site holds that object complete and verified from disk; the llama.cpp backend then loads the file
    it received."""

    def __init__(
        self,
        fleet: Fleet,
        pop: str,
        options: SiteOptions,
        registry: CollectorRegistry,
        fabric: FabricNode | None = None,
    ) -> None:
        self.fleet, self.pop, self.options, self.registry, self.fabric = fleet, pop, options, registry, fabric
        self.units_out: frozenset[str] = frozenset()  # what a newly loaded backend starts with
        self.weights: dict[str, str] = {}
        self.waiting: dict[str, Any] | None = None  # the weights a load waits for: model, bytes held of size

    async def load(self, model: str, replicas: int, wanted: Callable[[], bool] = lambda: True) -> Backend | None:
        """The model's backend, loaded; None if it stopped being ``wanted`` while its weights were on the way."""
        options = self.options
        if model in self.weights and self.fabric is not None:
            ready, path = await self._weights(model, wanted)
            if not ready:
                return None
            if path is not None and options.backend == "llamacpp":
                options = dataclasses.replace(options, gguf_path=path)
        backend = build_backend(self.fleet, self.pop, model, replicas, options, self.registry)
        backend.units_out = self.units_out
        await asyncio.sleep(load_seconds(self.fleet, model, self.options))
        await backend.start()
        return backend

    async def _weights(self, model: str, wanted: Callable[[], bool]) -> tuple[bool, Path | None]:
        """Until the site holds the model's weights complete and hashed right from its disk: (True, their path);
        (True, None) once the model has no weights on the fabric any more (removed: it loads as before); (False,
        None) if the model stopped being wanted here. Weights pushed again meanwhile are the ones waited for."""
        assert self.fabric is not None
        store = self.fabric.store
        try:
            while wanted():
                sha = self.weights.get(model)
                if sha is None:
                    return True, None
                held = store.get(sha)
                if held is not None and held.complete:
                    verified = held.verified_sha256 or await asyncio.to_thread(store.verify, sha)
                    if verified == sha:
                        log.info("site %s: weights of %s verified (%s)", self.pop, model, sha[:12])
                        return True, store.data_path(sha)
                size = held.manifest.size_bytes if held is not None else None
                self.waiting = {"model": model, "sha256": sha, "bytes_held": held.bytes_held if held else 0,
                                "size_bytes": size}  # fmt: skip
                await asyncio.sleep(WEIGHTS_POLL_SECONDS)
        finally:
            self.waiting = None
        return False, None


class SiteAgent:
    """Serves the OpenAI endpoints of one PoP's models and reports models, load and health."""

    def __init__(
        self,
        pop: str,
        backends: Mapping[str, Backend],
        *,
        kind: str,
        registry: CollectorRegistry,
        control_url: str | ControlUrls | None = None,
        report_interval_seconds: float = 0.5,
        admin_token: str | None = None,
        loader: ModelLoader | None = None,
        watch: UnitWatch | None = None,
        fabric: FabricNode | None = None,
        link_scale: float = 1.0,
    ) -> None:
        self.pop = pop
        self.fabric = fabric  # the site's object store, served to and filled from other sites
        self.link_scale = link_scale  # the fabric's links run at their capacity times this
        if fabric is not None and control_url:
            fabric.on_stuck = self._fabric_stuck
        self.watch = watch  # the units' facility telemetry and alarms
        self.loader = loader
        self.replicas: dict[str, int] = {}  # per model, as last placed
        self.desired: dict[str, int] | None = None  # what the control plane's placement wants here
        self.loading: str | None = None
        self._models_changed = asyncio.Event()
        self.admin_token = admin_token  # needed for faults here, and sent with reports
        self._auth_headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else None
        self._audit: list[dict[str, Any]] = []  # admin actions taken here, for the control plane's audit log
        self.backends = dict(backends)
        self.kind = kind
        self.registry = registry
        self.control = ControlUrls.of(control_url) if control_url else None
        self.report_interval_seconds = report_interval_seconds
        self.url: str | None = None
        self.fault: Fault | None = None
        self._fault_until: float | None = None  # monotonic
        self._listener: Listener | None = None
        self._client = HttpClient(connect_timeout_seconds=1.0)
        self._requests = Counter(
            "edgeplane_site_requests",
            "Requests answered by this site.",
            ["model", "status"],
            registry=registry,
        )
        self._unit_requests = Counter(
            "edgeplane_unit_requests", "Requests answered by a unit's GPUs.", ["unit", "model"], registry=registry
        )
        self.units_out: dict[str, str] = {}  # the PoP's units that carry no traffic, and why (control plane)

    def __repr__(self) -> str:
        loading = f", loading {self.loading}" if self.loading else ""
        return f"<SiteAgent {self.pop} [{self.kind}: {', '.join(self.backends)}{loading}]>"

    # -- placement ----------------------------------------------------------------------------
    def want(self, models: Mapping[str, int]) -> None:
        """The placement for this site changed: load and unload until ``models`` is what serves."""
        desired = {str(m): int(n) for m, n in models.items() if int(n) > 0}
        if desired != self.desired:
            self.desired = desired
            self._models_changed.set()

    async def models_forever(self) -> None:
        """One model at a time, as a disk would: unload what is no longer placed, load what is newly placed
        (a model serves, and is reported, only once loaded), rebuild what changed its replica count."""
        assert self.loader is not None
        while True:
            await self._models_changed.wait()
            self._models_changed.clear()
            desired = dict(self.desired or {})
            for model in [m for m in self.backends if m not in desired]:
                backend = self.backends.pop(model)
                self.replicas.pop(model, None)
                log.info("site %s: unloaded %s", self.pop, model)
                await backend.stop()
            for model, replicas in desired.items():
                if model in self.backends and self.replicas.get(model, replicas) == replicas:
                    continue
                self.loading = model
                try:
                    loaded = await self.loader.load(model, replicas, functools.partial(self._placed_here, model))
                except (ConfigError, BackendError) as error:
                    log.error("site %s: cannot load %s: %s", self.pop, model, error)
                    continue
                finally:
                    self.loading = None
                if loaded is None:
                    break  # placed elsewhere while its weights were on the way: start over from the placement
                backend = loaded
                old = self.backends.get(model)
                self.backends[model] = backend
                self.replicas[model] = replicas
                log.info("site %s: loaded %s (%d replicas)", self.pop, model, replicas)
                if old is not None:
                    await old.stop()
                if self._models_changed.is_set():
                    break  # the placement moved again meanwhile: start over from it

    def _placed_here(self, model: str) -> bool:
        return model in (self.desired or {})

    def set_units_out(self, out: Mapping[str, str]) -> None:
        """The control plane says which units carry no traffic: their replicas take no new requests (those
        running finish); the reported capacity shrinks with them."""
        out = {str(k): str(v) for k, v in out.items()}
        if out == self.units_out:
            return
        for unit in sorted(set(out) - set(self.units_out)):
            log.warning("site %s: unit %s carries no traffic (%s)", self.pop, unit, out[unit])
        for unit in sorted(set(self.units_out) - set(out)):
            log.info("site %s: unit %s carries traffic again", self.pop, unit)
        self.units_out = out
        for backend in self.backends.values():
            backend.units_out = frozenset(out)
        if self.loader is not None:
            self.loader.units_out = frozenset(out)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_BODY_BYTES, middlewares=[json_errors, browser_guard(admin_token=self.admin_token)]
        )
        app.router.add_post(Endpoint.CHAT.value, self._inference(Endpoint.CHAT))
        app.router.add_post(Endpoint.COMPLETIONS.value, self._inference(Endpoint.COMPLETIONS))
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/state", self._state_handler)
        app.router.add_get("/api/faults", self._faults)
        app.router.add_post("/api/faults", self._set_fault_handler)
        app.router.add_delete("/api/faults", self._clear_fault_handler)
        if self.fabric is not None:
            app.add_routes(self.fabric.routes())
        return app

    # -- faults -------------------------------------------------------------------------------
    def set_fault(self, fault: Fault) -> None:
        emulated = [b for b in self.backends.values() if isinstance(b, EmulatorBackend)]
        if fault.kind in (FaultKind.STALL, FaultKind.CUT, FaultKind.SLOW) and len(emulated) != len(self.backends):
            raise FaultError(f"{fault.kind} needs the emulator backend; this site runs {self.kind}")
        self.clear_fault()
        self.fault = fault
        self._fault_until = time.monotonic() + fault.seconds if fault.seconds else None
        for backend in emulated:
            backend.fault = fault
        log.warning("site %s: fault %s injected", self.pop, fault.kind)
        if fault.kind is FaultKind.CRASH:
            # Answer the request that asked for it first, then die as a crash would: no cleanup.
            asyncio.get_running_loop().call_later(0.05, os._exit, 70)

    def clear_fault(self) -> None:
        if self.fault is not None:
            log.warning("site %s: fault %s cleared", self.pop, self.fault.kind)
        self.fault, self._fault_until = None, None
        for backend in self.backends.values():
            if isinstance(backend, EmulatorBackend):
                backend.fault = None

    async def faults_forever(self) -> None:
        """Ends faults whose time is up, and keeps the listening socket as the fault says."""
        while True:
            if self._fault_until is not None and time.monotonic() >= self._fault_until:
                self.clear_fault()
            if self._listener is not None:
                refusing = self.fault is not None and self.fault.kind is FaultKind.REFUSE
                if refusing and self._listener.listening:
                    await self._listener.close()
                elif not refusing and not self._listener.listening:
                    await self._listener.open()
            await asyncio.sleep(0.02)

    async def _faults(self, request: web.Request) -> web.Response:
        catalogue = [{"fault": k.value, "what": what} for k, what in CATALOGUE.items()]
        return json_response({"active": self.fault.to_json() if self.fault else None, "catalogue": catalogue})

    def _audited(self, request: web.Request, action: str, outcome: str, detail: dict[str, Any]) -> None:
        """Keep an admin action for the next report, unless the control plane passed it on (and audits it)."""
        if request.headers.get(RELAYED_HEADER):
            return
        self._audit.append(
            {"at": time.time(), "who": actor(request), "action": action, "outcome": outcome, "detail": detail}
        )
        del self._audit[:-MAX_AUDIT_KEPT]

    @admin
    async def _set_fault_handler(self, request: web.Request) -> web.Response:
        try:
            data = orjson.loads(await read_body(request))
            if not isinstance(data, dict):
                raise FaultError("expected a JSON object")
            fault = Fault.from_json(data)
            self.set_fault(fault)
        except (orjson.JSONDecodeError, FaultError) as error:
            self._audited(request, "fault", "refused", {"reason": str(error)})
            return error_response(400, str(error), type="invalid_request_error", code="bad_fault")
        self._audited(request, "fault", "ok", fault.to_json())
        return json_response({"pop": self.pop, "active": fault.to_json()})

    @admin
    async def _clear_fault_handler(self, request: web.Request) -> web.Response:
        self.clear_fault()
        self._audited(request, "clear fault", "ok", {})
        return json_response({"pop": self.pop, "active": None})

    def _fault_answer(self, stream: bool) -> web.Response | None:
        """The answer an injected fault gives instead of the model's, if any."""
        fault = self.fault
        if fault is None:
            return None
        if fault.kind is FaultKind.HTTP_429:
            return error_response(
                429,
                "Too many requests (injected fault).",
                type="rate_limit_error",
                code="rate_limited",
                headers={"Retry-After": "1"},
            )
        if fault.kind is FaultKind.HTTP_503:
            return error_response(503, "Service unavailable (injected fault).", type="server_error", code="unavailable")
        if fault.kind is FaultKind.ERROR_200:
            message, code = "Internal error (injected fault).", "internal_error"
            if stream:
                event = error_event(message, type="server_error", code=code)
                return web.Response(body=event, content_type="text/event-stream")
            return web.Response(
                body=error_body(message, type="server_error", code=code), content_type="application/json"
            )
        return None

    def _inference(self, endpoint: Endpoint) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            if self.fault is not None and self.fault.kind is FaultKind.REFUSE:
                # The listener is closed; a client still holding a kept-alive connection is dropped too.
                abort(request)
                return web.Response()
            try:
                raw = await read_body(request)
            except ApiError as error:  # too large, or a body that stopped arriving
                return web.Response(
                    body=error.body(), status=error.status, content_type="application/json", headers=error.headers
                )
            try:
                parsed = parse_request(endpoint, raw)
                backend = self.backends.get(parsed.model)
                if backend is None:
                    raise model_not_found(parsed.model)
            except ApiError as error:
                return web.Response(body=error.body(), status=error.status, content_type="application/json")
            if self.fault is not None and self.fault.spare_probes and request.headers.get(PROBE_HEADER) == "1":
                parsed = dataclasses.replace(parsed, spared=True)
            faulty = None if parsed.spared else self._fault_answer(parsed.stream)
            if faulty is not None:
                self._requests.labels(parsed.model, str(faulty.status)).inc()
                return faulty
            if not backend.serves():
                self._requests.labels(parsed.model, "503").inc()
                out = ", ".join(sorted(self.units_out))
                return error_response(
                    503, f"No unit carrying {parsed.model} here takes traffic ({out}).", type="server_error",
                    code="unit_drained",
                )  # fmt: skip
            try:
                answer = await backend.generate(parsed, raw)
            except BackendError as error:
                self._requests.labels(parsed.model, "502").inc()
                return error_response(
                    502, f"Model server unavailable: {error}", type="server_error", code="backend_error"
                )
            self._requests.labels(parsed.model, str(answer.status)).inc()
            headers = {"x-edgeplane-unit": answer.unit} if answer.unit else None
            if answer.unit:
                self._unit_requests.labels(answer.unit, parsed.model).inc()
            try:
                if answer.content_type.startswith("text/event-stream"):
                    return await relay_stream(request, answer.status, answer.content_type, answer.chunks, headers)
                try:
                    body = b"".join([chunk async for chunk in answer.chunks])
                except StreamCut:
                    abort(request)
                    return web.Response()
                except BackendError as error:
                    return error_response(
                        502, f"Model server broke off: {error}", type="server_error", code="backend_error"
                    )
                if answer.status >= 400:
                    body = openai_error(answer.status, body)  # a model server's own error shape, made OpenAI's
                return web.Response(body=body, status=answer.status, content_type="application/json", headers=headers)
            finally:
                answer.release()

        return handle

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [{"id": m, "object": "model", "created": created, "owned_by": "edgeplane"} for m in self.backends]
        return json_response({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "pop": self.pop, "models": sorted(self.backends)})

    async def _state_handler(self, request: web.Request) -> web.Response:
        return json_response(await self.state())

    async def state(self) -> dict[str, Any]:
        models: dict[str, Any] = {}
        measured_at = time.time()
        for name, backend in self.backends.items():
            load = await backend.load()
            models[name] = {
                "running": load.running,
                "waiting": load.waiting,
                "kv_cache_usage": load.kv_cache_usage,
                "capacity": load.capacity,
                "utilisation": load.utilisation,
            }
        utilisation = max((m["utilisation"] for m in models.values()), default=0.0)
        return {
            "pop": self.pop,
            "url": self.url,
            "pid": os.getpid(),
            "backend": self.kind,
            "models": models,
            "load": utilisation,
            "fault": self.fault.to_json() if self.fault else None,
            "loading": self.loading,
            "loading_weights": self.loader.waiting if self.loader is not None else None,
            "measured_at": measured_at,
            "units": self.watch.state() if self.watch is not None else {},
            "units_out": self.units_out,
            "fabric": self.fabric.report() if self.fabric is not None else [],
            "link_scale": self.link_scale,
        }

    async def report_forever(self) -> None:
        """Push state to the control plane; keep serving whether or not it answers."""
        assert self.control is not None
        control = self.control
        reachable = True
        failures = 0  # in a row
        refused: str | None = None
        while True:
            events = self.watch.take_events() if self.watch is not None else []
            audit, self._audit = self._audit, []
            base = control.current
            try:
                payload = {**await self.state(), "alarm_events": events, "audit_events": audit}
                status, answer = await self._client.request_json(
                    "POST", f"{base}/api/agents/{self.pop}/report", payload, timeout_seconds=2.0,
                    headers=self._auth_headers,
                )  # fmt: skip
                if status >= 300:
                    self._put_back(events, audit)
                if status >= 500:
                    control.failed(base)
                refusal = None
                if 400 <= status < 500:
                    refusal = answer.get("error", {}).get("message") if isinstance(answer, dict) else str(answer)
                if refusal is not None and refusal != refused:  # said once, not twice a second
                    log.error("the control plane refuses this site's reports (%s): %s", status, refusal)
                refused = refusal
                placed = answer.get("models") if status == 200 and isinstance(answer, dict) else None
                if isinstance(placed, dict) and self.loader is not None:
                    self.want(placed)
                out = answer.get("units_out") if status == 200 and isinstance(answer, dict) else None
                if isinstance(out, dict):
                    self.set_units_out(out)
                weights = answer.get("weights") if status == 200 and isinstance(answer, dict) else None
                if isinstance(weights, dict) and self.loader is not None:
                    self.loader.weights = {str(m): str(sha) for m, sha in weights.items()}
                fetch = answer.get("fabric") if status == 200 and isinstance(answer, dict) else None
                if isinstance(fetch, list) and self.fabric is not None:
                    await self.fabric.reconcile(fetch)
                if not reachable:
                    log.info("control plane reachable again")
                reachable = status < 500
                failures = 0 if reachable else failures
            except BackendError as error:
                self._put_back(events, audit)
                if reachable:
                    log.warning("cannot report to the control plane (%s); still serving", error)
                reachable = False
                control.failed(base)
                failures += 1
                if failures % len(control.urls):
                    continue  # the next replica at once; a full round of them after the interval
            await asyncio.sleep(self.report_interval_seconds)

    async def _fabric_stuck(self, sha: str, source: str, reason: str) -> None:
        """Tell the control plane this site cannot fetch an object from its source: it plans around it."""
        assert self.control is not None and self.fabric is not None
        held = self.fabric.store.get(sha)
        if held is None:
            return
        fetch = self.fabric.fetches.get(sha)
        where = next((s.url for s in fetch.sources if s.pop == source), None) if fetch is not None else None
        url = f"{self.control.current}/api/fabric/transfers/{quote(held.manifest.name, safe='')}/stuck"
        try:
            await self._client.request_json(
                "POST", url, {"pop": self.pop, "source": source, "error": reason[:1000], "sha256": sha, "url": where},
                timeout_seconds=5.0,
                headers=self._auth_headers,
            )  # fmt: skip
        except BackendError as error:
            log.warning("cannot tell the control plane that %s does not send: %s", source, error)

    def _put_back(self, events: list[dict[str, Any]], audit: list[dict[str, Any]]) -> None:
        """What a report could not deliver goes with the next one."""
        if events and self.watch is not None:
            self.watch.put_back(events)
        self._audit = (audit + self._audit)[-MAX_AUDIT_KEPT:]

    async def run(
        self,
        host: str,
        port: int,
        *,
        on_ready: Any = None,
        stop: asyncio.Event | None = None,
        advertise_address: str | None = None,
    ) -> None:
        """Serve until stopped. ``advertise_address``: the address gateways reach this agent at, reported to
        the control plane in place of ``host`` (needed when that is a wildcard such as 0.0.0.0)."""
        started: list[Backend] = []
        initial = list(self.backends.values())
        try:
            for backend in self.backends.values():
                await backend.start()
                started.append(backend)

            def ready(url: str) -> Any:
                if advertise_address is not None:
                    shown = f"[{advertise_address}]" if ":" in advertise_address else advertise_address
                    url = f"http://{shown}:{url.rsplit(':', 1)[1]}"
                self.url = url
                log.info("site %s serving %s at %s", self.pop, ", ".join(self.backends), url)
                return on_ready(url) if on_ready else None

            def background(url: str) -> list[Any]:
                jobs: list[Any] = [supervised(f"faults of {self.pop}", self.faults_forever)]
                if self.control is not None:
                    jobs.append(supervised(f"reports of {self.pop}", self.report_forever))
                if self.loader is not None:
                    jobs.append(supervised(f"model loading at {self.pop}", self.models_forever))
                if self.watch is not None:
                    jobs.append(supervised(f"unit telemetry at {self.pop}", self.watch.forever))
                if self.fabric is not None:
                    jobs.append(supervised(f"fabric at {self.pop}", self.fabric.forever))
                return jobs

            def keep(listener: Listener) -> None:
                self._listener = listener

            # Gateways pool many connections to an agent from one address each: no per-address limit here.
            await serve(
                self.app(), host, port, on_ready=ready, background=background, stop=stop, on_listener=keep,
                limits=ConnectionLimits(max_connections_per_address=None),
            )  # fmt: skip
        finally:
            # What serves now: the first backends that started, and any loaded since (unloaded ones stopped then).
            for backend in reversed(list(self.backends.values())):
                if any(backend is b for b in started) or not any(backend is b for b in initial):
                    await backend.stop()
            if self.fabric is not None:
                await self.fabric.close()
            await self._client.close()
