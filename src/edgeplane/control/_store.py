"""Where the control plane keeps what must survive a restart: drains, the audit log, keys, placement, BGP actions,
units, the fabric's transfers and the reports published to it."""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from edgeplane._errors import ConfigError, EdgeplaneError
from edgeplane.tenants import KeyPolicy
from edgeplane.units import UnitRecord, unit_from_json

DRAIN_KINDS = ("metro", "pop", "unit")


@dataclass(frozen=True, slots=True)
class Drain:
    kind: str  # metro | pop | unit
    code: str
    since: float  # unix seconds
    by: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "code": self.code,
            "since": self.since,
            "by": self.by,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: float
    who: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "who": self.who,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A report published to the control plane (a JSON object), as it was kept, and when it was received."""

    received_at: float  # unix seconds
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Replica:
    """One control plane process on a shared store, as it last said (its heartbeat)."""

    id: str
    url: str
    pid: int
    leader: bool
    term: int
    revision: int
    seen_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class StoredKey:
    hash: str
    policy: KeyPolicy
    created_at: float
    revoked_at: float | None = None


# How keys are kept as rows, whichever database keeps them.
KEY_COLUMNS = "id, hash, tenant, continent, region, rpm, tpm, models, created_at, revoked_at"


def key_row(key: StoredKey) -> tuple[Any, ...]:
    p = key.policy
    models = orjson.dumps(sorted(p.models)).decode() if p.models is not None else None
    return (p.id, key.hash, p.tenant, p.continent, p.region, p.rpm, p.tpm, models, key.created_at, key.revoked_at)


def key_from_row(row: Sequence[Any]) -> StoredKey:
    key_id, digest, tenant, continent, region, rpm, tpm, models, created, revoked = row
    allowed = frozenset(orjson.loads(models)) if models is not None else None
    policy = KeyPolicy(key_id, tenant, continent, region, rpm, tpm, allowed, revoked is not None)
    return StoredKey(digest, policy, float(created), None if revoked is None else float(revoked))


class Store(abc.ABC):
    """The control plane's durable state. Every implementation passes tests/control/test_store.py."""

    @abc.abstractmethod
    def drains(self) -> list[Drain]: ...

    @abc.abstractmethod
    def add_drain(self, drain: Drain) -> bool:
        """Record a drain; False if that target was already drained."""

    @abc.abstractmethod
    def remove_drain(self, kind: str, code: str) -> bool:
        """Forget a drain; False if there was none."""

    @abc.abstractmethod
    def audit(self, record: AuditRecord) -> None: ...

    @abc.abstractmethod
    def add_key(self, key: StoredKey) -> None: ...

    @abc.abstractmethod
    def api_keys(self) -> list[StoredKey]: ...

    @abc.abstractmethod
    def revoke_key(self, key_id: str, at: float) -> bool:
        """Mark a key revoked; False if there is no such key or it was revoked already."""

    @abc.abstractmethod
    def audit_log(self, limit: int = 100) -> list[AuditRecord]: ...

    @abc.abstractmethod
    def placement(self) -> list[tuple[str, str, int]] | None:
        """The applied placement ((model, PoP, replicas)), or None if the fleet file's stands."""

    @abc.abstractmethod
    def set_placement(self, entries: list[tuple[str, str, int]]) -> None: ...

    @abc.abstractmethod
    def bgp_actions(self) -> list[tuple[str, int, str]]:
        """Standing BGP actions: (PoP, transit ASN, action), in the order they were set."""

    @abc.abstractmethod
    def set_bgp_action(self, pop: str, transit_asn: int, action: str | None) -> None:
        """Set (or with None clear) the action of one PoP toward one transit."""

    @abc.abstractmethod
    def units(self) -> list[UnitRecord]:
        """Units whose lifecycle was changed or that were ordered through the control plane."""

    @abc.abstractmethod
    def put_unit(self, record: UnitRecord) -> None:
        """Keep a unit's record (replacing the one kept)."""

    @abc.abstractmethod
    def transfers(self) -> list[dict[str, Any]]:
        """The fabric's transfers, as their records (FabricBook reads them)."""

    @abc.abstractmethod
    def put_transfer(self, name: str, record: dict[str, Any]) -> None:
        """Keep a transfer's record under its object's name (replacing the one kept)."""

    @abc.abstractmethod
    def remove_transfer(self, name: str) -> bool:
        """Forget a transfer; False if there was none."""

    @abc.abstractmethod
    def report(self, name: str) -> StoredReport | None:
        """The latest report published under ``name`` (such as "peering-candidates"), or None."""

    @abc.abstractmethod
    def put_report(self, name: str, report: StoredReport) -> None:
        """Keep a report under its name (replacing the one kept)."""

    @abc.abstractmethod
    def report_names(self) -> list[str]:
        """The names reports are kept under."""

    @abc.abstractmethod
    def named_transfers(self) -> dict[str, dict[str, Any]]:
        """The fabric's transfers by the name each was kept under."""

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        """Every write inside is kept, or none (a store copy, a change of several rows)."""
        yield

    # Replication. A store several control planes share (PostgreSQL) overrides these; one process on its own
    # store (SQLite) is the only replica, always the leader, and hears of no change but its own.
    replicated = False

    def revision(self) -> int:
        """A number that grows with every change of the fleet's state (not the audit log)."""
        return 0

    def watch(self, on_change: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_change(payload)`` (from another thread) after each change another replica commits, and with
        "resync" when changes may have been missed; returns what stops watching."""
        return lambda: None

    def elect(self, replica: str, term: int, lease_seconds: float) -> int | None:
        """Take or keep the leadership for ``lease_seconds``: the leader's term (``term`` kept while the lease
        holds, a new one when it is taken), or None when another replica holds it."""
        return max(term, 1)

    @contextlib.contextmanager
    def fenced(self, replica: str, term: int) -> Iterator[None]:
        """Writes inside are kept only while ``replica`` leads in ``term`` with its lease unexpired (else
        Deposed, and nothing inside is kept): what a deposed leader still tries is refused."""
        yield

    def heartbeat(self, replica: Replica) -> None:  # noqa: B027 - nobody to tell on a store of one's own
        """Say that ``replica`` is alive, where it serves and whether it leads."""

    def replicas(self, within_seconds: float) -> list[Replica]:
        """The replicas heard from within ``within_seconds``."""
        return []

    def put_agent_report(self, pop: str, body: str, received_at: float, replica: str) -> None:  # noqa: B027
        """Share a site agent's last report (JSON, received at unix seconds) with the other replicas."""

    def agent_reports(self, since: float) -> list[tuple[str, str, float, str]]:
        """Reports received since ``since`` (unix seconds): (PoP, JSON body, received at, by replica)."""
        return []

    def spend(self, key_id: str, window: int, grant: Callable[[int, int], tuple[int, int]]) -> tuple[int, int]:
        """Rate-limit leases among replicas: in one transaction, what was spent of ``key_id`` in ``window``
        (requests, tokens: 0, 0 in a new window) goes to ``grant``, whose answer is added to it and returned.
        Only a replicated store keeps it (one control plane alone keeps its leases in memory)."""
        raise NotImplementedError("leases are kept in memory on a store of one's own")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class Deposed(EdgeplaneError):
    """A leader's write refused: another replica has led since (a newer term), or its lease ran out."""


