"""One suite every store passes: SQLite on disk and in memory, and PostgreSQL (a cluster the test starts)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeplane._errors import ConfigError
from edgeplane.control import AuditRecord, Drain, SQLiteStore, Store
from edgeplane.control._store import _TABLES, APPLICATION_ID, SCHEMA_VERSION, StoredReport
from edgeplane.units import UnitRecord, UnitState, move


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store
    if request.param == "postgresql":
        from edgeplane.control._postgres import PostgresStore

        made = PostgresStore(request.getfixturevalue("postgres_cluster").database())
    else:
        made = SQLiteStore(tmp_path / "state" / "edgeplane.db" if request.param == "sqlite-file" else ":memory:")
    yield made
    made.close()


def test_drains_are_added_once_and_removed(store: Store) -> None:
    assert store.drains() == []
    assert store.add_drain(Drain("metro", "nyc", 10.0, "alice", "maintenance"))
    assert not store.add_drain(Drain("metro", "nyc", 11.0, "bob"))
    assert store.add_drain(Drain("pop", "ams1", 12.0, "bob"))
    assert [(d.kind, d.code, d.by) for d in store.drains()] == [("metro", "nyc", "alice"), ("pop", "ams1", "bob")]
    assert store.remove_drain("metro", "nyc")
    assert not store.remove_drain("metro", "nyc")
    assert [d.code for d in store.drains()] == ["ams1"]


def test_audit_log_is_newest_first(store: Store) -> None:
    store.audit(AuditRecord(1.0, "alice", "drain", "metro nyc", "ok", {"n": 1}))
    store.audit(AuditRecord(2.0, "bob", "undrain", "metro nyc", "ok", {}))
    log = store.audit_log()
    assert [r.who for r in log] == ["bob", "alice"] and log[1].detail == {"n": 1}


def test_sqlite_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    first = SQLiteStore(path)
    first.add_drain(Drain("metro", "lon", 5.0, "carol"))
    first.set_bgp_action("lon1", 64500, "prepend-2")
    first.close()
    again = SQLiteStore(path)
    assert [d.code for d in again.drains()] == ["lon"]
    assert again.bgp_actions() == [("lon1", 64500, "prepend-2")]
    again.close()


def test_bgp_actions_replace_per_transit_and_clear(store: Store) -> None:
    store.set_bgp_action("lon1", 64499, "prepend-1")
    store.set_bgp_action("lon1", 64500, "no-export")
    store.set_bgp_action("lon1", 64499, "prepend-3")
    assert store.bgp_actions() == [("lon1", 64500, "no-export"), ("lon1", 64499, "prepend-3")]
    store.set_bgp_action("lon1", 64500, None)
    assert store.bgp_actions() == [("lon1", 64499, "prepend-3")]


def test_unit_records_are_kept_whole_and_replaced_by_code(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    first = SQLiteStore(path)
    unit = UnitRecord("ams1-n1", "ams1", UnitState.ORDERED, 10.0, "planner", "order", due=99.0)
    first.put_unit(unit)
    moved = move(move(unit, UnitState.ASSEMBLING, at=11, by="f"), UnitState.FACTORY_ACCEPTANCE_TEST, at=12, by="f")
    moved = move(moved, UnitState.SHIPPING, at=13, by="f", acceptance={"passed": True, "burn_in_hours": 48})
    first.put_unit(moved)
    first.close()
    again = SQLiteStore(path)  # a restart
    assert again.units() == [moved]
    again.close()


# -- what the store refuses to open, and what it brings up to date -------------------------------
def _header(path: Path) -> tuple[int, int]:
    """(application_id, user_version) as SQLite keeps them in the file's header."""
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA application_id").fetchone()[0], db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def test_a_new_store_says_what_it_is_and_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    SQLiteStore(path).close()
    application_id, version = _header(path)
    assert application_id != 0 and version >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgeplane.db"]  # no half-built file left beside it


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "is empty (0 bytes)"),
        (bytes(random.Random(7).randrange(256) for _ in range(8192)), "is damaged or not a database"),
    ],
    ids=["truncated-to-zero", "random-bytes"],
)
def test_an_unusable_file_is_refused_naming_it(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "edgeplane.db"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        SQLiteStore(path)
    message = str(refused.value)
    assert str(path) in message and problem in message and "--reset-store" in message and "backup" in message
    assert path.read_bytes() == content  # refused, not touched


def test_a_store_cut_in_half_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    store = SQLiteStore(path)
    for n in range(2000):
        store.audit(AuditRecord(float(n), "alice", "drain", f"metro m{n}", "ok", {"n": n, "pad": "x" * 40}))
    store.close()
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(size // 2)
    with pytest.raises(ConfigError, match=r"is damaged"):
        SQLiteStore(path)


def test_a_database_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE songs (title TEXT)")
    other.commit()
    other.close()
    with pytest.raises(ConfigError, match=r"is not an edgeplane store \(its tables: songs\)"):
        SQLiteStore(path)


def test_a_store_from_a_newer_edgeplane_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.close()
    with pytest.raises(ConfigError, match=r"newer edgeplane \(schema 999"):
        SQLiteStore(path)


def test_a_store_written_before_the_schema_version_is_brought_up_to_date(tmp_path: Path) -> None:
    """The first release's tables, no version in the header: migrated in place, nothing lost."""
    path = tmp_path / "edgeplane.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE drains (kind TEXT NOT NULL, code TEXT NOT NULL, since REAL NOT NULL,"
        " by TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, code))"
    )
    old.execute(
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,"
        " action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL)"
    )
    old.execute("INSERT INTO drains VALUES ('metro', 'lon', 5.0, 'carol', 'fibre cut')")
    old.commit()
    old.close()
    assert _header(path) == (0, 0)
    store = SQLiteStore(path)
    assert store.drains() == [Drain("metro", "lon", 5.0, "carol", "fibre cut")]
    store.set_bgp_action("lon1", 64500, "prepend-2")  # a table the first release did not have
    store.close()
    application_id, version = _header(path)
    assert application_id != 0 and version >= 1
    again = SQLiteStore(path)
    assert [d.code for d in again.drains()] == ["lon"] and again.bgp_actions() == [("lon1", 64500, "prepend-2")]
    again.close()


def test_reset_moves_the_old_file_aside_and_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    path.write_bytes(b"")
    store = SQLiteStore(path, reset=True)
    assert store.drains() == [] and store.moved_aside is not None
    assert store.moved_aside.name.startswith("edgeplane.db.broken-") and store.moved_aside.read_bytes() == b""
    store.add_drain(Drain("pop", "ams1", 1.0, "bob"))
    store.close()
    second = SQLiteStore(path, reset=True)  # a sound store is moved aside too, and within the same second
    assert second.drains() == [] and second.moved_aside not in (None, store.moved_aside)
    second.close()
    assert second.moved_aside is not None
    kept = SQLiteStore(second.moved_aside)  # the copy set aside still opens
    assert [d.code for d in kept.drains()] == ["ams1"]
    kept.close()


def test_a_store_removed_by_hand_with_its_log_left_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    path.with_name("edgeplane.db-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(28))
    with pytest.raises(ConfigError, match=r"is missing but its write-ahead log edgeplane.db-wal is there"):
        SQLiteStore(path)
    assert not path.exists()


@pytest.mark.parametrize(
    ("table", "row"),
    [
        ("units", ("zzz-u9", "{not json")),
        ("placement", (1, '[["m", "p"]]')),
        ("keys", None),
        ("reports", ("peering-candidates", 1.0, "[1, 2]")),
    ],
)
def test_a_record_that_cannot_be_read_refuses_the_store_naming_it(
    tmp_path: Path, table: str, row: tuple[object, ...] | None
) -> None:
    path = tmp_path / "edgeplane.db"
    SQLiteStore(path).close()
    db = sqlite3.connect(path)
    if row is None:  # a key whose model list was cut short
        db.execute("INSERT INTO keys VALUES ('key_1', 'h', 'acme', NULL, NULL, NULL, NULL, '[\"a\"', 1.0, NULL)")
    else:
        db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(row))})", row)
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match=f"the store {path} holds a record that cannot be read"):
        SQLiteStore(path)


