"""`edgeplane bgp run` against two real BIRD 2 transits: the plan, every community, drains, actions, restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeplane._errors import ControlPlaneError
from edgeplane.cli import cli
from edgeplane.cli._client import ControlClient
from edgeplane.fleet import load_default_fleet
from tests._time import wait_for
from tests.bgp._bird import Bird, BirdRoute, transit
from tests.conftest import ROOT, RunningFleet, free_port, start_fleet, stop_fleet, terminate

LON_V4, LON_V6 = "198.19.128.0/24", "2001:db8:c000::/48"  # metro lon's service prefixes
EXPECTED = {  # lon1 announces: prefix -> scope id
    LON_V4: 1,
    LON_V6: 1,
    "198.19.128.0/20": 2,
    "2001:db8:c000::/38": 2,
    "198.19.128.0/17": 3,
    "2001:db8:c000::/34": 3,
    "198.19.0.0/16": 4,
    "2001:db8:8000::/33": 4,
}
# What the transits send us, for the egress prediction: 203.0.113.0/24 is shorter via transit-c,
# 198.51.100.0/24 via transit-d, and 203.0.113.128/25 is equal in length with transit-d's MED lower.
STATIC = """
protocol static {
  ipv4;
  route 203.0.113.0/24 blackhole;
  route 203.0.113.128/25 blackhole;
  route 198.51.100.0/24 blackhole;
}
"""
FILTER_C = "if net = 198.51.100.0/24 then bgp_path.prepend(64499); if net = 203.0.113.128/25 then bgp_med = 50; accept;"
FILTER_D = "if net = 203.0.113.0/24 then bgp_path.prepend(64500); if net = 203.0.113.128/25 then bgp_med = 10; accept;"


class SpeakerProcess:
    def __init__(self, tmp: Path, args: list[str]) -> None:
        self.tmp, self.args = tmp, args
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp / "speaker.log"

    def start(self) -> SpeakerProcess:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeplane", "--log-level", "info", "bgp", "run", *self.args],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self) -> None:
        """SIGTERM, and the speaker must be gone within 15 s, ExaBGP with it; SIGKILL is for cleanup only."""
        process, self.process = self.process, None
        if process is not None and not terminate(process, 15):
            raise AssertionError(f"the speaker ignored SIGTERM; its log:\n{self.log.read_text()[-3000:]}")


def expected_communities(pop: str, prefix: str) -> list[str]:
    fleet = load_default_fleet()
    site = fleet.pop_by_code[pop]
    metro = fleet.metro_by_code[site.metro]
    region = fleet.region_by_code[metro.region]
    continent = fleet.continent_by_code[region.continent]
    ids = (metro.id, region.id, continent.id, site.id)
    origin = [f"64496:{kind}:{i}" for kind, i in zip((1, 2, 3, 4), ids, strict=True)]
    return [*origin, "64496:5:1", f"64496:10:{EXPECTED[prefix]}"]


def has_plan(routes: dict[str, BirdRoute]) -> bool:
    return set(EXPECTED) <= set(routes)


@pytest.fixture
def transits(tmp_path: Path) -> Iterator[tuple[Bird, Bird, int]]:
    port = free_port()
    c = transit(tmp_path, "c", "127.0.0.2", 64499, port, exports=STATIC, export_filter=FILTER_C).start()
    d = transit(tmp_path, "d", "127.0.0.3", 64500, port, exports=STATIC, export_filter=FILTER_D).start()
    yield c, d, port
    c.stop()
    d.stop()


def speaker_args(port: int, tmp: Path) -> list[str]:
    return [
        "--pop",
        "lon1",
        "--neighbor",
        f"127.0.0.2:{port}",
        "--neighbor-as",
        "64499",
        "--neighbor",
        f"127.0.0.3:{port}",
        "--neighbor-as",
        "64500",
        "--local-address",
        "127.0.0.1",
        "--data-dir",
        str(tmp / "data"),
    ]


def test_transits_get_the_plan_with_every_community_and_get_it_back_after_restarts(
    transits: tuple[Bird, Bird, int], tmp_path: Path
) -> None:
    c, d, port = transits
    fleet_file = str(ROOT / "src" / "edgeplane" / "fleet" / "default.yaml")
    status_port = free_port()
    args = [*speaker_args(port, tmp_path), "--fleet", fleet_file, "--status-port", str(status_port)]
    speaker = SpeakerProcess(tmp_path, args).start()
    try:
        for bird in (c, d):
            routes = bird.wait_for("the plan", lambda r: has_plan(r) and r)
            assert set(routes) == set(EXPECTED), "nothing beyond lon1's plan: no other metro's prefix leaks"
            for prefix in EXPECTED:
                route = routes[prefix]
                assert route.as_path == [64496]
                hop = "192.0.2.8" if ":" not in prefix else "2001:db8:ffff::8"  # lon1 is PoP 8
                assert route.attributes["BGP.next_hop"] == hop
                assert route.large_communities == expected_communities("lon1", prefix)
                assert route.communities == []
        before = {p: (r.attributes, r.large_communities) for p, r in c.by_prefix().items()}
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/healthz", timeout=5) as answer:
            health = json.loads(answer.read())
        assert [(n["address"], n["session"], len(n["announced"])) for n in health["neighbors"]] == [
            ("127.0.0.2", "up", 8),
            ("127.0.0.3", "up", 8),
        ]
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/metrics", timeout=5) as answer:
            metrics = answer.read().decode()
        assert 'edgeplane_bgp_session_up{neighbor="127.0.0.3"} 1.0' in metrics
        assert 'edgeplane_bgp_routes_announced{neighbor="127.0.0.2"} 8.0' in metrics

        # Egress: the transits' routes went through the decision process the way the issue asks.
        rib = tmp_path / "data" / "bgp-lon1" / "rib-in.json"
        runner = CliRunner()

        def explain(destination: str) -> dict[str, object]:
            args = ["bgp", "explain", destination, "--pop", "lon1", "--data-dir", str(tmp_path / "data"), "--json"]
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, result.output
            return json.loads(result.output)  # type: ignore[no-any-return]

        wait_for(
            "the speaker writes the transits' routes",
            lambda: rib.exists() and len(json.loads(rib.read_text())["routes"]) == 6,  # 3 prefixes x 2 transits
            timeout_seconds=20,
        )
        shorter_c, shorter_d, med_d = explain("203.0.113.7"), explain("198.51.100.1"), explain("203.0.113.200")
        assert shorter_c["best"]["peer"] == "127.0.0.2"  # type: ignore[index]
        assert shorter_d["best"]["peer"] == "127.0.0.3"  # type: ignore[index]
        assert med_d["prefix"] == "203.0.113.128/25" and med_d["best"]["peer"] == "127.0.0.3"  # type: ignore[index]
        assert med_d["others"][0]["step"] == "med"  # type: ignore[index]

        # The neighbour restarts: it gets back exactly what it had.
        d.stop()
        d.start()
        routes = d.wait_for("the plan after d restarted", lambda r: has_plan(r) and r)
        assert set(routes) == set(EXPECTED)

        # The speaker restarts: the same routes again.
        speaker.stop()
        c.wait_for("the withdrawal on session loss", lambda r: not r.keys() & EXPECTED.keys() or None)
        speaker.start()
        c.wait_for("the plan after the speaker restarted", has_plan)
        after = {p: (r.attributes, r.large_communities) for p, r in c.by_prefix().items()}
        assert after == before
    finally:
        speaker.stop()


@pytest.fixture(scope="module")
def edge_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    """The default fleet with a short graceful-shutdown period, so a drain reaches withdrawal in seconds."""
    tmp = tmp_path_factory.mktemp("edge-fleet")
    argv = [sys.executable, "-m", "edgeplane", "up", "--time-scale", "0.05", "--graceful-shutdown-seconds", "2"]
    running = start_fleet(argv, tmp, fleet_path=None, backend="emulator")
    yield running
    stop_fleet(running)


def test_a_drain_tags_graceful_shutdown_then_withdraws_the_metro_prefixes_and_keeps_the_aggregates(
    transits: tuple[Bird, Bird, int], tmp_path: Path, edge_fleet: RunningFleet
) -> None:
    c, d, port = transits
    url = edge_fleet.control_url
    speaker = SpeakerProcess(tmp_path, [*speaker_args(port, tmp_path), "--control", url]).start()
    runner = CliRunner(env={"COLUMNS": "200"})
    try:
        c.wait_for("the plan", has_plan)
        assert runner.invoke(cli, ["--control", url, "drain", "metro", "lon"]).exit_code == 0
        for bird in (c, d):
            shut = lambda r: all(p in r and "65535:0" in r[p].communities for p in (LON_V4, LON_V6)) and r  # noqa: E731
            tagged = bird.wait_for("GRACEFUL_SHUTDOWN on both families", shut)
            assert tagged["198.19.128.0/20"].communities == []  # aggregates are not shut down
        status = json.loads(runner.invoke(cli, ["--control", url, "bgp", "status", "--json"]).output)
        assert {p["pop"]: p["state"] for p in status["pops"]}["lon1"] in ("graceful-shutdown", "withdrawn")
        for bird in (c, d):
            left = bird.wait_for("the withdrawal", lambda r: LON_V4 not in r and LON_V6 not in r and r)
            assert {"198.19.128.0/20", "2001:db8:c000::/38", "198.19.0.0/16"} <= set(left)  # users caught here
            assert left["198.19.128.0/20"].as_path == [64496] * 4  # prepended: any undrained PoP's wins
        assert runner.invoke(cli, ["--control", url, "undrain", "metro", "lon"]).exit_code == 0
        back = c.wait_for("the prefixes back", lambda r: LON_V4 in r and r)
        assert back[LON_V4].communities == [] and back[LON_V4].large_communities == expected_communities("lon1", LON_V4)

        # A failure is not planned: lon1 stops answering, the control plane's probes find it down, and its
        # metro prefixes go at once (no graceful-shutdown period); they come back once it passes again.
        fault = ["--control", url, "fault", "set", "lon1", "refuse-connections", "--seconds", "3"]
        assert runner.invoke(cli, fault).exit_code == 0  # the site cannot be reached to clear it: it times out
        left = c.wait_for("the withdrawal on failure", lambda r: LON_V4 not in r and r)
        assert "198.19.128.0/20" in left
        status = json.loads(runner.invoke(cli, ["--control", url, "bgp", "status", "--json"]).output)
        lon1 = next(p for p in status["pops"] if p["pop"] == "lon1")
        assert (lon1["state"], lon1["reason"]) == ("withdrawn", "failed health checks")
        c.wait_for("the prefixes back after the failure", lambda r: LON_V4 in r)

        # Inbound balance: transit-d carries too much; the suggestion is applied and carried out as
        # transit-d's own prepend community; a prepend toward transit-c is done by us in the AS path.
        traffic = tmp_path / "traffic.csv"
        traffic.write_text("pop,transit_asn,gbps\nlon1,64499,10\nlon1,64500,80\n")
        result = runner.invoke(
            cli, ["--control", url, "bgp", "balance", "--traffic", str(traffic), "--apply", "--json"]
        )
        assert result.exit_code == 0, result.output
        suggestion = json.loads(result.output)["suggestions"][0]
        assert suggestion["transit_asn"] == 64500 and suggestion["action"].startswith("prepend-")
        times = int(suggestion["action"][-1])
        predicted = suggestion["utilisation_after"]
        assert abs(predicted["64500"] - predicted["64499"]) < abs(0.8 - 0.1)
        mapped = d.wait_for("transit-d's community", lambda r: f"64500:{3000 + times}" in r[LON_V4].communities and r)
        assert mapped[LON_V4].as_path == [64496]
        assert f"64496:{20 + times}:64500" in mapped[LON_V4].large_communities
        assert c.by_prefix()[LON_V4].as_path == [64496]
        ControlClient(url).call(
            "POST", "/api/bgp/actions", {"pop": "lon1", "transit_asn": 64499, "action": "prepend-2"}
        )
        c.wait_for("the prepends toward c", lambda r: r[LON_V4].as_path == [64496, 64496, 64496])
        for asn in (64499, 64500):
            ControlClient(url).call("POST", "/api/bgp/actions", {"pop": "lon1", "transit_asn": asn, "action": "none"})
        c.wait_for("the prepends gone", lambda r: r[LON_V4].as_path == [64496])
    finally:
        speaker.stop()
        CliRunner().invoke(cli, ["--control", url, "undrain", "metro", "lon"])


def test_the_speaker_refuses_a_neighbour_list_it_cannot_pair() -> None:
    result = CliRunner().invoke(
        cli, ["bgp", "run", "--pop", "lon1", "--neighbor", "127.0.0.2", "--neighbor", "127.0.0.3", "--neighbor-as", "1"]
    )
    assert result.exit_code == 2 and "give one AS per neighbour" in result.output
    result = CliRunner().invoke(cli, ["bgp", "run", "--pop", "lon1", "--neighbor", "nope:x", "--neighbor-as", "1"])
    assert result.exit_code == 2 and "not ADDRESS or ADDRESS:PORT" in result.output


def test_a_speaker_started_while_no_control_plane_answers_announces_the_intents_it_kept(
    transits: tuple[Bird, Bird, int], tmp_path: Path
) -> None:
    c, _, port = transits
    control_port, status_port = free_port(), free_port()
    control_url = f"http://127.0.0.1:{control_port}"
    with (tmp_path / "control.log").open("w") as log:
        control = subprocess.Popen(
            [sys.executable, "-m", "edgeplane", "control", "run", "--port", str(control_port),
             "--data-dir", str(tmp_path / "control")],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    args = [*speaker_args(port, tmp_path), "--control", control_url, "--status-port", str(status_port)]
    speaker = SpeakerProcess(tmp_path, args)
    kept = tmp_path / "data" / "bgp-lon1" / "intents.json"
    try:

        def answers() -> bool:
            try:
                return ControlClient(control_url).call("GET", "/healthz") is not None
            except ControlPlaneError:
                return False

        wait_for("the control plane", answers, 30)
        speaker.start()
        c.wait_for("the plan from the control plane", has_plan)
        wait_for("the intents kept on disk", kept.exists, 10)
        speaker.stop()
        terminate(control, 20)
        c.wait_for("the withdrawal on session loss", lambda r: not r.keys() & EXPECTED.keys() or None)

        speaker.start()  # no control plane answers now
        c.wait_for("the plan again, from disk", has_plan)
        with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/healthz", timeout=5) as answer:
            assert json.loads(answer.read())["intents_source"] == "disk"
    finally:
        speaker.stop()
        terminate(control, 20)
