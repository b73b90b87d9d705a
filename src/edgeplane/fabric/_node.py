"""The fabric at one site: its object store served to the other sites over links held to their capacity, and the
fetches that fill it, chunk by chunk, from the sources the control plane names."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from aiohttp import web
from aiolimiter import AsyncLimiter
from pydantic import Field

from edgeplane._errors import BackendError
from edgeplane.fabric._manifest import ChunkRejected, FabricError, Manifest, ManifestError, StoreFull
from edgeplane.fabric._store import ObjectStore
from edgeplane.planning import FabricLink, link_between, widest_rate
from edgeplane.web import (
    ApiError,
    Body,
    Code,
    HttpClient,
    admin,
    error_response,
    json_error,
    json_response,
    parse,
    read_body,
)

log = logging.getLogger("edgeplane.fabric")

FABRIC_POP_HEADER = "X-Edgeplane-Fabric-Pop"  # the site asking for a chunk: its link is the one that carries it
SLICE_BYTES = 64 * 1024  # what a link's bucket is asked for at a time
WINDOW = 4  # chunk requests in flight to one source: the link never idles between chunks
MAX_CHUNK_WAIT_SECONDS = 30.0  # how long a source holds a request for a chunk it is still receiving
CHUNK_WAIT_SECONDS = 10.0
RETRY_SECONDS = 1.0
SEND_GRACE_SECONDS = 5.0
BODY_SECONDS = 30.0  # the most a chunk's upload may take
SHA256_HEX = r"^[0-9a-f]{64}$"


class FetchState(enum.Enum):
    WAITING = "waiting"  # no source to fetch from (yet)
    FETCHING = "fetching"
    COMPLETE = "complete"
    FAILED = "failed"  # the store cannot take it (a full disk): said, never shown complete


class SourceBody(Body):
    pop: Code
    url: Annotated[str, Field(min_length=1, max_length=300, pattern=r"^https?://")]


class PlannedBody(Body):
    """One row of the fabric part of the control plane's answer to a report."""

    sha256: Annotated[str, Field(pattern=SHA256_HEX)]
    sources: Annotated[list[SourceBody], Field(max_length=64)] = Field(default_factory=list)
    manifest: dict[str, Any] | None = None


class AssignBody(Body):
    """What the control plane tells a site: hold this object, fetching it from these sources (in order)."""

    expected = "{manifest, sources: [{pop, url}]}"

    manifest: dict[str, Any]
    sources: Annotated[list[SourceBody], Field(max_length=64)] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Source:
    pop: str
    url: str


@dataclass
class Fetch:
    """One object being filled at this site."""

    sha256: str
    sources: list[Source] = field(default_factory=list)
    state: FetchState = FetchState.WAITING
    error: str | None = None
    source: str | None = None  # the PoP it receives from now (or last did)
    completed_at: float | None = None  # unix seconds: its last chunk held (each chunk verified as it arrived)
    verified_at: float | None = None  # unix seconds: then read back whole from disk and hashed right
    last_held_at: float | None = None
    failed: set[str] = field(default_factory=set)  # sources that broke off; tried again once re-assigned
    generation: int = 0  # bumped by every new assignment: workers of an older one stop
    manifest: Manifest | None = None  # kept to report an object the store refused (a full disk)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __repr__(self) -> str:
        return f"<Fetch {self.sha256[:12]} [{self.state.value} from {self.source or '-'}]>"

    def next_source(self) -> Source | None:
        return next((s for s in self.sources if s.pop not in self.failed), None)


class SourceFailed(Exception):
    """The source broke off, or sent what does not verify."""