def test_a_store_of_schema_1_gains_the_fabric_table_and_keeps_what_it_held(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    old = sqlite3.connect(path)
    for name, sql in _TABLES.items():
        if name not in ("fabric", "reports"):  # schema 1: before the fabric's transfers were kept
            old.execute(sql)
    old.execute("INSERT INTO drains VALUES ('metro', 'nyc', 1.0, 'alice', 'kept')")
    old.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    store = SQLiteStore(path)
    assert [d.code for d in store.drains()] == ["nyc"] and store.transfers() == []
    store.put_transfer("model", {"origin": "nyc1", "targets": ["iad1"]})
    store.put_transfer("model", {"origin": "iad1", "targets": []})
    assert store.transfers() == [{"origin": "iad1", "targets": []}]
    store.close()
    assert _header(path) == (APPLICATION_ID, SCHEMA_VERSION) and SCHEMA_VERSION >= 2


def test_a_report_is_kept_whole_per_name_and_replaced(store: Store) -> None:
    assert store.report("peering-candidates") is None
    first = {"metros": [{"code": "nyc", "candidates": [{"asn": 64510, "name": "<b>x</b>"}]}], "bin_seconds": 300}
    store.put_report("peering-candidates", StoredReport(10.5, first))
    store.put_report("other", StoredReport(11.0, {"n": 1}))
    assert store.report("peering-candidates") == StoredReport(10.5, first)
    store.put_report("peering-candidates", StoredReport(12.0, {"metros": []}))
    assert store.report("peering-candidates") == StoredReport(12.0, {"metros": []})
    assert store.report("other") == StoredReport(11.0, {"n": 1})


def test_a_store_of_schema_2_gains_the_reports_table_and_keeps_what_it_held(tmp_path: Path) -> None:
    path = tmp_path / "edgeplane.db"
    old = sqlite3.connect(path)
    for name, sql in _TABLES.items():
        if name != "reports":  # schema 2: before reports were kept
            old.execute(sql)
    old.execute("INSERT INTO fabric VALUES ('model', '{\"origin\": \"nyc1\"}')")
    old.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    old.execute("PRAGMA user_version = 2")
    old.commit()
    old.close()
    store = SQLiteStore(path)
    assert store.transfers() == [{"origin": "nyc1"}] and store.report("peering-candidates") is None
    store.put_report("peering-candidates", StoredReport(1.0, {"metros": []}))
    store.close()
    assert _header(path) == (APPLICATION_ID, SCHEMA_VERSION) and SCHEMA_VERSION >= 3
    again = SQLiteStore(path)
    assert again.report("peering-candidates") == StoredReport(1.0, {"metros": []})
    again.close()