class StoreError(EdgeplaneError):
    """The store could not read or write: the change asked for was not made."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full

    @classmethod
    def from_sqlite(cls, path: str, error: sqlite3.Error) -> StoreError:
        if _disk_full(path, error):
            return cls(f"the store {path} cannot be written: the disk is full (free space there)", full=True)
        return cls(f"the store {path} failed: {error}")


# Below this, a write error of the store's disk is a full disk (SQLite in WAL mode says "disk I/O error").
FULL_DISK_BYTES = 1024 * 1024


def _disk_full(path: str, error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return True
    if path == ":memory:" or code is None or code & 0xFF != sqlite3.SQLITE_IOERR:
        return False
    try:
        return shutil.disk_usage(Path(path).parent).free < FULL_DISK_BYTES
    except OSError:
        return False


class StoreRefused(ConfigError):
    """The store's file exists but cannot be used as it is: empty, damaged, or not an edgeplane store."""

    def __init__(self, path: Path | str, problem: str, advice: str = "") -> None:
        self.path = path
        if not advice and isinstance(path, Path):
            advice = (
                "restore it from a backup, or start empty on purpose with --reset-store"
                f" (which moves it aside to {path.name}.broken-TIMESTAMP; nothing is deleted)"
            )
        advice = advice or "restore it from a backup, or give an empty database"
        super().__init__(f"the store {path} {problem}: {advice}")