class Shaper:
    """What this site sends to each other site goes through a token bucket at the capacity of the link between
    them (the widest path's bottleneck when they have none), one chunk at a time, after the link's round trip."""

    def __init__(self, pop: str, links: Sequence[FabricLink]) -> None:
        self.pop, self.links = pop, list(links)
        self._buckets: dict[str, AsyncLimiter] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<Shaper {self.pop} [Links: {len(self.links)}]>"

    def rate(self, peer: str) -> float:
        link = link_between(self.links, self.pop, peer)
        return link.bytes_per_second if link is not None else widest_rate(self.links, self.pop, peer)

    def rtt_seconds(self, peer: str) -> float:
        link = link_between(self.links, self.pop, peer)
        return link.rtt_seconds if link is not None else 0.0

    async def send(self, response: web.StreamResponse, data: bytes, peer: str | None) -> None:
        rate = self.rate(peer) if peer else 0.0
        if not peer or rate <= 0 or math.isinf(rate):
            await response.write(data)
            return
        if peer not in self._buckets:
            period = max(0.01, SLICE_BYTES / rate)
            self._buckets[peer] = AsyncLimiter(rate * period, period)
            self._locks[peer] = asyncio.Lock()
        bucket, lock = self._buckets[peer], self._locks[peer]
        view = memoryview(data)
        # A peer that stops reading (a killed process whose connection is not yet reset) must not hold the link:
        # a chunk gets a few times its time on the link, then the next request goes.
        allowed = 4 * len(view) / rate + SEND_GRACE_SECONDS
        async with lock, asyncio.timeout(allowed):
            await asyncio.sleep(self.rtt_seconds(peer))
            for offset in range(0, len(view), SLICE_BYTES):
                piece = view[offset : offset + SLICE_BYTES]
                await bucket.acquire(len(piece))
                await response.write(piece)


Stuck = Callable[[str, str, str], Awaitable[None]]  # (object sha256, source PoP, what went wrong)


