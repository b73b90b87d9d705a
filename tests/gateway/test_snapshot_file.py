"""The snapshot a gateway keeps on disk, read back when no control plane replica answers: a good one is served
from, anything else (cut short, junk, too large, of the wrong shape) is refused once, without a crash."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane.fleet import load_default_fleet
from edgeplane.gateway import SnapshotWatcher
from edgeplane.gateway._snapshots import MAX_SNAPSHOT_FILE_BYTES
from edgeplane.routing import Snapshot

NOWHERE = "http://127.0.0.1:9"


def _good(saved_at: float) -> bytes:
    fleet = load_default_fleet()
    snapshot = Snapshot(7, saved_at, "digest", {}, 3)
    return json.dumps(
        {"saved_at": saved_at, "fleet": fleet.model_dump(mode="json"), "snapshot": snapshot.to_json(), "keys": {}}
    ).encode()


def test_a_good_file_is_served_from_with_its_age(tmp_path: Path) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(_good(time.time() - 30))
    watcher = SnapshotWatcher(NOWHERE, snapshot_file=path)
    assert watcher.load_saved()
    assert watcher.source == "disk" and watcher.state is not None and watcher.state.snapshot.version == 7
    age = watcher.age_seconds()
    assert age is not None and 29 <= age <= 60


def test_a_bad_file_is_read_and_refused_once_until_it_changes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "snapshot.json"
    path.write_bytes(_good(time.time())[:-10])  # cut short
    watcher = SnapshotWatcher(NOWHERE, snapshot_file=path)
    with caplog.at_level(logging.WARNING, logger="edgeplane.gateway"):
        assert not watcher.load_saved()
        assert not watcher.load_saved()
    assert sum("cannot be used" in r.message for r in caplog.records) == 1
    path.write_bytes(_good(time.time()))  # mended: read again
    assert watcher.load_saved() and watcher.source == "disk"


def test_a_file_too_large_to_be_a_snapshot_is_not_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "snapshot.json"
    with path.open("wb") as sparse:
        sparse.truncate(MAX_SNAPSHOT_FILE_BYTES + 1)
    watcher = SnapshotWatcher(NOWHERE, snapshot_file=path)
    with caplog.at_level(logging.WARNING, logger="edgeplane.gateway"):
        assert not watcher.load_saved() and not watcher.load_saved()
    assert sum("too large" in r.message for r in caplog.records) == 1


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries(
            {"saved_at": st.floats(allow_nan=True), "fleet": st.just({}), "snapshot": st.just({}), "keys": st.just([])}
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_any_file_content_is_served_or_refused_never_a_crash(content: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "snapshot.json"
        path.write_bytes(content)
        watcher = SnapshotWatcher(NOWHERE, snapshot_file=path)
        assert watcher.load_saved() in (True, False)
