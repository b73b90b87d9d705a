"""One suite every store passes (SQLite on disk and in memory now; PostgreSQL later)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeplane.control import AuditRecord, Drain, SQLiteStore, Store
from edgeplane.units import UnitRecord, UnitState, move


@pytest.fixture(params=["sqlite-file", "sqlite-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
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
