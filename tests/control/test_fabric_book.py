"""The control plane's fabric book without sockets: transfers kept in the store outlive the control plane, and a
drain's receivers are cold until they report the weights complete (virtual time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeplane.control import FleetState, SQLiteStore
from edgeplane.control._fabric import FabricBook
from edgeplane.fabric import build_manifest
from edgeplane.fleet import load_fleet
from tests._time import VirtualClock
from tests.conftest import SMALL_FLEET


def _report(state: FleetState, pop: str, fabric: list[dict[str, object]] | None = None, pid: int = 1) -> None:
    fleet = state.fleet
    models = {m: {"capacity": 4} for m in fleet.models_at(pop)}
    body = {"url": f"http://127.0.0.1:9/{pop}", "pid": pid, "backend": "emulator", "models": models}
    state.report(pop, {**body, "fabric": fabric or []})


def _held(manifest: object, complete: bool, bytes_held: int) -> dict[str, object]:
    m = manifest
    return {
        "name": m.name, "sha256": m.sha256, "size_bytes": m.size_bytes, "bytes_held": bytes_held,  # type: ignore[attr-defined]
        "complete": complete, "verified_sha256": m.sha256 if complete else None,  # type: ignore[attr-defined]
    }  # fmt: skip


def test_a_transfer_outlives_the_control_plane_and_its_weights_decide_who_is_cold(tmp_path: Path) -> None:
    clock = VirtualClock()
    weights = tmp_path / "tiny.bin"
    weights.write_bytes(b"w" * 10_000)
    manifest = build_manifest(weights, "tiny-llama", 4096)
    store = SQLiteStore(tmp_path / "edgeplane.db")
    state = FleetState(load_fleet(SMALL_FLEET), store, clock=clock, wall_clock=clock)
    for pop in ("nyc1", "iad1", "ord1", "ams1"):
        _report(state, pop)
    book = FabricBook(state)
    book.create(manifest, "nyc1", ["nyc1"])
    _report(state, "nyc1", [_held(manifest, True, manifest.size_bytes)])
    book.start("tiny-llama", origin_complete=True)
    assert book.weights_for("iad1") == {"tiny-llama": manifest.sha256}
    moved = book.heard("iad1")  # placed there: a new target, planned from nyc1
    assert moved == {"tiny-llama": {"iad1": [{"pop": "nyc1", "url": "http://127.0.0.1:9/nyc1"}]}}
    assert "iad1 holds 0% of the weights of tiny-llama" in (book.cold("iad1", "tiny-llama") or "")
    assert book.cold("nyc1", "tiny-llama") is None and book.cold("iad1", "tiny-chat") is None

    again = FabricBook(FleetState(load_fleet(SMALL_FLEET), store, clock=clock, wall_clock=clock))
    kept = again.transfers["tiny-llama"]
    assert (kept.manifest, kept.origin, kept.started_at) == (manifest, "nyc1", book.transfers["tiny-llama"].started_at)
    assert "iad1" in kept.targets and kept.plan is None
    _report(again.state, "nyc1", [_held(manifest, True, manifest.size_bytes)])
    _report(again.state, "iad1", [_held(manifest, False, 4096)])
    assert again.heard("iad1")["tiny-llama"]["iad1"][0]["pop"] == "nyc1"  # planned again from what sites hold
    assert "41%" in (again.cold("iad1", "tiny-llama") or "")  # 4,096 of 10,000 bytes
    _report(again.state, "iad1", [_held(manifest, True, manifest.size_bytes)])
    assert again.cold("iad1", "tiny-llama") is None


def test_a_removed_transfer_is_forgotten_here_and_in_the_store(tmp_path: Path) -> None:
    clock = VirtualClock()
    weights = tmp_path / "tiny.bin"
    weights.write_bytes(b"w" * 5000)
    manifest = build_manifest(weights, "tiny-llama", 4096)
    store = SQLiteStore(tmp_path / "edgeplane.db")
    state = FleetState(load_fleet(SMALL_FLEET), store, clock=clock, wall_clock=clock)
    _report(state, "nyc1", [_held(manifest, True, manifest.size_bytes)])
    book = FabricBook(state)
    book.create(manifest, "nyc1", ["nyc1", "iad1"])
    book.create(manifest.model_copy(update={"name": "copy"}), "nyc1", ["nyc1"])
    assert book.remove("tiny-llama")[1] == []  # the same bytes stay, named copy
    assert book.remove("copy")[1] == ["nyc1"]
    assert book.transfers == {} and store.transfers() == [] and book.weights_for("nyc1") == {}


def test_a_drain_whose_only_receiver_still_waits_for_the_weights_is_refused(tmp_path: Path) -> None:
    """tiny-chat moves from ams1 to iad1, whose weights are on their way: draining nyc1 would leave tiny-chat with
    no site serving it, and the site that is to serve it is cold."""
    from edgeplane.control import DrainRefused

    clock = VirtualClock()
    weights = tmp_path / "tiny.bin"
    weights.write_bytes(b"w" * 10_000)
    manifest = build_manifest(weights, "tiny-chat", 4096)
    state = FleetState(load_fleet(SMALL_FLEET), SQLiteStore(":memory:"), clock=clock, wall_clock=clock)
    book = FabricBook(state)
    state.drains.cold = book.cold
    entries = [("tiny-llama", "nyc1", 1), ("tiny-llama", "iad1", 1), ("tiny-chat", "nyc1", 1), ("tiny-chat", "iad1", 1)]
    state.apply_placement(entries, by="test", force=True)
    for pop in ("nyc1", "iad1", "ord1", "ams1"):
        served = {"nyc1": ["tiny-llama", "tiny-chat"], "iad1": ["tiny-llama"]}.get(pop, [])  # iad1 waits
        body = {"url": f"http://127.0.0.1:9/{pop}", "pid": 1, "backend": "emulator"}
        state.report(pop, {**body, "models": {m: {"capacity": 4} for m in served}})
    state.refresh()
    book.create(manifest, "nyc1", ["nyc1"])
    with pytest.raises(DrainRefused) as refused:
        state.drains.drain("pop", "nyc1", by="test")
    assert any("tiny-chat of nyc1 would have no site serving it: iad1 holds 0%" in r for r in refused.value.reasons)
    assert state.drains.drain("pop", "nyc1", by="test", force=True)