# The store says what it is in its SQLite header: application_id marks an edgeplane store and
# user_version is its schema. Stores written before either existed carry 0 in both.
APPLICATION_ID = 0x45504C4E  # "EPLN"
# Migrations: the statements that bring a store of schema N to N + 1, for N = 1, 2, ... in order (a store is
# migrated in one transaction when it is opened). A change of schema appends a step here and changes _TABLES,
# which is what a new store is made with; SCHEMA_VERSION follows.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1 -> 2: the fabric's transfers (issue 16).
    ("CREATE TABLE fabric (name TEXT PRIMARY KEY, record TEXT NOT NULL)",),
    # 2 -> 3: reports published to the control plane, the latest of each name (peering candidates).
    ("CREATE TABLE reports (name TEXT PRIMARY KEY, received_at REAL NOT NULL, record TEXT NOT NULL)",),
)
SCHEMA_VERSION = 1 + len(_MIGRATIONS)

_TABLES = {
    "drains": "CREATE TABLE drains (kind TEXT NOT NULL, code TEXT NOT NULL, since REAL NOT NULL,"
    " by TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, code))",
    "audit": "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
    " who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL,"
    " detail TEXT NOT NULL)",
    "keys": "CREATE TABLE keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,"
    " continent TEXT, region TEXT, rpm INTEGER, tpm INTEGER, models TEXT, created_at REAL NOT NULL,"
    " revoked_at REAL)",
    "placement": "CREATE TABLE placement (id INTEGER PRIMARY KEY CHECK (id = 1), entries TEXT)",
    "bgp_actions": "CREATE TABLE bgp_actions (id INTEGER PRIMARY KEY AUTOINCREMENT, pop TEXT NOT NULL,"
    " transit_asn INTEGER NOT NULL, action TEXT NOT NULL, UNIQUE (pop, transit_asn))",
    "units": "CREATE TABLE units (code TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "fabric": "CREATE TABLE fabric (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "reports": "CREATE TABLE reports (name TEXT PRIMARY KEY, received_at REAL NOT NULL, record TEXT NOT NULL)",
}
# Every store the first release wrote has these; later tables were added to old stores on open.
_FIRST_TABLES = {"drains", "audit"}
_SIDECARS = ("-wal", "-shm")
# SQLite result codes (the low byte of the extended code) that mean the bytes are not a sound database.
_DAMAGED_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT}


