"""The fabric end to end on the default fleet: `edgeplane up` with its links held to a scaled capacity, objects
pushed with `edgeplane fabric push`, checked on every site's disk; a relaying site killed mid-transfer."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._time import wait_for
from tests.conftest import RunningFleet, start_fleet, stop_fleet

pytestmark = pytest.mark.slow

LINK_SCALE = 0.0004  # 400 Gbit/s runs at 20 MB/s: a 200 MB object takes ten seconds per link
POPS = ["ams1", "dfw1", "fra1", "iad1", "lon1", "nyc1", "nyc2", "ord1", "sea1", "sjc1"]


@pytest.fixture(scope="module")
def fabric_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    tmp = tmp_path_factory.mktemp("fabric-fleet")
    argv = [sys.executable, "-m", "edgeplane", "up", "--time-scale", "0.05", "--link-scale", str(LINK_SCALE)]
    running = start_fleet(argv, tmp, fleet_path=None, backend="emulator")
    running.extra_env["DATA_DIR"] = str(tmp / "data")
    yield running
    stop_fleet(running)


def _object(path: Path, size: int) -> str:
    """A file of random bytes, and its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(size // (1 << 20)):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def _on_disk(fleet: RunningFleet, pop: str, sha: str, name: str) -> str:
    path = Path(fleet.extra_env["DATA_DIR"]) / "sites" / pop / "fabric" / "objects" / sha / "data" / name
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _status(fleet: RunningFleet, name: str) -> dict[str, Any]:
    answer = json.loads(fleet.cli("fabric", "status", name, "--json").stdout)
    assert [row["name"] for row in answer["objects"]] == [name]
    return dict(answer["objects"][0])


def test_push_to_every_site_sends_one_copy_from_the_origin(fabric_fleet: RunningFleet, tmp_path: Path) -> None:
    size = 200 * (1 << 20)
    source = tmp_path / "model.gguf"
    sha = _object(source, size)
    args = ["fabric", "push", str(source), "--name", "model-200m", "--from", "nyc1", "--chunk-bytes", str(1 << 20)]
    done = fabric_fleet.cli(*args, "--json", timeout=300)
    result = json.loads(done.stdout)
    assert result["sha256"] == sha and result["size_bytes"] == size
    assert sorted(site["pop"] for site in result["sites"]) == POPS
    assert all(site["complete"] and site["sha256"] == sha for site in result["sites"]), result["sites"]
    assert result["origin_egress_bytes"] <= 1.05 * size  # the origin sends one copy; the sites relay the rest
    assert result["seconds"] > 0 and result["lower_bound_seconds"] > 0
    relayed = [site for site in result["sites"] if site["from"] not in (None, "nyc1")]
    assert len(relayed) == len(POPS) - 2  # all but the origin and its one child got it from another site
    for pop in POPS:  # what each site holds on its disk, read here, not as the site says
        assert _on_disk(fabric_fleet, pop, sha, "model.gguf") == sha
    status = _status(fabric_fleet, "model-200m")
    assert sorted(s["pop"] for s in status["sites"] if s["complete"] and s["sha256"] == sha) == POPS


def test_a_relay_killed_mid_transfer_is_planned_around(fabric_fleet: RunningFleet, tmp_path: Path) -> None:
    size = 100 * (1 << 20)
    source = tmp_path / "checkpoint.bin"
    sha = _object(source, size)
    args = ["fabric", "push", str(source), "--name", "ckpt", "--from", "nyc1", "--chunk-bytes", str(1 << 20)]
    started = json.loads(fabric_fleet.cli(*args, "--no-wait", "--json", timeout=120).stdout)
    parents: dict[str, str] = started["plan"]["parents"]
    relay = next(pop for pop in sorted(parents) if parents[pop] != "nyc1" and pop in parents.values())
    behind = sorted(pop for pop, parent in parents.items() if parent == relay)

    def relay_receiving() -> bool:
        held = {s["pop"]: s for s in _status(fabric_fleet, "ckpt")["sites"]}
        return relay in held and 0 < held[relay]["bytes_held"] < size

    wait_for(f"{relay} receiving", relay_receiving, timeout_seconds=60)
    agents = json.loads(fabric_fleet.cli("status", "--json").stdout)
    pid = next(site["pid"] for site in agents["pops"] if site["code"] == relay)
    os.kill(pid, signal.SIGKILL)

    def others_complete() -> bool:
        sites = {s["pop"]: s for s in _status(fabric_fleet, "ckpt")["sites"]}
        return all(sites.get(pop, {}).get("sha256") == sha for pop in POPS if pop != relay)

    wait_for("every other site complete", others_complete, timeout_seconds=120)
    for pop in behind:
        assert _on_disk(fabric_fleet, pop, sha, "checkpoint.bin") == sha


def test_an_object_removed_is_gone_from_every_site_and_can_be_pushed_again_cut_otherwise(
    fabric_fleet: RunningFleet, tmp_path: Path
) -> None:
    source = tmp_path / "small.bin"
    sha = _object(source, 4 * (1 << 20))
    push = ["fabric", "push", str(source), "--name", "small", "--from", "nyc1", "--to", "iad1,lon1", "--json"]
    fabric_fleet.cli(*push, "--chunk-bytes", str(1 << 20))
    refused = fabric_fleet.cli(*push, "--chunk-bytes", str(1 << 19), check=False)  # other chunks, same bytes
    assert refused.returncode == 1 and "remove it first" in refused.stderr

    removed = json.loads(fabric_fleet.cli("fabric", "rm", "small", "--json").stdout)
    assert {"iad1", "lon1", "nyc1"} <= set(removed["removed_from"]) and removed["failed"] == {}  # and relays
    data = Path(fabric_fleet.extra_env["DATA_DIR"]) / "sites"
    assert not [pop for pop in POPS if (data / pop / "fabric" / "objects" / sha).exists()]

    def gone() -> bool:  # as the sites' next reports say
        status = fabric_fleet.cli("fabric", "status", "small", check=False)
        return status.returncode == 1 and "no site holds an object named 'small'" in status.stderr

    wait_for("small gone from fabric status", gone, timeout_seconds=30)

    again = json.loads(fabric_fleet.cli(*push, "--chunk-bytes", str(1 << 19)).stdout)
    assert all(site["sha256"] == sha for site in again["sites"])
