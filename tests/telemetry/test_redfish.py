"""The Redfish emulator on loopback, read by the agent's reader over HTTP: DMTF's documents, readings that move,
injected faults, and bad telemetry that reads as stale rather than as an alarm."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from edgeplane.cli import cli
from edgeplane.control._bodies import UnitReading
from edgeplane.fleet import load_default_fleet
from edgeplane.telemetry import (
    FaultKind,
    RedfishEmulator,
    TelemetryStale,
    UnitAddressError,
    UnitWatch,
    pop_watch,
    read_gpus,
    read_unit,
)
from edgeplane.web import HttpClient
from tests._time import VirtualClock


@pytest.fixture
async def served() -> AsyncIterator[tuple[RedfishEmulator, str, HttpClient, VirtualClock]]:
    clock = VirtualClock(0.0)
    emulator = RedfishEmulator("iad1-u1", power_kw=400, gpus={"H100": 16}, clock=clock)
    runner = web.AppRunner(emulator.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    client = HttpClient()
    try:
        yield emulator, f"http://127.0.0.1:{port}", client, clock
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_healthy_unit_reads_dmtf_documents_with_moving_values(served: tuple) -> None:
    _, url, client, clock = served
    status, root = await client.request_json("GET", url + "/redfish/v1")
    assert status == 200 and root["@odata.type"].startswith("#ServiceRoot.")
    status, cdu = await client.request_json("GET", url + "/redfish/v1/ThermalEquipment/CDUs/1")
    assert cdu["@odata.type"] == "#CoolingUnit.v1_2_0.CoolingUnit" and cdu["EquipmentType"] == "CDU"
    first = await read_unit(client, url, "iad1-u1")
    assert 22 < first.inlet_c < 26 and 14 < first.coolant_supply_c < 16 and not first.leak and first.fire == "Normal"
    assert 0.55 * 400_000 < first.pdu_power_w < 0.65 * 400_000
    clock.advance(10)
    later = await read_unit(client, url, "iad1-u1")
    assert (later.inlet_c, later.coolant_supply_c) != (first.inlet_c, first.coolant_supply_c)
    status, _ = await client.request_json("GET", url + "/redfish/v1/Nothing/Here")
    assert status == 404


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (FaultKind.COOLANT, lambda r: r.coolant_supply_c >= 30),
        (FaultKind.LEAK, lambda r: r.leak),
        (FaultKind.INLET, lambda r: r.inlet_c >= 40),
        (FaultKind.PDU, lambda r: r.pdu_power_w >= 0.95 * 400_000),
        (FaultKind.FIRE_ARMED, lambda r: r.fire == "Armed"),
        (FaultKind.FIRE_DISCHARGED, lambda r: r.fire == "Discharged"),
    ],
)
async def test_injected_faults_show_in_the_readings_and_clear(served: tuple, fault: FaultKind, check: object) -> None:
    _, url, client, _ = served
    status, answer = await client.request_json("POST", url + "/redfish/v1/Oem/Edgeplane/Fault", {"kind": fault.value})
    assert status == 200 and answer["fault"] == fault.value
    assert check(await read_unit(client, url, "iad1-u1"))  # type: ignore[operator]
    await client.request_json("DELETE", url + "/redfish/v1/Oem/Edgeplane/Fault")
    assert not check(await read_unit(client, url, "iad1-u1"))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (FaultKind.MALFORMED, "not a Redfish document"),
        (FaultKind.MISSING, "has no reading"),
        (FaultKind.SILENT, "no answer"),
    ],
)
async def test_bad_telemetry_reads_as_stale_with_the_reason(served: tuple, fault: FaultKind, reason: str) -> None:
    emulator, url, client, _ = served
    emulator.fault = fault
    with pytest.raises(TelemetryStale, match=reason):
        await read_unit(client, url, "iad1-u1", timeout_seconds=0.3)


async def test_an_unknown_fault_is_refused(served: tuple) -> None:
    _, url, client, _ = served
    status, answer = await client.request_json("POST", url + "/redfish/v1/Oem/Edgeplane/Fault", {"kind": "meteor"})
    assert status == 400 and "coolant" in answer["error"]["message"]


async def test_faults_need_the_admin_token_and_no_web_page_can_send_one() -> None:
    emulator = RedfishEmulator("iad1-u1", admin_token="s3cret")
    runner = web.AppRunner(emulator.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/redfish/v1/Oem/Edgeplane/Fault"
    client = HttpClient()
    admin = {"Authorization": "Bearer s3cret"}
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            assert (await client.request_json("POST", url, {"kind": "leak"}, headers=headers))[0] == 401
        status, _ = await client.request_json(
            "POST", url, {"kind": "leak"}, headers={**admin, "Origin": "http://x.example"}
        )
        assert status == 403
        status, _ = await client.request_json("POST", url, {"kind": "leak"}, headers={"Host": "x.example"})
        assert status == 421  # a rebound name, without the token a page cannot know
        assert emulator.fault is None
        assert (await client.request_json("POST", url, {"kind": "leak"}, headers=admin))[0] == 200
        assert emulator.fault is FaultKind.LEAK
    finally:
        await client.close()
        await runner.cleanup()


async def test_gpu_health_reads_as_the_dcgm_exporter_serves_it(served: tuple) -> None:
    emulator, url, client, _ = served
    text = await client.get_text(url + "/metrics")
    assert "# TYPE DCGM_FI_DEV_GPU_TEMP gauge" in text and 'device="nvidia7"' in text
    gpus = await read_gpus(client, url + "/metrics")
    assert (
        len(gpus) == 16
        and len({g.uuid for g in gpus}) == 16
        and {g.hostname for g in gpus}
        == {
            "iad1-u1-h100-1",
            "iad1-u1-h100-2",
        }
    )
    assert all(40 < g.temp_c < 80 and 0 < g.power_w <= 715 and g.xid == 0 for g in gpus)
    reading = await read_unit(client, url, "iad1-u1", dcgm_urls=[url + "/metrics"])
    assert reading.to_json()["gpus"] == 16 and reading.to_json()["gpu_xid"] == []
    emulator.fault = FaultKind.XID
    assert [(g.gpu, g.xid) for g in await read_gpus(client, url + "/metrics") if g.xid] == [("0", 79)]
    # What an agent reports of it, the control plane takes as it is (its reports are typed at the edge).
    shown = (await read_unit(client, url, "iad1-u1", dcgm_urls=[url + "/metrics"])).to_json()
    assert UnitReading.model_validate(shown).model_dump() == shown and shown["gpu_xid"][0]["xid"] == 79
    emulator.fault = FaultKind.GPU_HOT
    assert (await read_unit(client, url, "iad1-u1", dcgm_urls=[url + "/metrics"])).gpu_temp_max_c == 94.0


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (FaultKind.MALFORMED, "not Prometheus text"),
        (FaultKind.MISSING, "has no DCGM_FI_DEV_GPU_TEMP"),
        (FaultKind.SILENT, "no answer"),
    ],
)
async def test_bad_gpu_telemetry_reads_as_stale(served: tuple, fault: FaultKind, reason: str) -> None:
    emulator, url, client, _ = served
    emulator.fault = fault
    with pytest.raises(TelemetryStale, match=reason):
        await read_gpus(client, url + "/metrics", timeout_seconds=0.3)
    status, _ = await client.fetch_text(url + "/nothing")
    with pytest.raises(TelemetryStale, match="HTTP 404"):
        await read_gpus(client, url + "/nothing")
    assert status == 404


async def test_a_unit_with_an_exporter_per_server_reads_all_of_its_gpus(served: tuple) -> None:
    """Real DCGM exporters run one per GPU server: the watch merges a unit's pages into one reading."""
    _, url, _, _ = served
    second = RedfishEmulator("iad1-u1-s2", gpus={"H200": 8})
    runner = web.AppRunner(second.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    other = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    watch = UnitWatch(
        {"iad1-u1": url}, {"iad1-u1": 400.0}, CollectorRegistry(), dcgm={"iad1-u1": [url + "/metrics", other]}
    )
    client = HttpClient()
    try:
        await watch.poll(client, 0.0)
        reading = watch.readings["iad1-u1"]
        assert len(reading.gpus) == 24 and {g.model_name for g in reading.gpus} == {"NVIDIA H100", "NVIDIA H200"}
        assert watch.state()["iad1-u1"]["dcgm"] == [url + "/metrics", other]
        second.fault = FaultKind.MALFORMED  # one bad page makes the unit's telemetry stale, not half of it
        await watch.poll(client, 1.0)
        assert "not Prometheus text" in (watch.book.stale.get("iad1-u1") or "")
    finally:
        await client.close()
        await runner.cleanup()


def test_a_unit_has_one_redfish_service() -> None:
    given = ["--redfish", "lon1-u1=http://127.0.0.1:9/", "--redfish", "lon1-u1=http://127.0.0.1:10/"]
    result = CliRunner().invoke(cli, ["site", "run", "--pop", "lon1", "--no-report", *given])
    assert result.exit_code == 2 and "given twice: lon1-u1" in result.output


def test_a_pops_watch_reads_given_units_emulates_the_rest_and_refuses_strangers() -> None:
    fleet = load_default_fleet()
    units = [u.code for u in fleet.pop_by_code["lon1"].units]
    assert pop_watch(fleet, "lon1", CollectorRegistry()) is None  # nothing given, nothing emulated
    given = pop_watch(fleet, "lon1", CollectorRegistry(), redfish=[f"{units[0]}=http://127.0.0.1:9"], time_scale=0.05)
    assert given is not None and given.urls == {units[0]: "http://127.0.0.1:9"}
    assert given.interval_seconds == 0.5 and given.book.scale == 0.05
    emulated = pop_watch(fleet, "lon1", CollectorRegistry(), redfish=[f"{units[0]}=http://127.0.0.1:9"], emulate=True)
    assert emulated is not None and emulated.urls == {units[0]: "http://127.0.0.1:9"} | dict.fromkeys(units[1:])
    stranger, no_url = "ams1-u1=http://127.0.0.1:9", f"{units[0]}=127.0.0.1:9"
    with pytest.raises(UnitAddressError, match=f"with a unit of lon1 .*not '{stranger}'") as refused:
        pop_watch(fleet, "lon1", CollectorRegistry(), redfish=[stranger])
    assert refused.value.source == "redfish"
    with pytest.raises(UnitAddressError, match=f"not '{no_url}'") as refused:
        pop_watch(fleet, "lon1", CollectorRegistry(), dcgm=[no_url])
    assert refused.value.source == "dcgm"
