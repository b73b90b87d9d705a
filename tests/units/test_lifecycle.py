"""A unit's lifecycle: the moves allowed, the acceptance results a unit must pass to ship, the history kept."""

from __future__ import annotations

import pytest

from edgeplane.units import LifecycleError, UnitRecord, UnitState, move

S = UnitState


def ordered() -> UnitRecord:
    return UnitRecord("iad1-u9", "iad1", S.ORDERED, 0.0, "planner", "order", due=90 * 86400.0)


def test_a_unit_goes_from_order_to_service_through_the_factory_and_the_field() -> None:
    unit = ordered()
    unit = move(unit, S.ASSEMBLING, at=1, by="factory")
    unit = move(unit, S.FACTORY_ACCEPTANCE_TEST, at=2, by="factory")
    burn_in = {"passed": True, "burn_in_hours": 48, "gpus_tested": 32, "gpus_failed": 0, "peak_inlet_c": 27.5}
    unit = move(unit, S.SHIPPING, at=3, by="factory", acceptance=burn_in)
    unit = move(unit, S.COMMISSIONING, at=4, by="site team")
    assert not unit.carries_traffic
    unit = move(unit, S.IN_SERVICE, at=5, by="site team", note="handed over")
    assert unit.carries_traffic and unit.since == 5 and unit.by == "site team"
    assert [c.state for c in unit.history] == [S.ASSEMBLING, S.FACTORY_ACCEPTANCE_TEST, S.SHIPPING,
                                               S.COMMISSIONING, S.IN_SERVICE]  # fmt: skip
    assert unit.acceptance is not None and unit.acceptance["burn_in_hours"] == 48
    unit = move(unit, S.MAINTENANCE, at=6, by="ops")
    assert not unit.carries_traffic
    unit = move(unit, S.IN_SERVICE, at=7, by="ops")
    assert unit.to_json()["history"][-1] == {"at": 7, "state": "in-service", "by": "ops", "note": ""}


def test_moves_the_lifecycle_does_not_allow_say_what_is_allowed() -> None:
    with pytest.raises(LifecycleError, match="can go to assembling, decommissioned, not in-service"):
        move(ordered(), S.IN_SERVICE, at=1, by="x")
    gone = move(ordered(), S.DECOMMISSIONED, at=1, by="x")
    with pytest.raises(LifecycleError, match="nothing"):
        move(gone, S.IN_SERVICE, at=2, by="x")


def test_a_unit_ships_only_after_passing_its_acceptance_test() -> None:
    unit = move(move(ordered(), S.ASSEMBLING, at=1, by="f"), S.FACTORY_ACCEPTANCE_TEST, at=2, by="f")
    with pytest.raises(LifecycleError, match="cannot ship before it passes"):
        move(unit, S.SHIPPING, at=3, by="f")
    with pytest.raises(LifecycleError, match="cannot ship"):
        move(unit, S.SHIPPING, at=3, by="f", acceptance={"passed": False, "gpus_failed": 2})
    failed = move(unit, S.ASSEMBLING, at=3, by="f", acceptance={"passed": False, "gpus_tested": 32, "gpus_failed": 2})
    assert failed.acceptance == {"passed": False, "gpus_tested": 32, "gpus_failed": 2}  # kept for the rework


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ("passed", "JSON object"),
        ({"burn_in_hours": 48}, "`passed`"),
        ({"passed": True, "burn_in_hours": -1}, "`burn_in_hours` must be a non-negative number"),
        ({"passed": True, "peak_inlet_c": "hot"}, "`peak_inlet_c`"),
        ({"passed": True, "gpus_tested": 8, "gpus_failed": 9}, "9 GPUs failed of 8 tested"),
    ],
)
def test_bad_acceptance_results_are_refused_with_the_reason(results: object, message: str) -> None:
    unit = move(move(ordered(), S.ASSEMBLING, at=1, by="f"), S.FACTORY_ACCEPTANCE_TEST, at=2, by="f")
    with pytest.raises(LifecycleError, match=message):
        move(unit, S.SHIPPING, at=3, by="f", acceptance=results)
