"""Keeps the gateway's routing snapshot fresh by watching the control plane, off the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from edgeplane._errors import BackendError
from edgeplane._files import write_atomically
from edgeplane.fleet import Fleet
from edgeplane.routing import Router, Snapshot
from edgeplane.tenants import KeyPolicy
from edgeplane.web import ControlUrls, HttpClient

log = logging.getLogger("edgeplane.gateway")

WATCH_WAIT_SECONDS = 10.0
MAX_SNAPSHOT_FILE_BYTES = 64 * 1024 * 1024  # a kept snapshot larger than this is not one of ours
RETRY_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class RoutingState:
    """What one request needs, swapped atomically: fleet, its router and the latest snapshot."""

    fleet: Fleet
    router: Router
    snapshot: Snapshot
    received_at: float  # monotonic: when the control plane last confirmed it
    keys: dict[str, KeyPolicy]  # by key hash; revoked keys are kept to say so


class SnapshotWatcher:
    """Long-polls the control plane; on failure keeps the last good snapshot and retries."""

    def __init__(
        self,
        control_url: str | ControlUrls,
        *,
        home_metro: str | None = None,
        pop: str | None = None,
        client: HttpClient | None = None,
        admin_token: str | None = None,
        snapshot_file: Path | None = None,
    ) -> None:
        self.control = ControlUrls.of(control_url)
        # The last snapshot acted on, kept on disk (written whole, then renamed into place): a gateway that
        # starts while no replica answers serves from it, and says so.
        self.snapshot_file = snapshot_file
        self.source: str | None = None  # "control_plane" or "disk": where the snapshot acted on came from
        self._saved: tuple[int, int, str] | None = None
        self._unusable: tuple[int, int] | None = None  # (size, mtime) of a kept file that could not be used
        self._said_unreachable = False
        self._moved = False  # to another replica: its versions are its own, so the next poll takes what it has
        self.auth_headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else None
        self.home_metro = home_metro
        self.pop = pop  # a PoP's gateway: without a home metro, the PoP's metro is its home
        self.state: RoutingState | None = None
        self.reachable = False
        self.last_contact: float | None = None
        self._client = client or HttpClient(connect_timeout_seconds=1.0, read_timeout_seconds=WATCH_WAIT_SECONDS + 5)
        self._ready = asyncio.Event()

    def __repr__(self) -> str:
        version = self.state.snapshot.version if self.state else None
        return f"<SnapshotWatcher v{version} reachable={self.reachable}>"

    @property
    def control_url(self) -> str:
        """The replica called now."""
        return self.control.current

    def age_seconds(self) -> float | None:
        return None if self.state is None else time.monotonic() - self.state.received_at

    async def wait_ready(self, timeout_seconds: float) -> bool:
        try:
            async with asyncio.timeout(timeout_seconds):
                await self._ready.wait()
        except TimeoutError:
            return False
        return True

    async def _fetch_fleet(self, base: str) -> tuple[str, Fleet]:
        status, data = await self._client.request_json("GET", f"{base}/api/fleet")
        if status != 200:
            raise BackendError(f"control plane answered {status} for the fleet")
        return str(data["digest"]), Fleet.model_validate(data["fleet"])

    async def _fetch_keys(self, base: str) -> dict[str, KeyPolicy]:
        status, data = await self._client.request_json("GET", f"{base}/api/keys/table", headers=self.auth_headers)
        if status != 200:
            raise BackendError(f"control plane answered {status} for the key table")
        return {digest: KeyPolicy.from_json(policy) for digest, policy in data["keys"].items()}

    async def poll_once(self, wait_seconds: float) -> None:
        base = self.control.current
        try:
            await self._poll(base, wait_seconds)
        except (BackendError, KeyError, ValueError, TypeError, AttributeError) as error:
            self._moved = self.control.failed(base) or self._moved
            if isinstance(error, BackendError):
                raise
            raise BackendError(f"{base} answered something that is not a snapshot ({type(error).__name__})") from None

    async def _poll(self, base: str, wait_seconds: float) -> None:
        fresh = self.state is None or self._moved
        after = 0 if fresh or self.state is None else self.state.snapshot.version
        url = f"{base}/api/snapshot?after={after}&wait={0 if fresh else wait_seconds}"
        status, data = await self._client.request_json(
            "GET", url, timeout_seconds=wait_seconds + 5, headers=self.auth_headers
        )
        if status != 200:
            raise BackendError(f"control plane answered {status} for the snapshot")
        snapshot = Snapshot.from_json(data)
        now = time.monotonic()
        state = self.state
        keys = state.keys if state is not None else {}
        if state is None or self._moved or state.snapshot.keys_version != snapshot.keys_version:
            keys = await self._fetch_keys(base)
        if state is None or state.snapshot.fleet_digest != snapshot.fleet_digest:
            _, fleet = await self._fetch_fleet(base)
            router = Router(fleet, self._home_metro(fleet))
            state = RoutingState(fleet, router, snapshot, now, keys)
        else:
            state = RoutingState(state.fleet, state.router, snapshot, now, keys)
        self.reachable, self.last_contact, self._moved, self._said_unreachable = True, now, False, False
        self.state, self.source = state, "control_plane"
        self._ready.set()
        await self._save(state)

    async def _save(self, state: RoutingState) -> None:
        """Keep ``state`` on disk if it is new (another snapshot, key table or fleet)."""
        snapshot = state.snapshot
        mark = (snapshot.version, snapshot.keys_version, snapshot.fleet_digest)
        if self.snapshot_file is None or mark == self._saved:
            return
        record = {
            "saved_at": time.time(),
            "fleet": state.fleet.model_dump(mode="json"),
            "snapshot": snapshot.to_json(),
            "keys": {digest: policy.to_json() for digest, policy in state.keys.items()},
        }
        try:
            await asyncio.to_thread(write_atomically, self.snapshot_file, orjson.dumps(record), mode=0o600)
            self._saved = mark
        except OSError as error:
            log.warning("cannot keep the snapshot in %s: %s", self.snapshot_file, error.strerror or error)

    def load_saved(self) -> bool:
        """Act on the snapshot kept on disk (when no replica answers at start); False if there is none usable."""
        if self.snapshot_file is None or self.state is not None:
            return False
        try:
            info = self.snapshot_file.stat()
            signature = (info.st_size, info.st_mtime_ns)
            if signature == self._unusable:
                return False  # read and refused already: not again until it changes
            if info.st_size > MAX_SNAPSHOT_FILE_BYTES:
                self._unusable = signature
                log.warning(
                    "the snapshot kept in %s is too large to be one (%d bytes)", self.snapshot_file, info.st_size
                )
                return False
            record = orjson.loads(self.snapshot_file.read_bytes())
            fleet = Fleet.model_validate(record["fleet"])
            snapshot = Snapshot.from_json(record["snapshot"])
            keys = {str(d): KeyPolicy.from_json(p) for d, p in record["keys"].items()}
            saved_at = float(record["saved_at"])
            if not math.isfinite(saved_at):
                raise ValueError(f"saved_at is {saved_at}")
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("the snapshot kept in %s cannot be used (%s)", self.snapshot_file, str(error)[:200])
            with contextlib.suppress(OSError):
                info = self.snapshot_file.stat()
                self._unusable = (info.st_size, info.st_mtime_ns)
            return False
        received = time.monotonic() - max(0.0, time.time() - saved_at)  # its age counts from when it was kept
        self.state = RoutingState(fleet, Router(fleet, self._home_metro(fleet)), snapshot, received, keys)
        self.source = "disk"
        self._ready.set()
        log.warning(
            "no control plane replica answers: serving on the snapshot kept in %s (version %s, %.0f s old)",
            self.snapshot_file, snapshot.version, time.time() - saved_at,
        )  # fmt: skip
        return True

    def _home_metro(self, fleet: Fleet) -> str | None:
        if self.home_metro is not None or self.pop is None:
            return self.home_metro
        pop = fleet.pop_by_code.get(self.pop)
        if pop is None:
            log.warning("PoP %s is not in the control plane's fleet; its site cannot be served first", self.pop)
            return None
        return pop.metro

    async def watch_forever(self) -> None:
        failures = 0  # since the last answer: another replica is tried at once, a full round of them after a pause
        while True:
            try:
                await self.poll_once(WATCH_WAIT_SECONDS)
                failures = 0
            except BackendError as error:
                if self.reachable or not self._said_unreachable:  # once per outage, not at every retry
                    held = "serving on the last snapshot" if self.state is not None else "no snapshot to serve on yet"
                    log.warning("control plane unreachable (%s); %s", error, held)
                    self._said_unreachable = True
                self.reachable = False
                failures += 1
                round_done = failures % len(self.control.urls) == 0
                if round_done and self.state is None:
                    self.load_saved()
                await asyncio.sleep(RETRY_SECONDS if round_done else 0.02)

    async def close(self) -> None:
        await self._client.close()
