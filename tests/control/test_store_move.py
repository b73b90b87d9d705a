"""Moving a running fleet from its SQLite store to PostgreSQL: `store copy` while `up` runs, then `up --store
postgresql://...` on the copy serves the same drains, keys, units, placement and audit log."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SMALL_FLEET, RunningFleet, start_fleet, stop_fleet

pytestmark = pytest.mark.slow


def _get(fleet: RunningFleet, path: str) -> Any:
    with urllib.request.urlopen(fleet.control_url + path, timeout=10) as answer:
        return json.loads(answer.read())


def _post(fleet: RunningFleet, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        fleet.control_url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def _state(fleet: RunningFleet) -> dict[str, Any]:
    """What must survive the move, as the control plane's API shows it."""
    return {
        "drains": _get(fleet, "/api/drains")["drains"],
        "keys": _get(fleet, "/api/keys"),
        "units": _get(fleet, "/api/units"),
        "placement": _get(fleet, "/api/placement")["placement"],
        "audit": _get(fleet, "/api/audit?limit=500"),
    }


def test_up_on_a_postgresql_copy_of_a_running_fleets_store_has_the_same_state(
    tmp_path: Path, postgres_url: str
) -> None:
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET)]
    for place in ("sqlite", "postgresql"):
        (tmp_path / place).mkdir()
    first = start_fleet(argv, tmp_path / "sqlite", fleet_path=SMALL_FLEET, backend="emulator")
    try:
        first.cli("drain", "pop", "ams1", "--force")
        first.cli("keys", "create", "--tenant", "acme", "--rpm", "60", "--json")
        revoked = json.loads(first.cli("keys", "create", "--tenant", "gone", "--json").stdout)["id"]
        first.cli("keys", "revoke", revoked)
        first.cli("unit", "order", "nyc1", "--json")
        placement = _get(first, "/api/placement")["placement"]
        _post(first, "/api/placement", {"placement": placement[:-1], "force": True})
        before = _state(first)
        copied = first.cli(
            "store", "copy", "--from", f"sqlite://{tmp_path / 'sqlite' / 'data' / 'edgeplane.db'}",
            "--to", postgres_url, "--json",
        )  # fmt: skip
    finally:
        stop_fleet(first)
    counts = json.loads(copied.stdout)["copied"]
    assert counts["drains"] == 1 and counts["keys"] == 2 and counts["units"] >= 1 and counts["audit"] >= 5
    second = start_fleet(
        [*argv, "--store", postgres_url], tmp_path / "postgresql", fleet_path=SMALL_FLEET, backend="emulator"
    )
    try:
        after = _state(second)
    finally:
        stop_fleet(second)
    assert not (tmp_path / "postgresql" / "data" / "edgeplane.db").exists()
    assert after == before