class SQLiteStore(Store):
    """The default store: one SQLite file in the data directory (``:memory:`` for tests).

    A missing file is a new fleet and is created; a file that is empty, damaged or not an edgeplane
    store is refused with `StoreRefused` rather than silently started empty. ``reset=True`` moves an
    existing file aside (``moved_aside`` says where) and starts empty on purpose."""

    def __init__(self, path: str | Path, *, reset: bool = False) -> None:
        self.moved_aside: Path | None = None
        self.path = str(path)
        if str(path) == ":memory:":
            self._db = _connect(":memory:")
            _create(self._db)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if reset:
            self.moved_aside = _move_aside(path)
        if not path.exists():
            if path.with_name(path.name + "-wal").exists():
                raise StoreRefused(path, f"is missing but its write-ahead log {path.name}-wal is there")
            _create_file(path)
        self._db = _open_checked(path)
        self._read_all(path)

    def _read_all(self, path: Path) -> None:
        """Read every record the control plane builds its state from once, at open: a record it cannot read
        (an edited or half-written row) refuses the store, naming it, instead of failing the start later."""
        try:
            self.drains(), self.api_keys(), self.placement(), self.bgp_actions(), self.units(), self.transfers()
            for name in self.report_names():
                self.report(name)
        except (StoreError, ValueError, KeyError, TypeError) as error:
            self._db.close()
            raise StoreRefused(path, f"holds a record that cannot be read ({error})") from None

    def __repr__(self) -> str:
        return f"<SQLiteStore [Drains: {len(self.drains())}]>"

    def _execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        """SQLite's errors stop here, as the store's own: a full disk says so."""
        try:
            return self._db.execute(sql, parameters)
        except sqlite3.Error as error:
            raise StoreError.from_sqlite(self.path, error) from error

    @contextlib.contextmanager
    def bulk(self) -> Iterator[None]:
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._execute("COMMIT")

    def placement(self) -> list[tuple[str, str, int]] | None:
        row = self._execute("SELECT entries FROM placement WHERE id = 1").fetchone()
        return None if row is None else [(str(m), str(p), int(n)) for m, p, n in orjson.loads(row[0])]

    def set_placement(self, entries: list[tuple[str, str, int]]) -> None:
        self._execute(
            "INSERT INTO placement (id, entries) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET entries = excluded.entries",
            (orjson.dumps([list(e) for e in entries]).decode(),),
        )

    def bgp_actions(self) -> list[tuple[str, int, str]]:
        rows = self._execute("SELECT pop, transit_asn, action FROM bgp_actions ORDER BY id")
        return [(str(pop), int(asn), str(action)) for pop, asn, action in rows]

    def set_bgp_action(self, pop: str, transit_asn: int, action: str | None) -> None:
        self._execute("DELETE FROM bgp_actions WHERE pop = ? AND transit_asn = ?", (pop, transit_asn))
        if action is not None:
            self._execute(
                "INSERT INTO bgp_actions (pop, transit_asn, action) VALUES (?, ?, ?)", (pop, transit_asn, action)
            )

    def units(self) -> list[UnitRecord]:
        return [unit_from_json(orjson.loads(row[0])) for row in self._execute("SELECT record FROM units")]

    def put_unit(self, record: UnitRecord) -> None:
        self._execute(
            "INSERT INTO units (code, record) VALUES (?, ?) ON CONFLICT (code) DO UPDATE SET record = excluded.record",
            (record.code, orjson.dumps(record.to_json()).decode()),
        )

    def transfers(self) -> list[dict[str, Any]]:
        return [dict(orjson.loads(row[0])) for row in self._execute("SELECT record FROM fabric ORDER BY name")]

    def put_transfer(self, name: str, record: dict[str, Any]) -> None:
        self._execute(
            "INSERT INTO fabric (name, record) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET record = excluded.record",
            (name, orjson.dumps(record).decode()),
        )

    def remove_transfer(self, name: str) -> bool:
        return self._execute("DELETE FROM fabric WHERE name = ?", (name,)).rowcount > 0

    def named_transfers(self) -> dict[str, dict[str, Any]]:
        rows = self._execute("SELECT name, record FROM fabric ORDER BY name")
        return {str(name): dict(orjson.loads(record)) for name, record in rows}

    def report_names(self) -> list[str]:
        return [str(row[0]) for row in self._execute("SELECT name FROM reports ORDER BY name")]

    def report(self, name: str) -> StoredReport | None:
        row = self._execute("SELECT received_at, record FROM reports WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        record = orjson.loads(row[1])
        if not isinstance(record, dict):
            raise ValueError(f"the report {name!r} is not a JSON object")
        return StoredReport(float(row[0]), record)

    def put_report(self, name: str, report: StoredReport) -> None:
        self._execute(
            "INSERT INTO reports (name, received_at, record) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET received_at = excluded.received_at, record = excluded.record",
            (name, report.received_at, orjson.dumps(report.record).decode()),
        )

    def drains(self) -> list[Drain]:
        rows = self._execute("SELECT kind, code, since, by, reason FROM drains ORDER BY since, kind, code")
        return [Drain(*row) for row in rows]

    def add_drain(self, drain: Drain) -> bool:
        cursor = self._execute(
            "INSERT OR IGNORE INTO drains (kind, code, since, by, reason) VALUES (?, ?, ?, ?, ?)",
            (drain.kind, drain.code, drain.since, drain.by, drain.reason),
        )
        return cursor.rowcount == 1

    def remove_drain(self, kind: str, code: str) -> bool:
        cursor = self._execute("DELETE FROM drains WHERE kind = ? AND code = ?", (kind, code))
        return cursor.rowcount == 1

    def audit(self, record: AuditRecord) -> None:
        self._execute(
            "INSERT INTO audit (at, who, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.at,
                record.who,
                record.action,
                record.target,
                record.outcome,
                orjson.dumps(record.detail),
            ),
        )

    def add_key(self, key: StoredKey) -> None:
        self._execute(f"INSERT INTO keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", key_row(key))

    def api_keys(self) -> list[StoredKey]:
        return [key_from_row(row) for row in self._execute(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id")]

    def revoke_key(self, key_id: str, at: float) -> bool:
        cursor = self._execute("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id))
        return cursor.rowcount == 1

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        rows = self._execute(
            "SELECT at, who, action, target, outcome, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [
            AuditRecord(at, who, action, target, outcome, orjson.loads(detail))
            for at, who, action, target, outcome, detail in rows
        ]

    def close(self) -> None:
        self._db.close()


def _connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _create(db: sqlite3.Connection) -> None:
    for sql in _TABLES.values():
        db.execute(sql)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _create_file(path: Path) -> None:
    """Build a new store beside ``path`` and rename it into place, so that a crash while creating it
    leaves no file rather than an empty one (which would be refused as wiped on the next start)."""
    building = path.with_name(f"{path.name}.new-{os.getpid()}")
    for leftover in (building, *(building.with_name(building.name + s) for s in (*_SIDECARS, "-journal"))):
        leftover.unlink(missing_ok=True)
    db = _connect(str(building))
    try:
        with db:
            db.execute("BEGIN")
            _create(db)
    finally:
        db.close()
    with building.open("rb") as written:
        os.fsync(written.fileno())
    building.rename(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _open_checked(path: Path) -> sqlite3.Connection:
    if path.stat().st_size == 0:
        raise StoreRefused(path, "is empty (0 bytes), as if it was truncated or wiped")
    try:
        db = _connect(str(path))
    except sqlite3.Error as error:
        raise StoreRefused(path, f"cannot be opened ({error})", "check its permissions and the disk") from None
    try:
        _check(db, path)
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.DatabaseError as error:
        db.close()
        if error.sqlite_errorcode & 0xFF in _DAMAGED_CODES:
            raise StoreRefused(path, f"is damaged or not a database ({error})") from None
        raise StoreRefused(path, f"cannot be read ({error})", "check its permissions and the disk") from None
    except BaseException:
        db.close()
        raise
    return db


def _check(db: sqlite3.Connection, path: Path) -> None:
    """Refuse what is not a sound edgeplane store; bring an old one to the current schema."""
    problems = [" ".join(str(row[0]).split()) for row in db.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise StoreRefused(path, "is damaged (SQLite's quick_check: " + "; ".join(problems) + ")")
    application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {
        str(row[0])
        for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    }
    if application_id == 0 and version == 0:
        _migrate_unversioned(db, path, tables)
    elif application_id != APPLICATION_ID:
        raise StoreRefused(path, f"is not an edgeplane store (its SQLite application id is {application_id:#x})")
    elif version > SCHEMA_VERSION:
        raise StoreRefused(
            path,
            f"was written by a newer edgeplane (schema {version}; this one knows up to {SCHEMA_VERSION})",
            "run that newer edgeplane, or start empty on purpose with --reset-store",
        )
    elif 1 <= version < SCHEMA_VERSION:
        _migrate(db, version)
        _check(db, path)
    elif version < 1 or set(_TABLES) - tables:
        missing = ", ".join(sorted(set(_TABLES) - tables)) or "none"
        raise StoreRefused(path, f"is damaged (schema version {version}, tables missing: {missing})")


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring a store of schema ``version`` to the current one, every step or none."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        for step in _MIGRATIONS[version - 1 :]:
            for statement in step:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _migrate_unversioned(db: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    """A store written before the schema had a version has the current tables, maybe not all of them
    (later ones were added on open); anything else without a version is not ours."""
    if not tables:
        raise StoreRefused(path, "holds no tables: it was wiped, or is not an edgeplane store")
    if not (_FIRST_TABLES.issubset(tables) and tables.issubset(_TABLES)):
        raise StoreRefused(path, f"is not an edgeplane store (its tables: {', '.join(sorted(tables))})")
    with db:
        db.execute("BEGIN IMMEDIATE")
        for name in sorted(set(_TABLES) - tables):
            db.execute(_TABLES[name])
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _move_aside(path: Path) -> Path | None:
    """Rename the store (and its SQLite sidecars, so the copy still opens) to NAME.broken-TIMESTAMP."""
    if not any(p.exists() for p in (path, *(path.with_name(path.name + s) for s in _SIDECARS))):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while target.exists() or any(target.with_name(target.name + s).exists() for s in _SIDECARS):
        n += 1
        target = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    for suffix in ("", *_SIDECARS):
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(target.with_name(target.name + suffix))
    return target
