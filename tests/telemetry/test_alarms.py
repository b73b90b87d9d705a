"""Alarms: raised only after a threshold holds, cleared only after recovery holds, untouched by stale data."""

from __future__ import annotations

from dataclasses import replace

from edgeplane.telemetry import AlarmBook, FacilityReading, GpuReading

CALM = FacilityReading("iad1-u1", 24.0, 14.8, False, 240_000.0, "Normal", 0.0)
HOT_COOLANT = replace(CALM, coolant_supply_c=33.0)


def test_an_alarm_is_raised_after_its_hold_time_and_cleared_after_recovery_holds() -> None:
    book = AlarmBook()
    assert book.update(CALM, 400, now=0) == []
    assert book.update(HOT_COOLANT, 400, now=1) == []  # one hot reading: not yet
    assert book.update(HOT_COOLANT, 400, now=6) == []
    raised = book.update(HOT_COOLANT, 400, now=11)  # 10 s of it
    assert [(e.rule, e.kind) for e in raised] == [("coolant-supply", "raised")] and raised[0].value == 33.0
    assert book.alarmed_units() == {"iad1-u1"} and book.active("iad1-u1") == ["coolant-supply"]
    assert book.update(CALM, 400, now=20) == []  # recovering, not yet recovered
    assert book.update(HOT_COOLANT, 400, now=30) == []  # relapse: the clearing hold starts again
    assert book.update(CALM, 400, now=31) == []
    cleared = book.update(CALM, 400, now=61)
    assert [(e.rule, e.kind) for e in cleared] == [("coolant-supply", "cleared")]
    assert book.alarmed_units() == set()


def test_a_short_spike_raises_nothing() -> None:
    book = AlarmBook()
    for now, reading in enumerate([CALM, HOT_COOLANT, CALM, HOT_COOLANT, CALM] * 4):
        assert book.update(reading, 400, now=float(now * 3)) == []


def test_safety_alarms_raise_at_once() -> None:
    book = AlarmBook()
    leak = book.update(replace(CALM, leak=True), 400, now=0)
    fire = book.update(replace(CALM, leak=True, fire="Armed"), 400, now=1)
    pdu = book.update(replace(CALM, leak=True, fire="Armed", pdu_power_w=380_000), 400, now=2)
    assert [e.rule for e in leak] == ["leak"] and [e.rule for e in fire] == ["fire-suppression"] and pdu == []
    later = book.update(replace(CALM, leak=True, fire="Armed", pdu_power_w=380_000), 400, now=62)
    assert [e.rule for e in later] == ["pdu-power"] and later[0].value == 95.0


def test_stale_telemetry_neither_raises_nor_clears() -> None:
    book = AlarmBook(scale=0.1)
    book.update(HOT_COOLANT, 400, now=0)
    book.mark_stale("iad1-u1", "no answer")
    assert book.update(HOT_COOLANT, 400, now=0.5) == []  # the hold restarted after the gap
    assert [e.kind for e in book.update(HOT_COOLANT, 400, now=1.5)] == ["raised"]
    book.mark_stale("iad1-u1", "not a Redfish document")
    assert book.alarmed_units() == {"iad1-u1"}  # still raised while nothing can be read
    assert book.to_json()["iad1-u1"] == {"alarms": ["coolant-supply"], "stale": "not a Redfish document"}
    # A healthy neighbour is untouched by either.
    assert book.update(replace(CALM, unit="iad1-u2"), 400, now=2) == [] and "iad1-u2" not in book.alarmed_units()


def test_a_critical_xid_raises_at_once_a_hot_gpu_after_its_hold_and_other_xids_only_show() -> None:
    gpu = GpuReading("0", "GPU-1", "NVIDIA H100", "iad1-u1-h100-1", 55.0, 400.0, 0)
    book = AlarmBook()
    assert book.update(replace(CALM, gpus=(gpu, replace(gpu, gpu="1", uuid="GPU-2"))), 400, now=0) == []
    assert book.update(replace(CALM, gpus=(replace(gpu, xid=13),)), 400, now=1) == []  # a program's fault
    fallen = book.update(replace(CALM, gpus=(replace(gpu, xid=79),)), 400, now=2)
    assert [(e.rule, e.kind, e.value) for e in fallen] == [("gpu-xid", "raised", 1.0)]
    hot = replace(CALM, gpus=(replace(gpu, temp_c=94.0),))
    assert [e.kind for e in book.update(hot, 400, now=3)] == []  # the XID clears only after its hold
    assert [(e.rule, e.kind) for e in book.update(hot, 400, now=33)] == [("gpu-temperature", "raised")]
    assert [(e.rule, e.kind) for e in book.update(hot, 400, now=63)] == [("gpu-xid", "cleared")]
