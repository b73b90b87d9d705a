"""Alarms on a running fleet (`edgeplane up`, one Redfish emulator per unit): a coolant fault injected into a
unit's emulator drains that unit within the alarm's hold time and its traffic moves to the PoP's other unit
(the official openai SDK shows which answered); with no unit left the PoP is drained and its traffic leaves;
all returns after recovery; the audit log shows both. Bad telemetry marks a unit stale and drains nothing."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from edgeplane.local import get_json
from tests._time import wait_for
from tests.conftest import RunningFleet
from tests.units.test_units_live import answered_by, served_at

pytestmark = pytest.mark.slow


def all_read(fleet: RunningFleet, pop: str) -> bool:
    units = pop_status(fleet, pop)["units"]
    return len(units) == 2 and all(u["reading"] for u in units.values())


def pop_status(fleet: RunningFleet, pop: str) -> dict[str, Any]:
    status = get_json(fleet.control_url + "/api/status")
    return dict(next(p for p in status["pops"] if p["code"] == pop))


def fault(url: str, kind: str | None) -> None:
    path = url + "/redfish/v1/Oem/Edgeplane/Fault"
    if kind is None:
        request = urllib.request.Request(path, method="DELETE")
    else:
        body = json.dumps({"kind": kind}).encode()
        request = urllib.request.Request(path, body, {"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def metrics_of(url: str) -> str:
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def test_a_coolant_fault_drains_the_unit_its_traffic_moves_and_it_returns(emulator_fleet: RunningFleet) -> None:
    fleet = emulator_fleet
    wait_for("lon1's units read", lambda: all_read(fleet, "lon1"))
    units = pop_status(fleet, "lon1")["units"]
    assert len(units) == 2 and all(u["reading"] and u["alarms"] == [] and u["stale"] is None for u in units.values())
    urls = {code: u["redfish"] for code, u in units.items()}
    metrics = metrics_of(pop_status(fleet, "lon1")["url"])
    assert 'edgeplane_unit_coolant_supply_celsius{unit="lon1-u1"}' in metrics
    # An idle PoP answers from its first unit's replicas (the least busy: a health probe in flight on lon1-u1 now
    # and then sends one request to lon1-u2, so this is waited for, not asked once).
    wait_for("an idle lon1 answers from lon1-u1", lambda: answered_by(fleet, "lon") == ("lon1", "lon1-u1"))
    placed = pop_status(fleet, "lon1")["replicas"]
    try:
        fault(urls["lon1-u1"], "coolant")
        took = wait_for("lon1-u1 out", lambda: "lon1-u1" in pop_status(fleet, "lon1")["units_out"])
        assert took < 5  # hold time 10 s x time scale 0.05, plus polls and reports
        half = {model: n // 2 for model, n in placed.items()}
        wait_for("routing on half the replicas", lambda: pop_status(fleet, "lon1")["replicas"] == half)
        status = pop_status(fleet, "lon1")
        assert status["units_out"]["lon1-u1"] == "alarm: coolant-supply"
        assert status["state"] == "serving"  # lon1-u2 still carries lon1's traffic, with half the replicas
        wait_for("lon1-u1's traffic moved to lon1-u2", lambda: answered_by(fleet, "lon") == ("lon1", "lon1-u2"))
        for _ in range(5):
            assert answered_by(fleet, "lon") == ("lon1", "lon1-u2")

        # With its other unit alarmed too, no unit of lon1 carries traffic: lon's traffic leaves lon1.
        fault(urls["lon1-u2"], "coolant")
        wait_for("lon1 drained", lambda: pop_status(fleet, "lon1")["state"] == "drained")
        assert "no unit carries traffic" in pop_status(fleet, "lon1")["reason"]
        wait_for("lon's traffic moved", lambda: served_at(fleet, "lon") != "lon1")
        fault(urls["lon1-u2"], None)
        wait_for("lon1-u2 back", lambda: answered_by(fleet, "lon") == ("lon1", "lon1-u2"), 30)
    finally:
        fault(urls["lon1-u1"], None)
        fault(urls["lon1-u2"], None)
    wait_for("lon1-u1 back", lambda: pop_status(fleet, "lon1")["units_out"] == {})
    wait_for("routing on all replicas", lambda: pop_status(fleet, "lon1")["replicas"] == placed)
    wait_for("lon1-u1's traffic back", lambda: answered_by(fleet, "lon") == ("lon1", "lon1-u1"))
    audit = get_json(fleet.control_url + "/api/audit")["audit"]
    alarms = {(a["target"], a["outcome"]) for a in audit if a["action"] == "unit-alarm"}
    assert {("unit lon1-u1", "raised"), ("unit lon1-u1", "cleared"), ("unit lon1-u2", "raised")} <= alarms
    drains = {(a["target"], a["outcome"]) for a in audit if a["action"] == "alarm-drain"}
    assert {("unit lon1-u1", "ok"), ("unit lon1-u1", "released"), ("unit lon1-u2", "ok")} <= drains


def test_bad_telemetry_marks_the_unit_stale_and_drains_nothing(emulator_fleet: RunningFleet) -> None:
    fleet = emulator_fleet
    wait_for("ams1's units read", lambda: all_read(fleet, "ams1"))
    try:
        for kind in ("malformed", "missing", "silent"):
            injected = json.loads(fleet.cli("unit", "fault", "ams1-u1", kind, "--json").stdout)
            assert injected["fault"] == kind and injected["redfish"].startswith("http://127.0.0.1:")
            wait_for(f"{kind}: stale", lambda: pop_status(fleet, "ams1")["units"]["ams1-u1"]["stale"] is not None)
            status = pop_status(fleet, "ams1")
            assert status["state"] == "serving" and status["units"]["ams1-u1"]["alarms"] == []
            assert status["units"]["ams1-u2"]["stale"] is None
            fleet.cli("unit", "fault", "ams1-u1", "--clear")
            wait_for("fresh again", lambda: pop_status(fleet, "ams1")["units"]["ams1-u1"]["stale"] is None)
    finally:
        fleet.cli("unit", "fault", "ams1-u1", "--clear")
    unknown = fleet.cli("unit", "fault", "ams1-u1", "meteor", check=False)
    assert unknown.returncode == 1 and "coolant" in unknown.stdout + unknown.stderr
    neither = fleet.cli("unit", "fault", "ams1-u1", check=False)
    assert neither.returncode == 2 and "--clear" in neither.stdout + neither.stderr


def test_a_gpu_xid_error_drains_its_unit_and_dcgm_fields_are_exported(emulator_fleet: RunningFleet) -> None:
    fleet = emulator_fleet
    wait_for("ams1's units read", lambda: all_read(fleet, "ams1"))
    unit = pop_status(fleet, "ams1")["units"]["ams1-u2"]
    assert unit["reading"]["gpus"] == 32 and 40 < unit["reading"]["gpu_temp_max_c"] < 80
    assert unit["dcgm"] == [unit["redfish"] + "/metrics"]
    metrics = metrics_of(pop_status(fleet, "ams1")["url"])
    for field in ("DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_XID_ERRORS"):
        assert sum(line.startswith(field + "{") and 'unit="ams1-u2"' in line for line in metrics.splitlines()) == 32
    try:
        fleet.cli("unit", "fault", "ams1-u2", "xid")
        wait_for("ams1-u2 out", lambda: pop_status(fleet, "ams1")["units_out"].get("ams1-u2") == "alarm: gpu-xid")
        status = pop_status(fleet, "ams1")
        assert status["state"] == "serving" and "ams1-u1" not in status["units_out"]
        [xid] = status["units"]["ams1-u2"]["reading"]["gpu_xid"]
        assert xid["xid"] == 79 and xid["gpu"] == "0"
        xids = [line for line in metrics_of(status["url"]).splitlines() if line.startswith("DCGM_FI_DEV_XID_ERRORS{")]
        assert [line for line in xids if line.endswith(" 79.0")] == [
            line for line in xids if f'UUID="{xid["uuid"]}"' in line and 'unit="ams1-u2"' in line
        ]
    finally:
        fleet.cli("unit", "fault", "ams1-u2", "--clear")
    wait_for("ams1-u2 back", lambda: pop_status(fleet, "ams1")["units_out"] == {})
    audit = get_json(fleet.control_url + "/api/audit")["audit"]
    assert {("unit ams1-u2", "raised"), ("unit ams1-u2", "cleared")} <= {
        (a["target"], a["outcome"]) for a in audit if a["action"] == "unit-alarm"
    }
