"""The control plane's store on PostgreSQL (psycopg 3): the same records and schema versions as the SQLite store,
for fleets whose control plane runs as several replicas on one database.

A database with no tables is made a store (schema and version in one transaction); one that holds an edgeplane
store of an older schema is migrated; anything else (another application's tables, a newer schema) is refused
with StoreRefused, as a foreign SQLite file is. Creation and migration hold an advisory lock, so that replicas
starting together do it once."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import select
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import orjson

from edgeplane._extras import require
from edgeplane.control._store import (
    KEY_COLUMNS,
    SCHEMA_VERSION,
    AuditRecord,
    Deposed,
    Drain,
    Replica,
    Store,
    StoredKey,
    StoredReport,
    StoreError,
    StoreRefused,
    key_from_row,
    key_row,
)
from edgeplane.units import UnitRecord, unit_from_json

log = logging.getLogger("edgeplane.control")

APPLICATION = "edgeplane"
# The advisory lock creation and migration hold (any 64-bit number no other user of the database takes).
SCHEMA_LOCK = 0x45504C4E_53434845  # "EPLNSCHE"
# PostgreSQL stores begin at schema 3 (the first with every table); a later schema appends its step here, with
# the SQLite one in _store._MIGRATIONS, so that both kinds of store carry the same version numbers.
FIRST_VERSION = 3
_MIGRATIONS: tuple[tuple[str, ...], ...] = ()
assert FIRST_VERSION + len(_MIGRATIONS) == SCHEMA_VERSION, "a schema step is missing for PostgreSQL"

_TABLES = {
    "edgeplane_meta": "CREATE TABLE edgeplane_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "drains": "CREATE TABLE drains (kind TEXT NOT NULL, code TEXT NOT NULL, since DOUBLE PRECISION NOT NULL,"
    " \"by\" TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, code))",
    "audit": "CREATE TABLE audit (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION NOT NULL,"
    " who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL)",
    "keys": "CREATE TABLE keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,"
    " continent TEXT, region TEXT, rpm BIGINT, tpm BIGINT, models TEXT, created_at DOUBLE PRECISION NOT NULL,"
    " revoked_at DOUBLE PRECISION)",
    "placement": "CREATE TABLE placement (id INTEGER PRIMARY KEY CHECK (id = 1), entries TEXT)",
    "bgp_actions": "CREATE TABLE bgp_actions (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " pop TEXT NOT NULL, transit_asn BIGINT NOT NULL, action TEXT NOT NULL, UNIQUE (pop, transit_asn))",
    "units": "CREATE TABLE units (code TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "fabric": "CREATE TABLE fabric (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "reports": "CREATE TABLE reports (name TEXT PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL,"
    " record TEXT NOT NULL)",
    # Replication: the leader's lease and term, each replica's heartbeat, site agents' last reports (shared so
    # that every replica sees every site, whichever replica its agent reports to).
    "leader": "CREATE TABLE leader (id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT,"
    " term BIGINT NOT NULL DEFAULT 0, expires_at TIMESTAMPTZ)",
    "replicas": "CREATE TABLE replicas (id TEXT PRIMARY KEY, url TEXT NOT NULL, pid INTEGER NOT NULL,"
    " leader BOOLEAN NOT NULL, term BIGINT NOT NULL, revision BIGINT NOT NULL, seen_at DOUBLE PRECISION NOT NULL)",
    "leases": "CREATE TABLE leases (key_id TEXT PRIMARY KEY, win BIGINT NOT NULL, requests BIGINT NOT NULL,"
    " tokens BIGINT NOT NULL)",
    "agent_reports": "CREATE UNLOGGED TABLE agent_reports (pop TEXT PRIMARY KEY, body TEXT NOT NULL,"
    " received_at DOUBLE PRECISION NOT NULL, replica TEXT NOT NULL)",
}
CHANNEL = "edgeplane_changes"  # what replicas LISTEN on: "REVISION REPLICA KIND" after each change


def redacted(url: str) -> str:
    """``url`` without its password (what may be printed and logged), whatever its shape: the user information
    keeps its user name, up to the last ``@`` of the authority (as a password may hold ``@``); ``password=``
    options are hidden too."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority, slash, tail = rest.partition("/")
        if "@" in authority:
            userinfo, _, host = authority.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            authority = f"{user}:***@{host}" if colon else f"{userinfo}@{host}"
        url = f"{scheme}{sep}{authority}{slash}{tail}"
    return re.sub(r"(password\s*=\s*)('[^']*'|[^&\s]*)", r"\1***", url, flags=re.IGNORECASE)


