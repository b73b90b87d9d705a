"""Which store a URL names, opening it, saying what it holds (`store check`) and moving a fleet's state from one
store to another (`store copy`).

    sqlite:///PATH                  a SQLite file (an absolute path, as in file:// URLs; a plain path works too)
    postgresql://USER@HOST:PORT/DB  a PostgreSQL database (postgres:// alike; libpq's query options pass through)
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeplane._errors import ConfigError
from edgeplane.control._store import (
    _FIRST_TABLES,
    _TABLES,
    APPLICATION_ID,
    SCHEMA_VERSION,
    SQLiteStore,
    Store,
    StoredReport,
    StoreRefused,
)

DATABASE_FILE = "edgeplane.db"  # the SQLite store's name in the data directory


@dataclass(frozen=True, slots=True)
class StoreUrl:
    kind: str  # "sqlite" | "postgresql"
    target: str  # the SQLite file's path, or the PostgreSQL URL as given

    @property
    def shown(self) -> str:
        """How the store is named in messages and JSON: the file, or the URL without its password."""
        if self.kind == "sqlite":
            return f"sqlite://{Path(self.target).resolve()}"
        from edgeplane.control._postgres import redacted

        return redacted(self.target)


def parse_store_url(value: str) -> StoreUrl:
    """``sqlite:///PATH``, ``postgresql://...`` (or ``postgres://``), or a plain path (a SQLite file)."""
    text = value.strip()
    if not text:
        raise ConfigError("--store: empty; give sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError("--store: holds a control character; give sqlite:///PATH or postgresql://USER@HOST/DB")
    scheme, sep, rest = text.partition("://")
    if not sep:
        if ":" in text.split("/")[0] and not text.startswith(("/", ".")):
            raise ConfigError(f"--store {text!r}: not a store URL; give sqlite:///PATH or postgresql://USER@HOST/DB")
        return StoreUrl("sqlite", text)
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or rest.strip("/") == "":
            raise ConfigError(f"--store {text!r}: give the file's absolute path after sqlite:// (sqlite:///PATH)")
        return StoreUrl("sqlite", "/" + rest.lstrip("/"))
    if scheme in ("postgresql", "postgres"):
        return StoreUrl("postgresql", text)
    raise ConfigError(f"--store {text!r}: unknown kind of store {scheme!r}; give sqlite:///PATH or postgresql://...")


def default_store_url(data_dir: Path) -> StoreUrl:
    return StoreUrl("sqlite", str(data_dir / DATABASE_FILE))


def open_store(url: StoreUrl, *, reset: bool = False, create: bool = True) -> Store:
    """The store ``url`` names, checked (StoreRefused when it cannot be used as it is); with ``create`` False,
    where there is no store yet is refused too (the source of a copy)."""
    if url.kind == "sqlite":
        if not create and not Path(url.target).exists():
            raise ConfigError(f"{url.shown}: no store there")
        return SQLiteStore(url.target, reset=reset)
    if reset:
        raise ConfigError(
            "--reset-store moves a SQLite file aside; a PostgreSQL store is not reset by edgeplane"
            " (drop its tables yourself, or give an empty database)"
        )
    from edgeplane.control._postgres import PostgresStore

    return PostgresStore(url.target, create=create)


def describe(url: StoreUrl) -> dict[str, Any]:
    """What the store holds, read without changing it: ``{"store", "kind", "schema_version", "current_version",
    "state", "records"}``. ``state`` is what a control plane of this edgeplane would do with it: "current" (open
    it), "migrates" (an older schema: bring it up to date), "empty" (no store yet: make one); or refuse it:
    "newer" (a newer edgeplane's), "foreign" (another application's), "damaged"."""
    if url.kind == "sqlite":
        version, state = _sqlite_state(Path(url.target))
    else:
        version, state = _postgres_state(url.target, url.shown)
    found: dict[str, Any] = {
        "store": url.shown,
        "kind": url.kind,
        "schema_version": version,
        "current_version": SCHEMA_VERSION,
        "state": state,
        "records": None,
    }
    if state == "current":
        store = open_store(url)
        try:
            found["records"] = counts(store)
        finally:
            store.close()
    return found


REFUSED_STATES = ("newer", "foreign", "damaged")


def _sqlite_state(path: Path) -> tuple[int | None, str]:
    """As _store._check judges a file, without changing it."""
    try:
        if not path.exists():
            return None, "empty"
        if not path.is_file() or path.stat().st_size == 0:
            return None, "damaged"
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error) as error:
        raise StoreRefused(
            path, f"cannot be opened ({error})", "check the path, its permissions and the disk"
        ) from None
    try:
        application_id = int(db.execute("PRAGMA application_id").fetchone()[0])
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {
            str(row[0])
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        }
    except sqlite3.DatabaseError:
        return None, "damaged"
    finally:
        db.close()
    if application_id == 0 and version == 0:  # written before the schema had a version, or not ours
        if not tables:
            return 0, "damaged"
        return 0, "migrates" if _FIRST_TABLES <= tables <= set(_TABLES) else "foreign"
    if application_id != APPLICATION_ID:
        return None, "foreign"
    if version > SCHEMA_VERSION:
        return version, "newer"
    if 1 <= version < SCHEMA_VERSION:
        return version, "migrates"
    return version, "current" if version == SCHEMA_VERSION and set(_TABLES) <= tables else "damaged"


