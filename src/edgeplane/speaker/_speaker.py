"""The BGP speaker: ExaBGP driven through its process API, intents applied as they change and reconciled."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import getpass
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from edgeplane._errors import BackendError, EdgeplaneError
from edgeplane._extras import require_installed
from edgeplane._files import write_atomically
from edgeplane.bgp import (
    Intent,
    Neighbor,
    PlanError,
    Route,
    RouteOut,
    RouteType,
    check_in_plan,
    next_hops,
    pop_intents,
    routes_for,
)
from edgeplane.fleet import Fleet
from edgeplane.routing import Scope
from edgeplane.web import ControlUrls, HttpClient, die_with_parent

log = logging.getLogger("edgeplane.bgp")

ACK_TIMEOUT_SECONDS = 30.0
START_TIMEOUT_SECONDS = 30.0
RESTART_BACKOFF_SECONDS = (0.5, 10.0)
INTENTS_WAIT_SECONDS = 20.0


class SpeakerError(EdgeplaneError):
    """ExaBGP could not be started, stopped, or stopped answering."""


class CommandRefused(SpeakerError):
    """ExaBGP answered `error` to one command; the others and the sessions are unaffected."""


def intent_from_json(data: Mapping[str, Any]) -> Intent:
    def numbers(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split(":"))

    return Intent(
        prefix=str(data["prefix"]),
        next_hop=str(data["next_hop"]),
        scope=Scope[str(data["scope"]).upper()],
        route_type=RouteType[str(data["route_type"]).upper()],
        large_communities=tuple(numbers(c) for c in data["large_communities"]),  # type: ignore[misc]
        communities=tuple(numbers(c) for c in data.get("communities", ())),  # type: ignore[misc]
        med=data.get("med"),
        as_path_prepend=int(data.get("as_path_prepend", 0)),
    )


# -- where intents come from ----------------------------------------------------------------------
class IntentSource(Protocol):
    async def fleet(self) -> Fleet: ...

    async def next(self, after: int) -> tuple[int, list[Intent]]:
        """The intents once their version is past ``after`` (may wait)."""
        ...

    async def close(self) -> None: ...


class FleetIntents:
    """Intents from the fleet file alone: everything in the plan announced, nothing drained."""

    def __init__(self, fleet: Fleet, pop: str, extra: Sequence[Intent] = ()) -> None:
        self._fleet, self._pop, self._extra = fleet, pop, list(extra)

    async def fleet(self) -> Fleet:
        return self._fleet

    async def next(self, after: int) -> tuple[int, list[Intent]]:
        if after >= 1:
            await asyncio.Event().wait()  # a file does not change under a running speaker
        return 1, [*pop_intents(self._fleet, self._pop), *self._extra]

    async def close(self) -> None:
        pass


class ControlIntents:
    """Intents from the control plane, long-polled: drains, health and actions reach the speaker at once."""

    def __init__(
        self, control_url: str | ControlUrls, pop: str, *, admin_token: str | None = None, saved: Path | None = None
    ) -> None:
        self.control = ControlUrls.of(control_url)
        self.moved = False  # to another replica: its versions are its own, so `after` starts again
        # The last intents acted on (and the fleet they belong to), kept on disk: a speaker that starts while no
        # replica answers announces them (source "disk") instead of nothing.
        self.saved = saved
        self.source = "control_plane"
        self._fleet: Fleet | None = None
        self._kept: tuple[int, list[dict[str, Any]]] | None = None
        self._replayed = False
        self.pop = pop
        self._headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._client = HttpClient(connect_timeout_seconds=2.0)

    async def fleet(self) -> Fleet:
        """The fleet from a replica (each tried once), else the one kept on disk with the last intents."""
        failure: BackendError | None = None
        for _ in self.control.urls:
            base = self.control.current
            try:
                status, data = await self._client.request_json("GET", f"{base}/api/fleet")
            except BackendError as error:
                failure = error
                self.control.failed(base)
                continue
            if status != 200:
                failure = BackendError(f"control plane answered {status} for the fleet")
                self.control.failed(base)
                continue
            self._fleet = Fleet.model_validate(data["fleet"])
            return self._fleet
        kept = self._load()
        if kept is None:
            raise failure or BackendError("no control plane replica answers")
        log.warning("no control plane replica answers: acting on the intents kept in %s", self.saved)
        self.source = "disk"
        return kept[0]

    def _load(self) -> tuple[Fleet, int, list[Intent]] | None:
        if self.saved is None:
            return None
        try:
            record = orjson.loads(self.saved.read_bytes())
            fleet = Fleet.model_validate(record["fleet"])
            intents = [intent_from_json(i) for i in record["intents"]]
            return fleet, int(record["version"]), intents
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            log.warning("the intents kept in %s cannot be used (%s)", self.saved, str(error)[:200])
            return None

    async def _keep(self, version: int, intents: list[dict[str, Any]]) -> None:
        if self.saved is None or self._fleet is None or self._kept == (version, intents):
            return
        record = {"fleet": self._fleet.model_dump(mode="json"), "version": version, "intents": intents}
        try:
            self.saved.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(write_atomically, self.saved, orjson.dumps(record))
            self._kept = (version, intents)
        except OSError as error:
            log.warning("cannot keep the intents in %s: %s", self.saved, error.strerror or error)

    async def next(self, after: int) -> tuple[int, list[Intent]]:
        if self.source == "disk" and not self._replayed:  # started on what was kept: announce that first
            self._replayed = True
            kept = self._load()
            if kept is not None:
                return 0, kept[2]
        base = self.control.current
        if self.moved:
            after = 0
        wait = INTENTS_WAIT_SECONDS if after else 0
        url = f"{base}/api/bgp/intents?pop={self.pop}&after={after}&wait={wait}"
        try:
            status, data = await self._client.request_json("GET", url, timeout_seconds=wait + 5, headers=self._headers)
        except BackendError:
            self.moved = self.control.failed(base) or self.moved
            raise
        if status != 200:
            message = (data or {}).get("error", {}).get("message", "") if isinstance(data, dict) else ""
            if status >= 500:
                self.moved = self.control.failed(base) or self.moved
            raise BackendError(f"control plane answered {status} for the intents: {message}")
        self.moved = False
        if self._fleet is None:  # started from disk: the fleet as the control plane has it now
            with contextlib.suppress(BackendError, KeyError, ValueError):
                await self.fleet()
        self.source = "control_plane"
        intents = [intent_from_json(i) for i in data["intents"]]
        await self._keep(int(data["version"]), list(data["intents"]))
        return int(data["version"]), intents

    async def close(self) -> None:
        await self._client.close()


# -- the ExaBGP process -----------------------------------------------------------------------------
def exabgp_config(
    neighbors: Sequence[Neighbor], *, local_asn: int, router_id: str, local_address: str | None, helper: str
) -> str:
    lines = ["process edgeplane {", f"  run {helper};", "  encoder json;", "}", ""]
    for n in neighbors:
        lines += [
            f"neighbor {n.address} {{",
            f"  router-id {router_id};",
            *([f"  local-address {local_address};"] if local_address else []),
            f"  local-as {local_asn};",
            f"  peer-as {n.asn};",
            *([f"  connect {n.port};"] if n.port else []),
            "  family { ipv4 unicast; ipv6 unicast; }",
            "  api { processes [ edgeplane ]; neighbor-changes; receive { parsed; update; } }",
            "}",
            "",
        ]
    return "\n".join(lines)


class ExaBgp:
    """One ExaBGP process and its API stream. Every command waits for ExaBGP's acknowledgement: a helper that
    leaves them unread fills the pipe and ExaBGP stops answering."""

    def __init__(
        self,
        workdir: Path,
        neighbors: Sequence[Neighbor],
        *,
        local_asn: int,
        router_id: str,
        local_address: str | None,
        on_event: Callable[[dict[str, Any]], None],
    ) -> None:
        self.workdir = workdir
        self.neighbors = list(neighbors)
        self.local_asn, self.router_id, self.local_address = local_asn, router_id, local_address
        self.on_event = on_event
        self.socket_path = workdir / "api.sock"
        self.log_path = workdir / "exabgp.log"
        self._process: asyncio.subprocess.Process | None = None
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._closed = asyncio.Event()
        self._pending: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f"<ExaBgp pid={pid} [connected={self._connected.is_set()}, pending acks={len(self._pending)}]>"

    async def start(self) -> None:
        require_installed("exabgp", "bgp", "the BGP speaker (bgp run)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        helper = f"{sys.executable} -m edgeplane.speaker._bridge {self.socket_path}"
        config = self.workdir / "exabgp.conf"
        config.write_text(
            exabgp_config(
                self.neighbors,
                local_asn=self.local_asn,
                router_id=self.router_id,
                local_address=self.local_address,
                helper=helper,
            )
        )
        env = {
            **os.environ,
            "exabgp_daemon_daemonize": "false",
            "exabgp_daemon_user": getpass.getuser(),  # ExaBGP would drop to `nobody`, who cannot run our helper
            "exabgp_daemon_pid": "",
            "exabgp_log_destination": "stdout",
            "exabgp_cli_enable": "false",
            "exabgp_api_ack": "true",
            "exabgp_tcp_bind": "",  # connect out only; listening is the transit's side
        }
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "exabgp",
                str(config),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        exited = asyncio.ensure_future(self._process.wait())
        connected = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({exited, connected}, timeout=START_TIMEOUT_SECONDS, return_when="FIRST_COMPLETED")
        finally:
            for task in (exited, connected):
                task.cancel()
        if not self._connected.is_set():
            raise SpeakerError(f"ExaBGP did not start its helper; see {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # one helper per ExaBGP
            writer.close()
            return
        self._writer = writer
        self._connected.set()
        try:
            while line := await reader.readline():
                self._line(line.decode("utf-8", "replace").strip())
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            for future in self._pending:
                if not future.done():
                    future.set_exception(SpeakerError("ExaBGP went away before acknowledging"))
            self._closed.set()

    def _line(self, line: str) -> None:
        if line in ("done", "error"):
            if self._pending:
                future = self._pending.popleft()
                if not future.done():
                    future.set_result(line == "done")
            return
        if line == "shutdown":
            return
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.debug("ExaBGP said: %s", line)
            return
        if isinstance(event, dict):
            self.on_event(event)

    async def command(self, line: str) -> None:
        """Send one API command and wait for its acknowledgement; SpeakerError if ExaBGP refused it."""
        async with self._lock:
            if self._writer is None or self._closed.is_set():
                raise SpeakerError("ExaBGP is not running")
            future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._pending.append(future)
            self._writer.write(line.encode() + b"\n")
            try:
                await self._writer.drain()
                async with asyncio.timeout(ACK_TIMEOUT_SECONDS):
                    accepted = await future
            except (ConnectionError, TimeoutError) as error:
                raise SpeakerError(f"no acknowledgement from ExaBGP for {line!r}: {error!r}") from None
            if not accepted:
                raise CommandRefused(f"ExaBGP refused {line!r}")

    async def wait_closed(self) -> None:
        assert self._process is not None
        closed = asyncio.ensure_future(self._closed.wait())
        exited = asyncio.ensure_future(self._process.wait())
        try:
            await asyncio.wait({closed, exited}, return_when="FIRST_COMPLETED")
        finally:
            closed.cancel()
            exited.cancel()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.terminate()
            try:
                async with asyncio.timeout(5):
                    await self._process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()
                await self._process.wait()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


# -- the speaker ----------------------------------------------------------------------------------
@dataclass
class SpeakerStatus:
    sessions: dict[str, str] = field(default_factory=dict)  # neighbour address -> up/down/connected
    announced: dict[tuple[str, str], RouteOut] = field(default_factory=dict)  # (neighbour, prefix) -> route
    refused: dict[str, str] = field(default_factory=dict)  # prefix -> why it is not announced
    received: dict[str, dict[str, Route]] = field(default_factory=dict)  # neighbour -> prefix -> route
    intents_version: int = 0
    restarts: int = 0


class Speaker:
    """Keeps one PoP's announcements at its transits equal to its intents, across restarts of either side."""

    def __init__(
        self,
        pop: str,
        neighbors: Sequence[Neighbor],
        source: IntentSource,
        *,
        workdir: Path,
        local_address: str | None = None,
        router_id: str | None = None,
        rib_file: Path | None = None,
    ) -> None:
        self.pop = pop
        self.neighbors = list(neighbors)
        self.source = source
        self.workdir = workdir
        self.local_address = local_address
        self.router_id = router_id
        self.rib_file = rib_file
        self.status = SpeakerStatus()
        self.fleet: Fleet | None = None
        self._desired: list[Intent] | None = None
        self._dirty = asyncio.Event()

    def __repr__(self) -> str:
        up = sum(1 for s in self.status.sessions.values() if s == "up")
        return (
            f"<Speaker {self.pop} v{self.status.intents_version} [Sessions: {up}/{len(self.neighbors)} up,"
            f" Routes: {len(self.status.announced)} announced, {len(self.status.refused)} refused]>"
        )

    def status_json(self) -> dict[str, Any]:
        status = self.status
        return {
            "pop": self.pop,
            "intents_version": status.intents_version,
            "intents_source": getattr(self.source, "source", "fleet"),
            "exabgp_restarts": status.restarts,
            "neighbors": [
                {
                    "address": n.address,
                    "asn": n.asn,
                    "session": status.sessions.get(n.address, "idle"),
                    "announced": sorted(p for a, p in status.announced if a == n.address),
                    "received": len(status.received.get(n.address, {})),
                }
                for n in self.neighbors
            ],
            "refused": status.refused,
        }

    async def run(self, stop: asyncio.Event) -> None:
        self.fleet = await self.source.fleet()
        if self.pop not in self.fleet.pop_by_code:
            raise SpeakerError(
                f"unknown PoP {self.pop!r}; expected one of: {', '.join(sorted(self.fleet.pop_by_code))}"
            )
        try:
            async with asyncio.TaskGroup() as group:
                follow = group.create_task(self._follow())
                speak = group.create_task(self._speak())
                await stop.wait()
                log.info("stopping: ExaBGP closes its sessions, the transits withdraw our routes")
                follow.cancel()
                speak.cancel()
        finally:
            await self.source.close()

    def accept(self, version: int, intents: Sequence[Intent]) -> None:
        """Take a new set of intents: those outside the fleet's plan are refused with the reason, never sent."""
        assert self.fleet is not None
        accepted: list[Intent] = []
        refused: dict[str, str] = {}
        for intent in intents:
            try:
                check_in_plan(self.fleet, intent.prefix)
            except PlanError as error:
                refused[intent.prefix] = str(error)
                if intent.prefix not in self.status.refused:
                    log.error("refused to announce %s: %s", intent.prefix, error)
                continue
            accepted.append(intent)
        self.status.refused = refused
        self.status.intents_version = version
        self._desired = accepted
        self._dirty.set()

    async def _follow(self) -> None:
        version, delay = 0, RESTART_BACKOFF_SECONDS[0]
        while True:
            try:
                version, intents = await self.source.next(version)
            except (EdgeplaneError, KeyError, ValueError) as error:
                log.warning("no intents from the control plane (%s); keeping what is announced", error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_BACKOFF_SECONDS[1])
                continue
            delay = RESTART_BACKOFF_SECONDS[0]
            self.accept(version, intents)

    def desired_routes(self) -> dict[tuple[str, str], RouteOut]:
        assert self.fleet is not None
        if self._desired is None:
            return {}
        transits = {t.asn: t for t in self.fleet.pop_by_code[self.pop].transits}
        return {
            (n.address, r.prefix): r
            for n in self.neighbors
            for r in routes_for(self.fleet.asn, self._desired, n, transits.get(n.asn))
        }

    async def reconcile(self, exa: ExaBgp) -> None:
        """Withdraw what is announced but no longer wanted, announce what is wanted and not yet announced.
        A command ExaBGP refuses is logged and left for the next pass; losing ExaBGP raises SpeakerError."""
        desired = self.desired_routes()
        announced = self.status.announced
        for key in [k for k in announced if k not in desired]:
            try:
                await exa.command(announced[key].withdraw(key[0]))
            except CommandRefused as error:
                log.error("%s", error)
                continue
            log.info("withdrew %s from %s", key[1], key[0])
            del announced[key]
        for key, route in desired.items():
            if announced.get(key) != route:
                try:
                    await exa.command(route.announce(key[0]))
                except CommandRefused as error:
                    log.error("%s", error)
                    continue
                log.info("announced %s to %s%s", key[1], key[0], _summary(route))
                announced[key] = route

    async def _speak(self) -> None:
        assert self.fleet is not None
        delay = RESTART_BACKOFF_SECONDS[0]
        router_id = self.router_id or next_hops(self.fleet.pop_by_code[self.pop].id)[0]
        while True:
            exa = ExaBgp(
                self.workdir,
                self.neighbors,
                local_asn=self.fleet.asn,
                router_id=router_id,
                local_address=self.local_address,
                on_event=self._event,
            )
            started = time.monotonic()
            try:
                await exa.start()
                self.status.announced = {}  # a fresh ExaBGP holds nothing: everything goes out again
                await self._serve(exa)
            except SpeakerError as error:
                log.error("BGP speaker: %s", error)
            finally:
                await exa.close()
                self.status.sessions = {n.address: "down" for n in self.neighbors}
            if time.monotonic() - started > 30:
                delay = RESTART_BACKOFF_SECONDS[0]
            self.status.restarts += 1
            log.warning("ExaBGP stopped; starting it again in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF_SECONDS[1])

    async def _serve(self, exa: ExaBgp) -> None:
        closed = asyncio.ensure_future(exa.wait_closed())
        try:
            while not closed.done():
                self._dirty.clear()
                await self.reconcile(exa)
                dirty = asyncio.ensure_future(self._dirty.wait())
                await asyncio.wait({closed, dirty}, return_when="FIRST_COMPLETED")
                dirty.cancel()
        finally:
            closed.cancel()

    # -- events from ExaBGP ---------------------------------------------------------------------
    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        neighbor = event.get("neighbor", {})
        peer = str(neighbor.get("address", {}).get("peer", ""))
        if kind == "state":
            state = str(neighbor.get("state", ""))
            if self.status.sessions.get(peer) != state:
                log.info("session with %s (AS%s) %s", peer, neighbor.get("asn", {}).get("peer"), state)
            self.status.sessions[peer] = state
            if state == "down":
                self.status.received.pop(peer, None)
                self._write_rib()
        elif kind == "update":
            update = neighbor.get("message", {}).get("update", {})
            rib = self.status.received.setdefault(peer, {})
            apply_update(rib, update, peer=peer, peer_asn=int(neighbor.get("asn", {}).get("peer", 0) or 0))
            self._write_rib()

    def _write_rib(self) -> None:
        if self.rib_file is None:
            return
        data = {
            "pop": self.pop,
            "written_at": time.time(),
            "routes": [r.to_json() for rib in self.status.received.values() for r in rib.values()],
        }
        tmp = self.rib_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        tmp.replace(self.rib_file)


def _summary(route: RouteOut) -> str:
    extras = []
    if route.as_path:
        extras.append(f"as-path {' '.join(map(str, route.as_path))}")
    if route.communities:
        extras.append("communities " + " ".join(f"{a}:{b}" for a, b in route.communities))
    return f" ({'; '.join(extras)})" if extras else ""


def apply_update(rib: dict[str, Route], update: Mapping[str, Any], *, peer: str, peer_asn: int) -> None:
    """Fold one parsed UPDATE from ExaBGP into a neighbour's Adj-RIB-In."""
    attributes = update.get("attribute", {})
    path = attributes.get("as-path", [])
    if isinstance(path, dict):  # newer encoders: {"0": {"element": "as-sequence", "value": [...]}}
        as_path = [int(a) for segment in path.values() for a in segment.get("value", [])]
    else:
        as_path = [int(a) for a in path]
    for family in update.get("withdraw", {}).values():
        for nlri in family:
            rib.pop(str(nlri.get("nlri", nlri)) if isinstance(nlri, dict) else str(nlri), None)
    for family in update.get("announce", {}).values():
        for next_hop, nlris in family.items():
            for nlri in nlris:
                prefix = str(nlri.get("nlri")) if isinstance(nlri, dict) else str(nlri)
                rib[prefix] = Route(
                    prefix=str(ipaddress.ip_network(prefix)),
                    peer=peer,
                    peer_asn=peer_asn,
                    next_hop=str(next_hop),
                    as_path=tuple(as_path),
                    origin=str(attributes.get("origin", "igp")),
                    med=attributes.get("med"),
                    local_pref=attributes.get("local-preference"),
                )


# -- the speaker's own status page ----------------------------------------------------------------
class _SpeakerCollector:
    """Reads the speaker's state at scrape time: sessions, routes, refusals, restarts."""

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self.speaker.status
        up = GaugeMetricFamily(
            "edgeplane_bgp_session_up", "1 if the BGP session with the neighbour is established.", labels=["neighbor"]
        )
        routes = GaugeMetricFamily(
            "edgeplane_bgp_routes_announced", "Routes announced to the neighbour.", labels=["neighbor"]
        )
        received = GaugeMetricFamily(
            "edgeplane_bgp_routes_received", "Routes received from the neighbour.", labels=["neighbor"]
        )
        for neighbor in self.speaker.neighbors:
            up.add_metric([neighbor.address], 1.0 if status.sessions.get(neighbor.address) == "up" else 0.0)
            count = sum(1 for address, _ in status.announced if address == neighbor.address)
            routes.add_metric([neighbor.address], float(count))
            received.add_metric([neighbor.address], float(len(status.received.get(neighbor.address, {}))))
        yield up
        yield routes
        yield received
        yield GaugeMetricFamily(
            "edgeplane_bgp_intents_refused", "Intents refused (outside the prefix plan).", value=len(status.refused)
        )
        yield GaugeMetricFamily(
            "edgeplane_bgp_intents_version", "Version of the intents applied.", value=status.intents_version
        )
        yield CounterMetricFamily(
            "edgeplane_bgp_exabgp_restarts", "Times ExaBGP was started again.", value=status.restarts
        )


def status_app(speaker: Speaker) -> Any:
    """`/healthz` (JSON: sessions, routes, refusals) and `/metrics` (Prometheus) for one speaker."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(_SpeakerCollector(speaker))

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(speaker.status_json()), content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