class FabricNode:
    """One site's part of the fabric: serves chunks it holds, fetches those it is told to hold."""

    def __init__(
        self,
        pop: str,
        store: ObjectStore,
        links: Sequence[FabricLink],
        *,
        pops: Collection[str] = (),
        admin_token: str | None = None,
        on_stuck: Stuck | None = None,
    ) -> None:
        self.pop, self.store, self.admin_token, self.on_stuck = pop, store, admin_token, on_stuck
        self.pops = frozenset(pops) | {link.a for link in links} | {link.b for link in links}
        self.shaper = Shaper(pop, links)
        self.fetches: dict[str, Fetch] = {}
        self.egress_bytes: dict[str, int] = {}
        self._auth = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._arrived: dict[str, asyncio.Event] = {}
        self._wake: asyncio.Queue[str] = asyncio.Queue()
        self._client = HttpClient(connect_timeout_seconds=1.0, read_timeout_seconds=CHUNK_WAIT_SECONDS + 5)

    def __repr__(self) -> str:
        busy = sum(f.state is FetchState.FETCHING for f in self.fetches.values())
        return f"<FabricNode {self.pop} [Objects: {len(self.store.objects())} | Fetching: {busy}]>"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/fabric/chunks/{sha}/{index}", self._get_chunk),
            web.put("/fabric/chunks/{sha}/{index}", self._put_chunk),
            web.get("/api/fabric/objects", self._list),
            web.post("/api/fabric/objects", self._assign_handler),
            web.get("/api/fabric/objects/{sha}", self._one),
            web.delete("/api/fabric/objects/{sha}", self._remove),
        ]

    # -- what the site holds -----------------------------------------------------------------
    def report(self) -> list[dict[str, Any]]:
        """Per object: what is held, whether it verified, what this site sent of it, where it comes from."""
        rows = []
        for held in self.store.objects():
            fetch = self.fetches.get(held.manifest.sha256)
            rows.append(
                {
                    **held.to_json(),
                    "egress_bytes": self.egress_bytes.get(held.manifest.sha256, 0),
                    "state": fetch.state.value if fetch else ("complete" if held.complete else "waiting"),
                    "source": fetch.source if fetch else None,
                    "completed_at": fetch.completed_at if fetch else None,
                    "verified_at": fetch.verified_at if fetch else None,
                    "error": fetch.error if fetch else None,
                }
            )
        held_shas = {row["sha256"] for row in rows}
        for fetch in self.fetches.values():  # refused by the store: said, never shown as held
            if fetch.manifest is not None and fetch.sha256 not in held_shas and fetch.state is FetchState.FAILED:
                m = fetch.manifest
                rows.append(
                    {
                        "name": m.name, "sha256": m.sha256, "size_bytes": m.size_bytes, "chunk_count": m.chunk_count,
                        "chunks_held": 0, "bytes_held": 0, "complete": False, "verified_sha256": None,
                        "egress_bytes": 0, "state": "failed", "source": None, "completed_at": None,
                        "error": fetch.error,
                    }
                )  # fmt: skip
        return rows

    async def assign(self, manifest: Manifest, sources: Sequence[Source]) -> dict[str, Any]:
        """Hold ``manifest``'s object, fetching what is missing from ``sources`` in order. StoreFull when it does
        not fit here."""
        sha = manifest.sha256
        try:
            held = await asyncio.to_thread(self.store.add, manifest)
        except StoreFull as error:
            fetch = self.fetches.setdefault(sha, Fetch(sha))
            fetch.state, fetch.error, fetch.manifest = FetchState.FAILED, str(error), manifest
            log.error("site %s: cannot hold %s: %s", self.pop, manifest.name, error)
            raise
        # Looked up after the store's thread: a push and a report's answer may assign it at once, one fetch only.
        fetch = self.fetches.setdefault(sha, Fetch(sha))
        if list(sources) != fetch.sources:
            fetch.sources, fetch.failed = list(sources), set()
            fetch.generation += 1
            fetch.changed.set()
        if held.complete:
            fetch.state = FetchState.COMPLETE
        elif fetch.state is not FetchState.FETCHING:
            fetch.state, fetch.error = FetchState.WAITING, None
            self._wake.put_nowait(sha)
        return {**held.to_json(), "state": fetch.state.value}

    async def reconcile(self, rows: Sequence[Any]) -> None:
        """What the control plane's answer says this site should be fetching: a site that restarted (or missed
        a push) resumes here from the chunks it holds."""
        for raw in rows[:1000]:
            try:
                row = PlannedBody.model_validate(raw)
                held = self.store.get(row.sha256)
                manifest = Manifest.model_validate(row.manifest) if row.manifest else (held and held.manifest)
            except ValueError as error:
                log.warning("site %s: a fabric plan it cannot read: %s", self.pop, str(error)[:300])
                continue
            if not manifest or manifest.sha256 != row.sha256:
                continue
            sources = [Source(s.pop, s.url.rstrip("/")) for s in row.sources]
            fetch = self.fetches.get(row.sha256)
            if fetch is not None and fetch.sources == sources:
                continue
            try:
                await self.assign(manifest, sources)
            except FabricError as error:
                log.error("site %s: cannot hold %s: %s", self.pop, manifest.name, error)

    async def forever(self) -> None:
        """Owns the fetches: one task per object being filled, for as long as the site runs."""
        running: dict[str, asyncio.Task[None]] = {}
        async with asyncio.TaskGroup() as group:
            group.create_task(self._verify_held())
            while True:
                sha = await self._wake.get()
                task = running.get(sha)
                if task is None or task.done():
                    running[sha] = group.create_task(self._fetch(sha))

    async def _verify_held(self) -> None:
        """Objects found complete on disk at start are hashed again from their bytes before their sha256 is said."""
        for held in self.store.objects():
            if held.complete and held.verified_sha256 is None:
                try:
                    await asyncio.to_thread(self.store.verify, held.manifest.sha256)
                except FabricError as error:
                    log.error("site %s: %s does not verify: %s", self.pop, held.manifest.name, error)

    async def close(self) -> None:
        await self._client.close()

    # -- fetching ----------------------------------------------------------------------------
    async def _fetch(self, sha: str) -> None:
        fetch = self.fetches[sha]
        while True:
            held = self.store.get(sha)
            if held is None or fetch.state is FetchState.FAILED:
                return
            if held.complete:
                fetch.state = FetchState.COMPLETE
                return
            source = fetch.next_source()
            if source is None:  # none given yet, or every one broke off: until a new plan, or try them again
                fetch.state = FetchState.WAITING
                fetch.changed.clear()
                try:
                    async with asyncio.timeout(RETRY_SECONDS):
                        await fetch.changed.wait()
                except TimeoutError:
                    fetch.failed.clear()
                continue
            fetch.state, fetch.source, generation = FetchState.FETCHING, source.pop, fetch.generation
            queue = deque(held.missing())
            broke, reason = await self._run_workers(fetch, source, queue, generation)
            if broke is SourceFailed:
                log.warning("site %s: fetch of %s from %s broke off: %s", self.pop, sha[:12], source.pop, reason)
                fetch.failed.add(source.pop)
                if self.on_stuck is not None:
                    await self.on_stuck(sha, source.pop, reason)
                if fetch.next_source() is None:  # wait for a new plan, or try the same sources again
                    fetch.changed.clear()
                    try:
                        async with asyncio.timeout(RETRY_SECONDS):
                            await fetch.changed.wait()
                    except TimeoutError:
                        fetch.failed.clear()
            elif broke is not None and self.store.get(sha) is None:  # removed meanwhile: nothing to say
                return
            elif broke is not None:  # the store cannot take it (a full disk): said, and not tried again
                fetch.state, fetch.error = FetchState.FAILED, reason
                log.error("site %s: cannot hold %s: %s", self.pop, held.manifest.name, reason)
                return

    async def _run_workers(
        self, fetch: Fetch, source: Source, queue: deque[int], generation: int
    ) -> tuple[type[Exception] | None, str]:
        """WINDOW requests in flight to ``source`` until the queue is done; what broke them off, if anything."""
        broke: tuple[type[Exception] | None, str] = (None, "")
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(WINDOW, len(queue))):
                    group.create_task(self._worker(fetch, source, queue, generation))
        except* SourceFailed as failed:
            broke = (SourceFailed, str(failed.exceptions[0]))
        except* FabricError as error:
            broke = (FabricError, str(error.exceptions[0]))
        return broke

    async def _worker(self, fetch: Fetch, source: Source, queue: deque[int], generation: int) -> None:
        sha = fetch.sha256
        held = self.store.get(sha)
        assert held is not None
        rejected = 0
        loop = asyncio.get_running_loop()

        def held_now() -> None:  # from the store's thread, before the whole object is read back: passed on at once
            fetch.last_held_at = time.time()
            loop.call_soon_threadsafe(self._arrival, sha)

        while queue and fetch.generation == generation:
            index = queue.popleft()
            _, length = held.manifest.chunk_range(index)
            url = f"{source.url}/fabric/chunks/{sha}/{index}?wait={CHUNK_WAIT_SECONDS:g}"
            try:
                status, _, data = await self._client.request_bytes(
                    "GET", url, headers={FABRIC_POP_HEADER: self.pop, **self._auth},
                    timeout_seconds=CHUNK_WAIT_SECONDS + 60 + length / max(self.shaper.rate(source.pop), 1.0),
                    max_bytes=max(length, 64 * 1024),
                )  # fmt: skip
            except BackendError as error:
                queue.appendleft(index)
                raise SourceFailed(f"{error}") from None
            if status == 404 and fetch.generation == generation:  # not there yet: the source is still receiving
                queue.appendleft(index)
                if b"chunk_not_held" not in data:  # nor the object: the source hears of it in a moment
                    await asyncio.sleep(RETRY_SECONDS / 5)
                continue
            if status != 200:
                queue.appendleft(index)
                raise SourceFailed(f"HTTP {status} for chunk {index}")
            try:
                done = await asyncio.to_thread(self.store.put_chunk, sha, index, data, on_held=held_now)
            except ChunkRejected as error:
                rejected += 1
                queue.appendleft(index)
                if rejected >= 2:
                    raise SourceFailed(f"chunk {index}: {error}") from None
                continue
            self._arrival(sha)
            if done:
                fetch.state, fetch.verified_at = FetchState.COMPLETE, time.time()
                fetch.completed_at = fetch.last_held_at or fetch.verified_at
                log.info("site %s: %s complete and verified", self.pop, held.manifest.name)

    def _arrival(self, sha: str) -> None:
        event = self._arrived.pop(sha, None)
        if event is not None:
            event.set()

    async def _held_within(self, sha: str, index: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            held = self.store.get(sha)
            if held is None:
                return False
            if index in held.held:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            event = self._arrived.setdefault(sha, asyncio.Event())
            try:
                async with asyncio.timeout(left):
                    await event.wait()
            except TimeoutError:
                return False

    # -- HTTP ------------------------------------------------------------------------------
    def _target(self, request: web.Request) -> tuple[str, int]:
        """The object and chunk a request names: a 404 (ApiError) for one this site does not have."""
        sha, raw_index = request.match_info["sha"], request.match_info["index"]
        held = self.store.get(sha)
        if held is None:
            raise ApiError(404, f"No object {sha[:64]!r} here.", type="not_found_error", code="no_object")
        if not (raw_index.isascii() and raw_index.isdigit() and len(raw_index) <= 12) or (
            int(raw_index) >= held.manifest.chunk_count
        ):
            raise ApiError(
                404, f"No chunk {raw_index[:20]!r} in {held.manifest.name} ({held.manifest.chunk_count} chunks).",
                type="not_found_error", code="no_chunk",
            )  # fmt: skip
        return sha, int(raw_index)

    @admin
    async def _get_chunk(self, request: web.Request) -> web.StreamResponse:
        sha, index = self._target(request)
        peer = request.headers.get(FABRIC_POP_HEADER)
        if peer is not None and peer not in self.pops:
            raise ApiError(
                400,
                f"{FABRIC_POP_HEADER} names no PoP of the fleet.",
                type="invalid_request_error",
                param=FABRIC_POP_HEADER,
            )
        try:
            wait = min(MAX_CHUNK_WAIT_SECONDS, max(0.0, float(request.query.get("wait", "0"))))
        except ValueError:
            message = "`wait` must be a number of seconds."
            raise ApiError(400, message, type="invalid_request_error", param="wait") from None
        if not await self._held_within(sha, index, wait):
            return error_response(404, f"Chunk {index} is not here yet.", type="not_found_error", code="chunk_not_held")
        data = await asyncio.to_thread(self.store.read_chunk, sha, index)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = len(data)
        await response.prepare(request)
        await self.shaper.send(response, data, peer)
        await response.write_eof()
        self.egress_bytes[sha] = self.egress_bytes.get(sha, 0) + len(data)
        return response

    @admin
    async def _put_chunk(self, request: web.Request) -> web.Response:
        sha, index = self._target(request)
        held = self.store.get(sha)
        assert held is not None
        _, length = held.manifest.chunk_range(index)
        data = b""
        try:
            async with asyncio.timeout(BODY_SECONDS):  # a body that stops arriving does not hold the connection
                while len(data) <= length and not request.content.at_eof():
                    more = await request.content.read(length + 1 - len(data))
                    if not more:
                        break
                    data += more
        except TimeoutError:
            return json_error(408, f"The chunk's body did not arrive within {BODY_SECONDS:g} s.", code="timeout")
        try:
            done = await asyncio.to_thread(self.store.put_chunk, sha, index, data)
        except (ChunkRejected, ManifestError) as error:  # bytes that do not hash right; a manifest that lies
            return json_error(422, str(error), code="chunk_rejected")
        except StoreFull as error:
            return error_response(507, str(error), type="server_error", code="store_full")
        except FabricError as error:  # removed meanwhile
            return error_response(404, str(error), type="not_found_error", code="no_object")
        self._arrival(sha)
        fetch = self.fetches.get(sha)
        if done and fetch is not None:
            fetch.state, fetch.completed_at = FetchState.COMPLETE, time.time()
            fetch.verified_at = fetch.completed_at
        now = self.store.get(sha)
        return json_response({"complete": done, "chunks_held": len(now.held) if now is not None else 0})

    async def _list(self, request: web.Request) -> web.Response:
        return json_response({"pop": self.pop, "objects": self.report()})

    async def _one(self, request: web.Request) -> web.Response:
        sha = request.match_info["sha"]
        row = next((r for r in self.report() if r["sha256"] == sha), None)
        if row is None:
            return error_response(404, f"No object {sha[:64]!r} here.", type="not_found_error", code="no_object")
        held = self.store.get(sha)
        return json_response({**row, "missing": held.missing() if held is not None else []})

    @admin
    async def _assign_handler(self, request: web.Request) -> web.Response:
        body = parse(AssignBody, await read_body(request))
        try:
            manifest = Manifest.model_validate(body.manifest)
        except ValueError as error:
            message = str(ManifestError(str(error)))
            raise ApiError(
                400,
                f"Bad manifest: {message[:500]}",
                type="invalid_request_error",
                code="bad_manifest",
                param="manifest",
            ) from None
        try:
            answer = await self.assign(manifest, [Source(s.pop, s.url.rstrip("/")) for s in body.sources])
        except StoreFull as error:
            return error_response(507, str(error), type="server_error", code="store_full")
        except FabricError as error:  # the same bytes as another object but other files, a path the disk refuses
            return json_error(409, f"This site cannot hold {manifest.name}: {error}", code="object_refused")
        return json_response(answer)

    @admin
    async def _remove(self, request: web.Request) -> web.Response:
        sha = request.match_info["sha"]
        if self.store.get(sha) is None:
            return error_response(404, f"No object {sha[:64]!r} here.", type="not_found_error", code="no_object")
        fetch = self.fetches.pop(sha, None)
        if fetch is not None:
            fetch.generation += 1
            fetch.state = FetchState.FAILED
        await asyncio.to_thread(self.store.remove, sha)
        return json_response({"pop": self.pop, "removed": sha})
