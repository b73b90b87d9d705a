"""Where the control plane keeps what must survive a restart: drains and the audit log."""

from __future__ import annotations

import abc
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

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
class StoredKey:
    hash: str
    policy: KeyPolicy
    created_at: float
    revoked_at: float | None = None


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

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class SQLiteStore(Store):
    """The default store: one SQLite file in the data directory (``:memory:`` for tests)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS drains (kind TEXT NOT NULL, code TEXT NOT NULL, since REAL NOT NULL,"
            " by TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, code))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
            " who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL,"
            " detail TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,"
            " continent TEXT, region TEXT, rpm INTEGER, tpm INTEGER, models TEXT, created_at REAL NOT NULL,"
            " revoked_at REAL)"
        )

        self._db.execute("CREATE TABLE IF NOT EXISTS placement (id INTEGER PRIMARY KEY CHECK (id = 1), entries TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS bgp_actions (id INTEGER PRIMARY KEY AUTOINCREMENT, pop TEXT NOT NULL,"
            " transit_asn INTEGER NOT NULL, action TEXT NOT NULL, UNIQUE (pop, transit_asn))"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS units (code TEXT PRIMARY KEY, record TEXT NOT NULL)")

    def __repr__(self) -> str:
        return f"<SQLiteStore [Drains: {len(self.drains())}]>"

    def placement(self) -> list[tuple[str, str, int]] | None:
        row = self._db.execute("SELECT entries FROM placement WHERE id = 1").fetchone()
        return None if row is None else [(str(m), str(p), int(n)) for m, p, n in orjson.loads(row[0])]

    def set_placement(self, entries: list[tuple[str, str, int]]) -> None:
        self._db.execute(
            "INSERT INTO placement (id, entries) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET entries = excluded.entries",
            (orjson.dumps([list(e) for e in entries]).decode(),),
        )

    def bgp_actions(self) -> list[tuple[str, int, str]]:
        rows = self._db.execute("SELECT pop, transit_asn, action FROM bgp_actions ORDER BY id")
        return [(str(pop), int(asn), str(action)) for pop, asn, action in rows]

    def set_bgp_action(self, pop: str, transit_asn: int, action: str | None) -> None:
        self._db.execute("DELETE FROM bgp_actions WHERE pop = ? AND transit_asn = ?", (pop, transit_asn))
        if action is not None:
            self._db.execute(
                "INSERT INTO bgp_actions (pop, transit_asn, action) VALUES (?, ?, ?)", (pop, transit_asn, action)
            )

    def units(self) -> list[UnitRecord]:
        return [unit_from_json(orjson.loads(row[0])) for row in self._db.execute("SELECT record FROM units")]

    def put_unit(self, record: UnitRecord) -> None:
        self._db.execute(
            "INSERT INTO units (code, record) VALUES (?, ?) ON CONFLICT (code) DO UPDATE SET record = excluded.record",
            (record.code, orjson.dumps(record.to_json()).decode()),
        )

    def drains(self) -> list[Drain]:
        rows = self._db.execute("SELECT kind, code, since, by, reason FROM drains ORDER BY since, kind, code")
        return [Drain(*row) for row in rows]

    def add_drain(self, drain: Drain) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO drains (kind, code, since, by, reason) VALUES (?, ?, ?, ?, ?)",
            (drain.kind, drain.code, drain.since, drain.by, drain.reason),
        )
        return cursor.rowcount == 1

    def remove_drain(self, kind: str, code: str) -> bool:
        cursor = self._db.execute("DELETE FROM drains WHERE kind = ? AND code = ?", (kind, code))
        return cursor.rowcount == 1

    def audit(self, record: AuditRecord) -> None:
        self._db.execute(
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
        p = key.policy
        models = orjson.dumps(sorted(p.models)).decode() if p.models is not None else None
        self._db.execute(
            "INSERT INTO keys (id, hash, tenant, continent, region, rpm, tpm, models, created_at, revoked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (p.id, key.hash, p.tenant, p.continent, p.region, p.rpm, p.tpm, models, key.created_at, key.revoked_at),
        )

    def api_keys(self) -> list[StoredKey]:
        rows = self._db.execute(
            "SELECT id, hash, tenant, continent, region, rpm, tpm, models, created_at, revoked_at FROM keys"
            " ORDER BY created_at, id"
        )
        out = []
        for key_id, digest, tenant, continent, region, rpm, tpm, models, created, revoked in rows:
            allowed = frozenset(orjson.loads(models)) if models is not None else None
            policy = KeyPolicy(key_id, tenant, continent, region, rpm, tpm, allowed, revoked is not None)
            out.append(StoredKey(digest, policy, created, revoked))
        return out

    def revoke_key(self, key_id: str, at: float) -> bool:
        cursor = self._db.execute("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (at, key_id))
        return cursor.rowcount == 1

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        rows = self._db.execute(
            "SELECT at, who, action, target, outcome, detail FROM audit ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [
            AuditRecord(at, who, action, target, outcome, orjson.loads(detail))
            for at, who, action, target, outcome, detail in rows
        ]

    def close(self) -> None:
        self._db.close()
