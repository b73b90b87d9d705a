"""Several control planes on one store (PostgreSQL): each answers reads and writes; a change committed at one
reaches the others through the store's notifications; site agents' reports are shared through the store, so
every replica sees every site; and the periodic work that must happen once (judging units' alarms) runs on one
leader, elected through the store with a lease and a fencing term.

On a store of its own (SQLite) a control plane is the only replica and always leads: nothing here runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson

from edgeplane._errors import EdgeplaneError
from edgeplane.control import _bodies as bodies
from edgeplane.control._state import FleetState
from edgeplane.control._store import Deposed, Replica
from edgeplane.web import HttpClient, parse

log = logging.getLogger("edgeplane.control")

LEASE_SECONDS = 3.0  # how long a leader's term holds without renewal: a new leader acts within about this
BEAT_SECONDS = 0.5  # each replica's round: leader's work, election, heartbeat, shared reports
SEEN_SECONDS = 3.0  # a replica not heard from for this long is not listed


class Replication:
    """This control plane's place among the replicas of its store."""

    def __init__(self, state: FleetState, publish: Callable[[], None]) -> None:
        self.state = state
        self.store = state.store
        self.publish = publish
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.url = ""
        self.term = 0
        self.leading = not self.store.replicated
        self.refused = 0  # fenced writes refused: this replica acted as leader after its term was over
        self.leader_url: str | None = None  # where the leader serves (drills run there), as its heartbeat says
        self.heard = 0  # changes heard from other replicas
        self.revision = self.store.revision()  # as of the last round or change heard: /healthz reads no store
        self._since = time.time() - 60.0  # shared reports newer than this are read
        self._stop_watch: Callable[[], None] | None = None
        self.client: HttpClient | None = None  # set by the service: what passes gateways' reports on
        self.on_lead: Callable[[], Any] | None = None  # what a replica does first when it takes the lead
        self._sending: set[asyncio.Task[None]] = set()
        if self.store.replicated:
            self.store.replica = self.id  # type: ignore[attr-defined]
        state.leading = self.leading

    def __repr__(self) -> str:
        return f"<Replication {self.id} leader={self.leading} term={self.term}>"

    def to_json(self) -> dict[str, Any]:
        return {
            "replica": self.id,
            "leader": self.leading,
            "term": self.term,
            "revision": self.revision,
            "fencing_refused": self.refused,
        }

    def listing(self) -> list[dict[str, Any]]:
        """Every replica heard from lately (this one always), as `status --json` shows them."""
        if not self.store.replicated:
            return [{"url": self.url, "pid": os.getpid(), "leader": True, "revision": self.revision}]
        seen = {r.id: r for r in self.store.replicas(SEEN_SECONDS)}
        seen[self.id] = self._me()
        return [
            {"url": r.url, "pid": r.pid, "leader": r.leader, "revision": r.revision, "term": r.term}
            for r in sorted(seen.values(), key=lambda r: (r.url, r.id))
        ]

    def _me(self) -> Replica:
        return Replica(self.id, self.url, os.getpid(), self.leading, self.term, self.revision, time.time())

    # -- changes made at other replicas ------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        def heard(payload: str) -> None:  # on the watch's thread
            loop.call_soon_threadsafe(self.changed, payload)

        if self.store.replicated:
            self._stop_watch = self.store.watch(heard)

    def stop(self) -> None:
        if self._stop_watch is not None:
            self._stop_watch()

    def changed(self, payload: str) -> None:
        """A change committed somewhere (``REVISION REPLICA KIND``, or "resync"): read again what is kept in
        memory and publish."""
        parts = payload.split(" ")
        if len(parts) == 3 and parts[0].isdigit():
            self.revision = max(self.revision, int(parts[0]))
        if len(parts) == 3 and parts[1] == self.id:
            return  # our own, already in effect here
        self.heard += 1
        self.state.reload(parts[2] if len(parts) == 3 else "resync")
        self.publish()

    # -- site agents' reports ------------------------------------------------------------------------
    def share(self, pop: str, body: bodies.AgentReport) -> None:
        """Tell the other replicas what a site agent reported here."""
        if self.store.replicated:
            self.store.put_agent_report(pop, body.model_dump_json(), time.time(), self.id)

    def _take_shared(self) -> None:
        now = time.time()
        for pop, text, received_at, by in self.store.agent_reports(self._since):
            self._since = max(self._since, received_at)
            if by == self.id or pop not in self.state.fleet.pop_by_code:
                continue
            body = parse(bodies.AgentReport, orjson.loads(text))
            # Its age here is its age there: received at unix time, kept on this replica's monotonic clock.
            self.state.take_shared(pop, body, self.state.clock() - max(0.0, now - received_at))

    # -- gateways' reports ---------------------------------------------------------------------------
    def pass_on(self, body: Any) -> None:
        """A gateway's report taken by a replica that does not lead goes to the leader too (off the request's
        path; lost if the leader does not answer, as a report to an unreachable control plane is)."""
        if self.leading or self.leader_url is None or self.client is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(self.leader_url + "/api/gateways/report", body))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, url: str, body: Any) -> None:
        assert self.client is not None
        with contextlib.suppress(EdgeplaneError):
            await self.client.request_json("POST", url, body, timeout_seconds=5.0)

    # -- the round -----------------------------------------------------------------------------------
    async def run_forever(self) -> None:
        while True:
            self.round()
            await asyncio.sleep(BEAT_SECONDS)

    def round(self) -> None:
        if not self.store.replicated:
            return
        self._take_shared()
        if self.leading:
            try:
                with self.store.fenced(self.id, self.term):
                    self.state.judge_alarms()
            except Deposed as deposed:
                self.refused += 1
                log.warning("replica %s: no longer the leader, its write was refused (%s)", self.id, deposed)
                self._lead(None)
        self._lead(self.store.elect(self.id, self.term, LEASE_SECONDS))
        self.revision = self.store.revision()
        self.store.heartbeat(self._me())
        leaders = [r for r in self.store.replicas(SEEN_SECONDS) if r.leader and r.id != self.id]
        self.leader_url = self.url if self.leading else (leaders[0].url if leaders else None)

    def _lead(self, term: int | None) -> None:
        leading = term is not None
        if leading != self.leading or (term is not None and term != self.term):
            log.warning("replica %s: %s", self.id, f"leads in term {term}" if leading else "follows")
        taken = leading and (not self.leading or term != self.term)
        self.leading = leading
        self.state.leading = leading
        if term is not None:
            self.term = term
        if taken and self.on_lead is not None:
            self.on_lead()