def _postgres_state(target: str, shown: str) -> tuple[int | None, str]:
    """As _postgres._check judges a database, without changing it."""
    from edgeplane._extras import require
    from edgeplane.control._postgres import _TABLES as PG_TABLES
    from edgeplane.control._postgres import APPLICATION, FIRST_VERSION, inspect, schema_version, scrubbed

    psycopg = require("psycopg", "postgres", "a PostgreSQL store")
    try:
        with psycopg.connect(target, autocommit=True, connect_timeout=5) as db:
            tables, meta = inspect(db)
    except psycopg.Error as error:
        said = scrubbed((str(error).strip().splitlines() or ["error"])[0], target)
        raise StoreRefused(
            shown, f"cannot be reached ({said})", "check the URL, that the server runs and its users"
        ) from None
    if not tables:
        return None, "empty"
    if "edgeplane_meta" not in tables:
        return None, "damaged" if {"drains", "audit"} <= tables else "foreign"
    if meta.get("application") != APPLICATION:
        return None, "foreign"
    version = schema_version(meta)
    if version is None or version < FIRST_VERSION:
        return version, "damaged"
    if version > SCHEMA_VERSION:
        return version, "newer"
    if version < SCHEMA_VERSION:
        return version, "migrates"
    return version, "current" if set(PG_TABLES) <= tables else "damaged"


def counts(store: Store) -> dict[str, int]:
    """How many records of each kind ``store`` holds."""
    return {
        "drains": len(store.drains()),
        "keys": len(store.api_keys()),
        "audit": len(store.audit_log(limit=ALL)),
        "units": len(store.units()),
        "placement": len(store.placement() or []),
        "bgp_actions": len(store.bgp_actions()),
        "transfers": len(store.transfers()),
        "reports": len(store.report_names()),
    }


ALL = 2**62  # "every record" as a LIMIT both databases take


class StoreNotEmpty(ConfigError):
    """`store copy` refuses to mix a fleet's state into a store that holds another's."""


def copy(source: Store, target: Store) -> dict[str, int]:
    """Every record of ``source`` into ``target`` (which must hold none), in one transaction: drains, keys
    (hashes only, as kept), the audit log (oldest first, times kept), units, placement, BGP actions (in order),
    the fabric's transfers and published reports. Returns the counts copied."""
    held = {kind: n for kind, n in counts(target).items() if n}
    if held:
        shown = ", ".join(f"{n} {kind}" for kind, n in sorted(held.items()))
        raise StoreNotEmpty(f"the target store already holds records ({shown}): give an empty store")
    with source.bulk():  # read as of one moment (a control plane may be writing it)
        drains, keys, audit = source.drains(), source.api_keys(), source.audit_log(limit=ALL)
        units, placement, actions = source.units(), source.placement(), source.bgp_actions()
        transfers = source.named_transfers()
        reports = {name: source.report(name) for name in source.report_names()}
    with target.bulk():
        for drain in drains:
            target.add_drain(drain)
        for key in keys:
            target.add_key(key)
        for entry in reversed(audit):
            target.audit(entry)
        for unit in units:
            target.put_unit(unit)
        if placement is not None:
            target.set_placement(placement)
        for pop, asn, action in actions:
            target.set_bgp_action(pop, asn, action)
        for name, record in transfers.items():
            target.put_transfer(name, record)
        for name, report in reports.items():
            if report is not None:
                target.put_report(name, StoredReport(report.received_at, report.record))
    return counts(target)