def secrets_of(url: str) -> list[str]:
    """Every piece of ``url`` that is or may be part of a password (to hide from a driver's error message)."""
    found = []
    _, sep, rest = url.partition("://")
    authority = rest.partition("/")[0] if sep else ""
    if "@" in authority:
        userinfo = authority.rpartition("@")[0]
        _, colon, password = userinfo.partition(":")
        if colon and password:
            found += [password, *password.split("@")]
    found += [m.group(2).strip("'") for m in re.finditer(r"(password\s*=\s*)('[^']*'|[^&\s]*)", url, re.I)]
    return sorted({f for f in found if f}, key=len, reverse=True)


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's error, which may quote the URL) with the URL redacted and any password hidden."""
    text = text.replace(url, redacted(url))
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return redacted(text)


class PostgresStore(Store):
    """The control plane's records in a PostgreSQL database (``postgresql://USER@HOST:PORT/DB``).

    One connection, autocommit: every write is durable when the call returns (PostgreSQL commits it to its
    write-ahead log first). No statement waits longer than ``timeout_seconds``: the server cancels what runs
    longer, and a server that stops answering altogether (a stalled host) has its connection cut by a watchdog,
    so a call fails (StoreError) instead of hanging the service. A connection the server ended while it was idle
    is opened again before the next statement; one that failed during a statement is opened again on the next
    call (the statement is not repeated: it may have been done)."""

    def __init__(self, url: str, *, timeout_seconds: float = 5.0, create: bool = True) -> None:
        self._psycopg = require("psycopg", "postgres", "a PostgreSQL store")
        self.url = url
        self.path = redacted(url)  # how errors name the store (StoreRefused takes it as its "path")
        self.timeout_seconds = timeout_seconds
        self.replica = ""  # who writes (the control plane names itself): said with each change it notifies
        self._lock = threading.RLock()
        self._depth = 0  # transactions open (bulk inside bulk counts once)
        self._db: Any = None
        self._db = self._connect()
        try:
            _check(self._db, self.path, create=create)
            self._read_all()
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresStore {self.path}>"

    def said(self, error: BaseException) -> str:
        """The first line of a driver's error, without the password."""
        return scrubbed(_first_line(error), self.url)

    def _connect(self) -> Any:
        try:
            return connect(self._psycopg, self.url, self.timeout_seconds)
        except self._psycopg.Error as error:
            raise StoreRefused(
                self.path,
                f"cannot be reached ({self.said(error)})",
                "check the URL, that the server runs and that it lets this user in",
            ) from None

    def _read_all(self) -> None:
        try:
            self.drains(), self.api_keys(), self.placement(), self.bgp_actions(), self.units(), self.transfers()
            for name in self.report_names():
                self.report(name)
        except (StoreError, ValueError, KeyError, TypeError) as error:
            raise StoreRefused(self.path, f"holds a record that cannot be read ({error})") from None

    def _usable(self) -> Any:
        """The connection, opened again if it was lost or the server ended it while idle (it said something
        unasked: an idle session gets nothing else)."""
        db = self._db
        if self._depth:  # inside a transaction: the connection it runs on, whatever happens to it
            return db
        if db is not None and not (db.closed or db.broken):
            try:
                said = bool(select.select([db.fileno()], [], [], 0)[0])
            except (OSError, ValueError):
                said = True
            if not said:
                return db
            with contextlib.suppress(self._psycopg.Error):
                db.execute("SELECT 1")
                return db
        if db is not None:
            db.close()
        self._db = None
        try:
            self._db = connect(self._psycopg, self.url, self.timeout_seconds)
        except self._psycopg.Error as error:
            raise StoreError(f"the store {self.path} cannot be reached: {self.said(error)}") from error
        return self._db

    def _execute(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        """Run one statement within the timeout; its errors are the store's own (StoreError)."""
        with self._lock:
            db = self._usable()
            cut = threading.Event()

            def cut_off() -> None:  # the server stopped answering: cut the connection so the call returns
                cut.set()
                with contextlib.suppress(OSError, ValueError), socket.socket(fileno=os.dup(db.fileno())) as wire:
                    wire.shutdown(socket.SHUT_RDWR)

            watchdog = threading.Timer(self.timeout_seconds + 1.0, cut_off)
            watchdog.daemon = True
            watchdog.start()
            try:
                return db.execute(sql, parameters)
            except self._psycopg.Error as error:
                if cut.is_set():
                    raise StoreError(
                        f"the store {self.path} did not answer within {self.timeout_seconds:g} s"
                    ) from error
                raise StoreError(f"the store {self.path} failed: {self.said(error)}") from error
            finally:
                watchdog.cancel()

    def _rows(self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._execute(sql, parameters).fetchall())

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """One transaction, its BEGIN and COMMIT sent as statements of their own (each within the timeout, as
        every statement); a bulk inside another is part of it."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._execute("BEGIN")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                with contextlib.suppress(StoreError):  # a connection that was cut has lost the transaction anyway
                    self._execute("ROLLBACK")
                raise
            self._depth = 0
            self._execute("COMMIT")

    def _write(self, kind: str, sql: str, parameters: Sequence[Any] = ()) -> Any:
        """A change of the fleet's state: made, the revision moved on and the other replicas told (NOTIFY is
        sent at commit), all in one transaction."""
        with self.bulk():
            cursor = self._execute(sql, parameters)
            if cursor.rowcount != 0:
                self._changed(kind)
        return cursor

    def _changed(self, kind: str) -> None:
        self._execute(
            "WITH moved AS (UPDATE edgeplane_meta SET value = (value::BIGINT + 1)::TEXT"
            " WHERE key = 'revision' RETURNING value)"
            " SELECT pg_notify(%s, concat_ws(' ', (SELECT value FROM moved), %s::TEXT, %s::TEXT))",
            (CHANNEL, self.replica or "-", kind),
        )

    # -- replication --------------------------------------------------------------------------
    replicated = True

    def revision(self) -> int:
        return int(self._rows("SELECT value FROM edgeplane_meta WHERE key = 'revision'")[0][0])

    def watch(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        stop = threading.Event()
        thread = threading.Thread(target=self._listen, args=(on_change, stop), name="store watch", daemon=True)
        thread.start()

        def stopped() -> None:
            stop.set()
            thread.join(timeout=self.timeout_seconds + 2)

        return stopped

    def _listen(self, on_change: Callable[[str], None], stop: threading.Event) -> None:
        """LISTEN on a connection of its own; after a reconnection, "resync" (changes may have been missed)."""
        delay, first = 0.2, True
        while not stop.is_set():
            try:
                with connect(self._psycopg, self.url, self.timeout_seconds) as db:
                    db.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        on_change("resync")
                    first, delay = False, 0.2
                    while not stop.is_set():
                        for notice in db.notifies(timeout=0.5):
                            on_change(notice.payload)
            except self._psycopg.Error as error:
                log.warning("store watch: %s; listening again in %.1f s", self.said(error), delay)
                stop.wait(delay)
                delay = min(5.0, delay * 2)

    def elect(self, replica: str, term: int, lease_seconds: float) -> int | None:
        rows = self._rows(
            "UPDATE leader SET holder = %(me)s, expires_at = clock_timestamp() + make_interval(secs => %(lease)s),"
            " term = CASE WHEN holder = %(me)s AND term = %(term)s AND expires_at > clock_timestamp() THEN term"
            " ELSE term + 1 END"
            " WHERE id = 1 AND ((holder = %(me)s AND term = %(term)s) OR holder IS NULL"
            " OR expires_at <= clock_timestamp()) RETURNING term",
            {"me": replica, "term": term, "lease": lease_seconds},
        )
        return int(rows[0][0]) if rows else None

    @contextlib.contextmanager
    def fenced(self, replica: str, term: int) -> Iterator[None]:
        with self.bulk():
            held = self._rows(
                "SELECT 1 FROM leader WHERE id = 1 AND holder = %s AND term = %s AND expires_at > clock_timestamp()"
                " FOR SHARE",
                (replica, term),
            )
            if not held:
                raise Deposed(f"refused: term {term} is over (another replica leads now, or the lease ran out)")
            yield

    def heartbeat(self, replica: Replica) -> None:
        self._execute(
            "INSERT INTO replicas (id, url, pid, leader, term, revision, seen_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, extract(epoch FROM clock_timestamp()))"
            " ON CONFLICT (id) DO UPDATE SET url = excluded.url, pid = excluded.pid, leader = excluded.leader,"
            " term = excluded.term, revision = excluded.revision, seen_at = excluded.seen_at",
            (replica.id, replica.url, replica.pid, replica.leader, replica.term, replica.revision),
        )

    def replicas(self, within_seconds: float) -> list[Replica]:
        rows = self._rows(
            "SELECT id, url, pid, leader, term, revision, seen_at FROM replicas"
            " WHERE seen_at > extract(epoch FROM clock_timestamp()) - %s ORDER BY url, id",
            (within_seconds,),
        )
        return [Replica(str(i), str(u), int(p), bool(le), int(t), int(r), float(s)) for i, u, p, le, t, r, s in rows]

    def put_agent_report(self, pop: str, body: str, received_at: float, replica: str) -> None:
        self._execute(
            "INSERT INTO agent_reports (pop, body, received_at, replica) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (pop) DO UPDATE SET body = excluded.body, received_at = excluded.received_at,"
            " replica = excluded.replica",
            (pop, body, received_at, replica),
        )

    def agent_reports(self, since: float) -> list[tuple[str, str, float, str]]:
        rows = self._rows("SELECT pop, body, received_at, replica FROM agent_reports WHERE received_at > %s", (since,))
        return [(str(p), str(b), float(r), str(by)) for p, b, r, by in rows]

    def spend(self, key_id: str, window: int, grant: Callable[[int, int], tuple[int, int]]) -> tuple[int, int]:
        with self.bulk():
            self._execute(
                "INSERT INTO leases (key_id, win, requests, tokens) VALUES (%s, %s, 0, 0) ON CONFLICT (key_id)"
                " DO UPDATE SET win = excluded.win, requests = 0, tokens = 0 WHERE leases.win < excluded.win",
                (key_id, window),
            )
            rows = self._rows("SELECT win, requests, tokens FROM leases WHERE key_id = %s FOR UPDATE", (key_id,))
            held, spent_requests, spent_tokens = (int(v) for v in rows[0])
            if held != window:  # a replica whose clock is behind asks for a window that is over: nothing
                return 0, 0
            requests, tokens = grant(spent_requests, spent_tokens)
            self._execute(
                "UPDATE leases SET requests = requests + %s, tokens = tokens + %s WHERE key_id = %s",
                (min(requests, 1 << 40), min(tokens, 1 << 40), key_id),
            )
        return requests, tokens

    def placement(self) -> list[tuple[str, str, int]] | None:
        rows = self._rows("SELECT entries FROM placement WHERE id = 1")
        return None if not rows else [(str(m), str(p), int(n)) for m, p, n in orjson.loads(rows[0][0])]

    def set_placement(self, entries: list[tuple[str, str, int]]) -> None:
        self._write(
            "placement",
            "INSERT INTO placement (id, entries) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET entries = excluded.entries",
            (orjson.dumps([list(e) for e in entries]).decode(),),
        )

    def bgp_actions(self) -> list[tuple[str, int, str]]:
        rows = self._rows("SELECT pop, transit_asn, action FROM bgp_actions ORDER BY id")
        return [(str(pop), int(asn), str(action)) for pop, asn, action in rows]

    def set_bgp_action(self, pop: str, transit_asn: int, action: str | None) -> None:
        with self.bulk():
            self._execute("DELETE FROM bgp_actions WHERE pop = %s AND transit_asn = %s", (pop, transit_asn))
            if action is not None:
                self._execute(
                    "INSERT INTO bgp_actions (pop, transit_asn, action) VALUES (%s, %s, %s)", (pop, transit_asn, action)
                )
            self._changed("bgp")

    def units(self) -> list[UnitRecord]:
        return [unit_from_json(orjson.loads(row[0])) for row in self._rows("SELECT record FROM units")]

    def put_unit(self, record: UnitRecord) -> None:
        self._write(
            "units",
            "INSERT INTO units (code, record) VALUES (%s, %s)"
            " ON CONFLICT (code) DO UPDATE SET record = excluded.record",
            (record.code, orjson.dumps(record.to_json()).decode()),
        )

    def transfers(self) -> list[dict[str, Any]]:
        return [dict(orjson.loads(row[0])) for row in self._rows("SELECT record FROM fabric ORDER BY name")]

    def put_transfer(self, name: str, record: dict[str, Any]) -> None:
        self._write(
            "fabric",
            "INSERT INTO fabric (name, record) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET record = excluded.record",
            (name, orjson.dumps(record).decode()),
        )

    def remove_transfer(self, name: str) -> bool:
        return bool(self._write("fabric", "DELETE FROM fabric WHERE name = %s", (name,)).rowcount > 0)

    def named_transfers(self) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT name, record FROM fabric ORDER BY name")
        return {str(name): dict(orjson.loads(record)) for name, record in rows}

    def report_names(self) -> list[str]:
        return [str(row[0]) for row in self._rows("SELECT name FROM reports ORDER BY name")]

    def report(self, name: str) -> StoredReport | None:
        rows = self._rows("SELECT received_at, record FROM reports WHERE name = %s", (name,))
        if not rows:
            return None
        record = orjson.loads(rows[0][1])
        if not isinstance(record, dict):
            raise ValueError(f"the report {name!r} is not a JSON object")
        return StoredReport(float(rows[0][0]), record)

    def put_report(self, name: str, report: StoredReport) -> None:
        self._write(
            "reports",
            "INSERT INTO reports (name, received_at, record) VALUES (%s, %s, %s) ON CONFLICT (name)"
            " DO UPDATE SET received_at = excluded.received_at, record = excluded.record",
            (name, report.received_at, orjson.dumps(report.record).decode()),
        )

    def drains(self) -> list[Drain]:
        rows = self._rows('SELECT kind, code, since, "by", reason FROM drains ORDER BY since, kind, code')
        return [Drain(str(k), str(c), float(s), str(b), str(r)) for k, c, s, b, r in rows]

    def add_drain(self, drain: Drain) -> bool:
        cursor = self._write(
            "drains",
            'INSERT INTO drains (kind, code, since, "by", reason) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING',
            (drain.kind, drain.code, drain.since, drain.by, drain.reason),
        )
        return bool(cursor.rowcount == 1)

    def remove_drain(self, kind: str, code: str) -> bool:
        return bool(
            self._write("drains", "DELETE FROM drains WHERE kind = %s AND code = %s", (kind, code)).rowcount == 1
        )

    def audit(self, record: AuditRecord) -> None:
        self._execute(
            "INSERT INTO audit (at, who, action, target, outcome, detail) VALUES (%s, %s, %s, %s, %s, %s)",
            (record.at, record.who, record.action, record.target, record.outcome, orjson.dumps(record.detail).decode()),
        )

    def add_key(self, key: StoredKey) -> None:
        self._write(
            "keys", f"INSERT INTO keys ({KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", key_row(key)
        )

    def api_keys(self) -> list[StoredKey]:
        return [key_from_row(row) for row in self._rows(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id")]

    def revoke_key(self, key_id: str, at: float) -> bool:
        cursor = self._write(
            "keys", "UPDATE keys SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL", (at, key_id)
        )
        return bool(cursor.rowcount == 1)

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        rows = self._rows(
            "SELECT at, who, action, target, outcome, detail FROM audit ORDER BY id DESC LIMIT %s", (limit,)
        )
        return [AuditRecord(float(at), w, a, t, o, orjson.loads(d)) for at, w, a, t, o, d in rows]

    def schema_version(self) -> int:
        return int(self._rows("SELECT value FROM edgeplane_meta WHERE key = 'schema_version'")[0][0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()


def connect(psycopg: Any, url: str, timeout_seconds: float) -> Any:
    """A connection for the store: autocommit, named, and every statement, lock wait and idle transaction held
    to ``timeout_seconds`` by the server."""
    ms = max(1, round(timeout_seconds * 1000))
    return psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(2, math.ceil(timeout_seconds)),
        application_name=APPLICATION,
        options=f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={2 * ms}",
    )


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def inspect(db: Any) -> tuple[set[str], dict[str, str]]:
    """The tables of the connection's current schema, and the store's meta rows (empty when there are none)."""
    tables = {
        str(row[0])
        for row in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    }
    meta: dict[str, str] = {}
    if "edgeplane_meta" in tables:
        meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM edgeplane_meta").fetchall()}
    return tables, meta


def schema_version(meta: dict[str, str]) -> int | None:
    """The store's schema version from its meta rows; None when it is missing or not a number."""
    text = meta.get("schema_version", "")
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _check(db: Any, path: str, *, create: bool) -> None:
    """Make an empty database a store (if ``create``), bring an older store to the current schema, refuse anything
    else."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        tables, meta = inspect(db)
        if not tables and not create:
            raise StoreRefused(path, "holds no store (the database is empty)", "give the URL of an edgeplane store")
        if not tables:
            for sql in _TABLES.values():
                db.execute(sql)
            db.execute(
                "INSERT INTO edgeplane_meta (key, value) VALUES ('application', %s), ('schema_version', %s),"
                " ('revision', '0')",
                (APPLICATION, str(SCHEMA_VERSION)),
            )
            db.execute("INSERT INTO leader (id, term) VALUES (1, 0)")
            return
        if "edgeplane_meta" not in tables and {"drains", "audit"} <= tables:
            raise StoreRefused(path, "is damaged (its edgeplane_meta table is missing)")
        if meta.get("application") != APPLICATION:
            raise StoreRefused(
                path,
                f"is not an edgeplane store (its tables: {', '.join(sorted(tables)[:8])})",
                "give an empty database (or one an edgeplane control plane made)",
            )
        version = schema_version(meta)
        if version is None:
            raise StoreRefused(path, f"is damaged (its schema version reads {meta.get('schema_version')!r})")
        if version > SCHEMA_VERSION:
            raise StoreRefused(
                path,
                f"was written by a newer edgeplane (schema {version}; this one knows up to {SCHEMA_VERSION})",
                "run that newer edgeplane",
            )
        if version < FIRST_VERSION:
            raise StoreRefused(path, f"has schema {version}, which no edgeplane wrote", "restore it from a backup")
        for step in _MIGRATIONS[version - FIRST_VERSION :]:
            for statement in step:
                db.execute(statement)
        if version < SCHEMA_VERSION:
            db.execute("UPDATE edgeplane_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
        missing = set(_TABLES) - tables if version == SCHEMA_VERSION else set()
        if missing:
            raise StoreRefused(path, f"is damaged (tables missing: {', '.join(sorted(missing))})")
