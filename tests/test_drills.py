"""Drills on the default fleet under load: one completes, one breaks its SLO and rolls back; both audited."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import RunningFleet
from tests.test_end_to_end import chat

pytestmark = pytest.mark.slow

LONDON = "198.18.96.33"
MODEL = "llama-3.1-8b-instruct"


@pytest.fixture
def london_load(emulator_fleet: RunningFleet) -> Iterator[list[tuple[str, str]]]:
    """Streaming clients in London, until the test ends; records where each was served."""
    served: list[tuple[str, str]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            headers, _, finish = chat(emulator_fleet, LONDON, MODEL, stream=True)
            assert finish
            served.append((headers["x-edgeplane-metro"], headers["x-edgeplane-scope"]))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    yield served
    stop.set()
    for thread in threads:
        thread.join(30)


def audit(fleet: RunningFleet) -> list[dict[str, object]]:
    with urllib.request.urlopen(fleet.control_url + "/api/audit") as response:
        return list(json.loads(response.read())["audit"])


def test_a_drill_under_load_completes_and_restores_the_metro(
    emulator_fleet: RunningFleet, london_load: list[tuple[str, str]]
) -> None:
    result = emulator_fleet.cli("drill", "metro", "lon", "--duration", "3", "--json", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "completed"
    figures = report["figures"]
    assert figures["samples"] > 0 and not figures["breached"]
    assert set(figures["served_at"]) <= {"ams (region)", "fra (continent)"}
    assert ("ams", "region") in london_load
    headers, _, _ = chat(emulator_fleet, LONDON, MODEL)
    assert headers["x-edgeplane-metro"] == "lon"
    records = [r for r in audit(emulator_fleet) if r["target"] == "metro lon"]
    assert any(r["action"] == "drill end" and r["outcome"] == "completed" for r in records)
    assert any(r["action"] == "drill start" for r in records)


def test_a_drill_whose_slo_cannot_be_met_rolls_back_by_itself(
    emulator_fleet: RunningFleet, london_load: list[tuple[str, str]]
) -> None:
    # London's clients moved to Amsterdam are at least 6 ms away: a 1 ms SLO cannot hold.
    result = emulator_fleet.cli("drill", "metro", "lon", "--duration", "60", "--slo-ttft-ms", "1", check=False)
    assert result.returncode == 1
    assert "rolled back" in result.stdout and "over 1 ms" in result.stdout
    status = json.loads(emulator_fleet.cli("status", "--json").stdout)
    assert {m["code"]: m["state"] for m in status["metros"]}["lon"] == "serving"
    ends = [r for r in audit(emulator_fleet) if r["action"] == "drill end" and r["target"] == "metro lon"]
    assert ends[0]["outcome"] == "rolled back"
    assert ends[0]["detail"]["figures"]["breached"] is True  # type: ignore[index]
