"""The control plane's store on PostgreSQL (a real cluster the tests start), `store check`, `store copy`, and
`control run --store postgresql://...` as a real process."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane._errors import ConfigError
from edgeplane.control import AuditRecord, Drain, SQLiteStore, Store
from edgeplane.control._postgres import PostgresStore, inspect, redacted
from edgeplane.control._store import (
    SCHEMA_VERSION,
    Deposed,
    Replica,
    StoredKey,
    StoredReport,
    StoreError,
    StoreRefused,
)
from edgeplane.control._stores import StoreNotEmpty, copy, counts, parse_store_url
from edgeplane.tenants import KeyPolicy, LeaseBook
from edgeplane.units import UnitRecord, UnitState
from tests._postgres import Cluster
from tests.conftest import ROOT, free_port
from tests.control.test_store_integrity import Control, _post

EDGEPLANE = [sys.executable, "-m", "edgeplane"]


def edgeplane(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGEPLANE, *args], cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def fill(store: Store) -> None:
    """One record of every kind, some of several, in an order that matters."""
    store.add_drain(Drain("metro", "lon", 10.5, "alice", "maintenance"))
    store.add_drain(Drain("pop", "ams1", 11.0, "bob"))
    store.add_key(StoredKey("h1", KeyPolicy("k1", "acme", "eu", None, 60, 10_000, frozenset({"m1"})), 1.0))
    store.add_key(StoredKey("h2", KeyPolicy("k2", "beta", None, None, None, None, None), 2.0))
    store.revoke_key("k2", 3.0)
    for n in range(5):
        store.audit(AuditRecord(100.0 + n, "carol", "drain", f"pop p{n}", "ok", {"n": n, "why": "é ✓"}))
    store.put_unit(UnitRecord("fra1-u1", "fra1", UnitState.IN_SERVICE, 5.0, "alice", "order", due=9.0))
    store.set_placement([("llama", "fra1", 2), ("qwen", "lon1", 1)])
    store.set_bgp_action("lon1", 64499, "prepend-2")
    store.set_bgp_action("lon1", 64500, "no-export")
    store.put_transfer("weights", {"manifest": {"name": "weights"}, "origin": "nyc1", "targets": ["lon1"]})
    store.put_report("peering-candidates", StoredReport(42.0, {"metros": [{"code": "lon"}]}))


def held(store: Store) -> dict[str, Any]:
    return {
        "drains": store.drains(),
        "keys": store.api_keys(),
        "audit": store.audit_log(limit=1000),
        "units": [u.to_json() for u in store.units()],
        "placement": store.placement(),
        "bgp": store.bgp_actions(),
        "transfers": store.named_transfers(),
        "reports": {n: store.report(n) for n in store.report_names()},
    }


def test_everything_kept_survives_a_new_connection_and_replicas_see_each_others_writes(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    fill(first)
    second = PostgresStore(postgres_url)  # a replica on the same database, or the same one restarted
    assert held(second) == held(first)
    assert counts(second) == {
        "drains": 2, "keys": 2, "audit": 5, "units": 1, "placement": 2, "bgp_actions": 2, "transfers": 1,
        "reports": 1,
    }  # fmt: skip
    assert second.add_drain(Drain("metro", "nyc", 20.0, "dave"))
    assert not first.add_drain(Drain("metro", "nyc", 21.0, "erin"))  # the other replica's drain holds
    assert [d.code for d in first.drains()][-1] == "nyc"
    assert [r.target for r in first.audit_log(limit=2)] == ["pop p4", "pop p3"]
    first.close()
    second.close()


def test_a_dropped_connection_is_opened_again(postgres_cluster: Cluster, postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    with psycopg.connect(postgres_cluster.url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'edgeplane'")
    assert store.add_drain(Drain("pop", "lon1", 1.0, "alice"))
    assert [d.code for d in store.drains()] == ["lon1"]
    store.close()


def test_a_database_of_another_application_is_refused_naming_its_tables(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreRefused, match=r"is not an edgeplane store .*invoices"):
        PostgresStore(postgres_url)


def test_a_store_of_a_newer_schema_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE edgeplane_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreRefused, match=r"newer edgeplane \(schema 99"):
        PostgresStore(postgres_url)


def test_a_record_that_cannot_be_read_refuses_the_store(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("INSERT INTO placement (id, entries) VALUES (1, 'not json')")
    with pytest.raises(StoreRefused, match="holds a record that cannot be read"):
        PostgresStore(postgres_url)


def test_an_unreachable_server_is_refused_without_the_password() -> None:
    url = f"postgresql://edge:s3cret@127.0.0.1:{free_port()}/fleet"
    with pytest.raises(StoreRefused, match="cannot be reached") as refused:
        PostgresStore(url, timeout_seconds=2)
    assert "s3cret" not in str(refused.value) and "edge:***@127.0.0.1" in str(refused.value)
    assert redacted("postgresql://u@h/db") == "postgresql://u@h/db"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_store_argument_is_a_store_url_or_a_clear_error(text: str) -> None:
    try:
        url = parse_store_url(text)
    except ConfigError as error:
        assert "--store" in str(error)
        return
    assert url.kind in ("sqlite", "postgresql")
    assert url.shown  # printable, whatever was given


def test_store_urls() -> None:
    assert parse_store_url("sqlite:///var/lib/ep/edgeplane.db").target == "/var/lib/ep/edgeplane.db"
    assert parse_store_url("sqlite:////var/x.db").target == "/var/x.db"
    assert parse_store_url("state/edgeplane.db").target == "state/edgeplane.db"
    assert parse_store_url("postgres://u@h:5/d").kind == "postgresql"
    for bad in ("sqlite://relative.db", "mysql://h/d", "", "h:5432"):
        with pytest.raises(ConfigError):
            parse_store_url(bad)


def test_copy_moves_every_record_and_refuses_a_target_that_holds_some(tmp_path: Path, postgres_url: str) -> None:
    source = SQLiteStore(tmp_path / "edgeplane.db")
    fill(source)
    target = PostgresStore(postgres_url)
    copied = copy(source, target)
    assert copied == counts(source)
    assert held(target) == held(source)
    with pytest.raises(StoreNotEmpty, match=r"already holds records .*2 drains"):
        copy(source, target)
    assert held(target) == held(source)  # nothing added twice
    source.close()
    target.close()


def test_store_check_and_copy_from_the_command_line(tmp_path: Path, postgres_url: str) -> None:
    sqlite_url = f"sqlite://{tmp_path / 'edgeplane.db'}"
    empty = json.loads(edgeplane("store", "check", sqlite_url, "--json").stdout)
    assert empty["state"] == "empty" and empty["schema_version"] is None and empty["records"] is None
    store = SQLiteStore(tmp_path / "edgeplane.db")
    fill(store)
    store.close()
    done = edgeplane("store", "check", sqlite_url, "--json")
    found = json.loads(done.stdout)
    assert done.returncode == 0 and found["state"] == "current" and found["schema_version"] == SCHEMA_VERSION
    assert found["records"]["audit"] == 5 and found["kind"] == "sqlite"

    pg_empty = json.loads(edgeplane("store", "check", postgres_url, "--json").stdout)
    assert pg_empty["state"] == "empty"
    done = edgeplane("store", "copy", "--from", sqlite_url, "--to", postgres_url, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["copied"] == found["records"]
    after = json.loads(edgeplane("store", "check", postgres_url, "--json").stdout)
    assert after["kind"] == "postgresql" and after["state"] == "current" and after["records"] == found["records"]

    again = edgeplane("store", "copy", "--from", sqlite_url, "--to", postgres_url)
    assert again.returncode == 1 and "already holds records" in again.stderr and "Traceback" not in again.stderr

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as db:
        db.execute("PRAGMA application_id = 7")
        db.execute("CREATE TABLE t (x)")
    done = edgeplane("store", "check", f"sqlite://{foreign}", "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["state"] == "foreign"
    for bad in ("mysql://h/db", f"postgresql://nobody@127.0.0.1:{free_port()}/x"):
        done = edgeplane("store", "check", bad)
        assert done.returncode == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_control_run_keeps_its_state_in_postgresql_across_a_restart(tmp_path: Path, postgres_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    first = Control(data, "--store", postgres_url)
    try:
        _post(first.url + "/api/drains", {"kind": "pop", "code": "ams1", "force": True})
        assert first.drains() == [("pop", "ams1")]
    finally:
        first.stop()
    assert not (data / "edgeplane.db").exists()  # nothing in the data directory's SQLite file
    again = Control(data, "--store", postgres_url)
    try:
        assert again.drains() == [("pop", "ams1")]
    finally:
        again.stop()
    found = json.loads(edgeplane("store", "check", postgres_url, "--json").stdout)
    assert found["records"]["drains"] == 1 and found["records"]["audit"] >= 1


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:s3cretPW@[::1:25432/a",
        "postgresql://postgres:s3cretPW@127.0.0.1:{port}/a?password=hunter2X",
        "postgresql://postgres:s3cret@PW@127.0.0.1:{port}/a",
        "postgresql://postgres:s3cretPW@127.0.0.1:99999/a",
        "postgresql://postgres:s3cretPW@127.0.0.1:abc/a",
        "postgresql://u@127.0.0.1:{port}/a?sslmode=require&password='hunter2X'",
    ],
)
def test_a_password_is_never_printed_whatever_the_url(url: str) -> None:
    url = url.replace("{port}", str(free_port()))
    done = edgeplane("store", "check", url, "--json")
    said = done.stdout + done.stderr
    assert done.returncode == 1 and done.stderr.startswith("error: "), said
    assert "Traceback" not in said and "s3cret" not in said and "hunter2X" not in said and "PW@" not in said, said
    assert "***" in redacted(url)


def test_a_stalled_server_fails_the_call_within_the_timeout_and_the_store_recovers(
    postgres_cluster: Cluster, postgres_url: str
) -> None:
    store = PostgresStore(postgres_url, timeout_seconds=1.0)
    (pid,) = store._rows("SELECT pg_backend_pid()")[0]  # the server process of the store's connection
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="did not answer within 1 s"):
            store.add_drain(Drain("pop", "lon1", 1.0, "alice"))
        assert time.monotonic() - started < 10  # not forever: the watchdog cut it
    finally:
        os.kill(pid, signal.SIGCONT)
    assert store.add_drain(Drain("pop", "ams1", 2.0, "bob"))  # on a new connection
    assert "ams1" in [d.code for d in store.drains()]
    store.close()


def test_check_says_what_a_control_plane_would_do(tmp_path: Path, postgres_cluster: Cluster) -> None:
    cases = []
    old = postgres_cluster.database()
    PostgresStore(old).close()
    with psycopg.connect(old, autocommit=True) as db:
        db.execute("UPDATE edgeplane_meta SET value = '2' WHERE key = 'schema_version'")
    cases.append((old, "damaged"))
    garbled = postgres_cluster.database()
    PostgresStore(garbled).close()
    with psycopg.connect(garbled, autocommit=True) as db:
        db.execute("UPDATE edgeplane_meta SET value = 'abc' WHERE key = 'schema_version'")
    cases.append((garbled, "damaged"))
    no_meta = postgres_cluster.database()
    PostgresStore(no_meta).close()
    with psycopg.connect(no_meta, autocommit=True) as db:
        db.execute("DROP TABLE edgeplane_meta")
    cases.append((no_meta, "damaged"))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    cases.append((f"sqlite://{foreign}", "foreign"))
    unversioned = tmp_path / "v0.db"
    SQLiteStore(unversioned).close()
    with sqlite3.connect(unversioned) as db:
        db.execute("PRAGMA user_version = 0")
    cases.append((f"sqlite://{unversioned}", "damaged"))
    (tmp_path / "zero.db").write_bytes(b"")
    cases.append((f"sqlite://{tmp_path / 'zero.db'}", "damaged"))
    for url, state in cases:
        done = edgeplane("store", "check", url, "--json")
        assert done.returncode == 1 and json.loads(done.stdout)["state"] == state, (url, done.stdout, done.stderr)
        opened = edgeplane("control", "run", "--data-dir", str(tmp_path / "d"), "--store", url, "--port", "0")
        assert opened.returncode != 0 and "error: " in opened.stderr and "Traceback" not in opened.stderr, url


def test_copy_never_makes_a_store_of_its_source(postgres_cluster: Cluster, tmp_path: Path) -> None:
    empty = postgres_cluster.database()
    done = edgeplane("store", "copy", "--from", empty, "--to", f"sqlite://{tmp_path / 'to.db'}")
    assert done.returncode == 1 and "holds no store" in done.stderr, done.stderr
    with psycopg.connect(empty, autocommit=True) as db:
        assert inspect(db) == (set(), {})  # nothing was made there


def test_changes_move_the_revision_and_reach_the_other_replicas_watch(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    first.replica = "replica-a"
    heard: list[str] = []
    arrived = threading.Event()

    def on_change(payload: str) -> None:
        heard.append(payload)
        arrived.set()

    stop = second.watch(on_change)
    try:
        time.sleep(0.3)  # listening
        before = second.revision()
        first.audit(AuditRecord(1.0, "alice", "look", "fleet", "ok", {}))  # the audit log is not the fleet's state
        assert first.add_drain(Drain("pop", "lon1", 1.0, "alice"))
        assert arrived.wait(5), "no notification"
        assert second.revision() == before + 1
        revision, replica, kind = heard[0].split(" ")
        assert (int(revision), replica, kind) == (before + 1, "replica-a", "drains")
        assert not first.add_drain(Drain("pop", "lon1", 2.0, "bob"))  # no change: no new revision
        first.set_bgp_action("lon1", 64499, "prepend-1")
        assert second.revision() == before + 2
    finally:
        stop()
    first.close()
    second.close()


def test_one_leader_at_a_time_and_a_deposed_leaders_writes_are_refused(postgres_url: str) -> None:
    a, b = PostgresStore(postgres_url), PostgresStore(postgres_url)
    term = a.elect("a", 0, 0.6)
    assert term == 1 and b.elect("b", 0, 0.6) is None
    assert a.elect("a", term, 0.6) == term  # renewed, same term
    with a.fenced("a", term):
        a.add_drain(Drain("pop", "ams1", 1.0, "leader a"))
    time.sleep(0.8)  # a is paused past its lease
    taken = b.elect("b", 0, 5.0)
    assert taken == term + 1
    with pytest.raises(Deposed, match=f"term {term} is over"), a.fenced("a", term):
        a.add_drain(Drain("pop", "lon1", 2.0, "leader a, deposed"))
    assert [d.code for d in b.drains()] == ["ams1"]  # the refused write left nothing
    assert a.elect("a", term, 5.0) is None  # and a cannot take it back while b's lease runs
    with b.fenced("b", taken):
        b.add_drain(Drain("pop", "nyc1", 3.0, "leader b"))
    b.heartbeat(Replica("b", "http://127.0.0.1:1", 42, True, taken, b.revision(), 0.0))
    a.heartbeat(Replica("a", "http://127.0.0.1:2", 43, False, term, a.revision(), 0.0))
    assert [(r.id, r.leader, r.pid) for r in a.replicas(5.0)] == [("b", True, 42), ("a", False, 43)]
    b.put_agent_report("lon1", '{"load": 0.5}', 100.0, "b")
    assert a.agent_reports(99.0) == [("lon1", '{"load": 0.5}', 100.0, "b")] and a.agent_reports(100.0) == []
    a.close()
    b.close()


def test_leases_from_two_replicas_at_once_never_exceed_a_keys_budget(postgres_url: str) -> None:
    """Two control planes leasing one key's budget at the same time, as replicas do: together they grant it
    once, not once each."""
    stores = [PostgresStore(postgres_url) for _ in range(2)]
    books = [LeaseBook(60.0, shared=store.spend) for store in stores]
    granted: list[int] = []
    lock = threading.Lock()

    def lease(book: LeaseBook) -> None:
        for _ in range(30):
            grant = book.lease("key_1", 100, None, 1_000_020.0)  # one window: a budget of 100 requests
            with lock:
                granted.append(grant.requests)

    threads = [threading.Thread(target=lease, args=(book,)) for book in books for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(granted) == 100 and granted.count(0) > 0  # all of it, then nothing more
    assert books[0].lease("key_1", 100, None, 1_000_080.0).requests == 10  # the next window starts again
    for store in stores:
        store.close()
