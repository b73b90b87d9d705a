"""`peering candidates --json` over flows a real collector stored and a routing table in an MRT file: the ranking,
transits, 95th percentiles, shares and savings equal what this test computes on its own, per metro; a
PeeringDB fixture says where each candidate can be met."""

from __future__ import annotations

import ipaddress
import json
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests._time import wait_for
from tests.conftest import SMALL_FLEET
from tests.peering._exporter import Flow, datagrams, send
from tests.peering._mrt import write_mrt
from tests.peering._process import collector, edgeplane

PEERINGDB = Path(__file__).resolve().parents[1] / "data" / "peeringdb-small.json"
EXPORTERS = {"nyc1": "127.0.0.11", "iad1": "127.0.0.12", "ord1": "127.0.0.13", "ams1": "127.0.0.14"}
PRICES = {64497: 0.5, 64498: 0.4, 64499: 0.3, 64500: 0.6}
OURS = {"nyc": "198.19.0.10", "iad": "198.19.1.10", "ord": "198.19.16.10", "ams": "198.19.128.10"}
METRO_OF = {"nyc1": "nyc", "iad1": "iad", "ord1": "ord", "ams1": "ams"}
TRANSITS = {"nyc1": {64497, 64498}, "iad1": {64497, 64498}, "ord1": {64497, 64498}, "ams1": {64499, 64500}}

# (prefix, transit, AS path, MED): what the transits send us.
ROUTES = [
    ("203.0.113.0/24", 64497, [64497, 64510], None),
    ("203.0.113.0/24", 64498, [64498, 64511, 64510], None),
    ("198.51.100.0/24", 64497, [64497, 64512, 64513], None),
    ("198.51.100.0/24", 64498, [64498, 64513], None),
    ("192.0.2.0/24", 64497, [64497, 64514], 50),
    ("192.0.2.0/24", 64498, [64498, 64514], 10),
    ("198.18.0.0/15", 64498, [64498, 64521], None),  # a covering route, and a more specific one inside it
    ("198.18.5.0/24", 64497, [64497, 64515, 64516], None),
    ("203.0.113.0/24", 64499, [64499, 64510], None),
    ("203.0.113.0/24", 64500, [64500, 64510], 5),
    ("198.51.100.0/24", 64500, [64500, 64517, 64513], None),
    ("2001:db8:1234::/48", 64499, [64499, 64518], None),
    ("2001:db8:1234::/48", 64500, [64500, 64519, 64518], None),
]
REMOTES = ["203.0.113.7", "198.51.100.20", "192.0.2.5", "192.0.2.200", "198.18.5.5", "198.18.9.9", "2001:db8:1234::9"]


def _fleet(tmp_path: Path) -> Path:
    yaml = YAML()
    data = yaml.load(SMALL_FLEET.read_text())
    for pop in data["pops"]:
        pop["flow_exporters"] = [EXPORTERS[pop["code"]]]
        for transit in pop["transits"]:
            transit["price_per_mbps"] = PRICES[transit["asn"]]
    path = tmp_path / "fleet.yaml"
    with path.open("w") as out:
        yaml.dump(data, out)
    return path


def _best(pop: str, address: str) -> tuple[int, list[int]] | None:
    """The route the PoP uses toward ``address``: the longest prefix its transits sent, then the shortest path,
    then the lowest MED (missing counts as 0)."""
    target = ipaddress.ip_address(address)
    found = [r for r in ROUTES if r[1] in TRANSITS[pop] and target in ipaddress.ip_network(r[0])]
    if not found:
        return None
    longest = max(ipaddress.ip_network(r[0]).prefixlen for r in found)
    found = [r for r in found if ipaddress.ip_network(r[0]).prefixlen == longest]
    _, transit, path, _ = min(found, key=lambda r: (len(r[2]), r[3] or 0))
    return transit, path


def _p95(per_bin: dict[int, float], bins: int) -> float:
    values = sorted([per_bin.get(b, 0.0) for b in range(bins)])
    return values[math.ceil(0.95 * bins) - 1]


def _mbps(volume: float) -> float:
    return volume * 8 / 300 / 1e6


def _expected(flows: list[tuple[str, Flow, str]], first_bin: int, bins: int, top: int) -> dict[str, Any]:
    """Per metro: the candidates in order, each with its figures, computed without the product's code."""
    networks: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    transit_bins: dict[tuple[str, int], dict[str, dict[int, float]]] = defaultdict(lambda: {"in": {}, "out": {}})
    metro_bytes: dict[str, int] = defaultdict(int)
    for pop, flow, direction in flows:
        metro = METRO_OF[pop]
        remote = flow.dst if direction == "out" else flow.src
        route = _best(pop, remote)
        if route is None:
            continue
        transit, path = route
        b = flow.end_ms // 300_000 - first_bin
        metro_bytes[metro] += flow.bytes
        per_transit = transit_bins[(pop, transit)][direction]
        per_transit[b] = per_transit.get(b, 0) + flow.bytes
        for asn in dict.fromkeys(path[1:]):
            entry = networks[metro].setdefault(
                asn, {"bytes": 0, "packets": 0, "in": {}, "out": {}, "via": defaultdict(int), "parts": {}}
            )
            entry["bytes"] += flow.bytes
            entry["packets"] += flow.packets
            entry[direction][b] = entry[direction].get(b, 0) + flow.bytes
            entry["via"][transit] += flow.bytes
            part = entry["parts"].setdefault((pop, transit), {"in": {}, "out": {}})
            part[direction][b] = part[direction].get(b, 0) + flow.bytes
    answer: dict[str, Any] = {}
    for metro, found in networks.items():
        excluded = {t for pop, m in METRO_OF.items() if m == metro for t in TRANSITS[pop]} | {64496}
        rows = []
        for asn, e in found.items():
            if asn in excluded:
                continue
            p_in, p_out = _p95(e["in"], bins), _p95(e["out"], bins)
            saving = 0.0
            for (pop, transit), part in e["parts"].items():
                whole = transit_bins[(pop, transit)]
                before = max(_p95(whole["in"], bins), _p95(whole["out"], bins))
                rest = {d: {b: whole[d].get(b, 0) - part[d].get(b, 0) for b in whole[d]} for d in ("in", "out")}
                after = max(_p95(rest["in"], bins), _p95(rest["out"], bins))
                saving += PRICES[transit] * (_mbps(before) - _mbps(after))
            rows.append(
                {
                    "asn": asn,
                    "p95_mbps": _mbps(max(p_in, p_out)),
                    "bytes": e["bytes"],
                    "packets": e["packets"],
                    "via_transits": sorted(e["via"], key=lambda t: (-e["via"][t], t)),
                    "share": e["bytes"] / metro_bytes[metro],
                    "saving_per_month": saving,
                }
            )
        rows.sort(key=lambda r: (-r["p95_mbps"], -r["bytes"], r["asn"]))
        answer[metro] = rows[:top]
    return answer


def _traffic(now_ms: int, seed: int) -> tuple[list[tuple[str, Flow, str]], int, int]:
    """Two hours of flows in 5-minute bins at every PoP, out and in, with bursts and quiet bins."""
    rng = random.Random(seed)
    last_bin = now_ms // 300_000 - 1
    first_bin = last_bin - 23
    flows = []
    for pop in EXPORTERS:
        ours = OURS[METRO_OF[pop]]
        for b in range(first_bin, last_bin + 1):
            for remote in REMOTES:
                if ":" in remote:
                    mine = "2001:db8:8000::10" if METRO_OF[pop] != "ams" else "2001:db8:c000::10"
                else:
                    mine = ours
                if rng.random() < 0.3:
                    continue  # a quiet bin for this remote
                volume = rng.choice([rng.randint(1_000, 50_000), rng.randint(100_000, 3_000_000)])
                direction = rng.choice(["out", "out", "in"])
                src, dst = (mine, remote) if direction == "out" else (remote, mine)
                end_ms = b * 300_000 + rng.randint(20_000, 280_000)
                flows.append((pop, Flow(src, dst, end_ms, volume, max(1, volume // 1200)), direction))
    return flows, first_bin, last_bin - first_bin + 1


@dataclass
class Stored:
    """A data directory a real collector filled with the test's flows, and what the test knows of them."""

    fleet: Path
    rib: Path
    data_dir: Path
    flows: list[tuple[str, Flow, str]]
    first_bin: int
    bins: int


def _place(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The test's fleet file, its MRT table and an empty data directory under ``tmp_path``."""
    fleet = _fleet(tmp_path)
    rib = tmp_path / "rib.mrt"
    write_mrt(rib, [(prefix, transit, path, med) for prefix, transit, path, med in ROUTES])
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    return fleet, rib, data_dir


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Stored:
    fleet, rib, data_dir = _place(tmp_path_factory.mktemp("candidates"))
    now_ms = int(time.time() * 1000)
    flows, first_bin, bins = _traffic(now_ms, seed=17)
    with collector(data_dir, fleet=fleet) as running:
        for pop, exporter in EXPORTERS.items():
            mine = [f for p, f, _ in flows if p == pop]
            send(datagrams(mine, export_ms=now_ms), running.udp, source=exporter)
        wait_for("every flow stored", lambda: running.live_stats()["stored"] == len(flows), 60, 0.2)
        running.stop()
    return Stored(fleet, rib, data_dir, flows, first_bin, bins)


def _candidates(stored: Stored, *args: str) -> dict[str, Any]:
    done = edgeplane(
        "peering", "candidates", "--json", "--rib", str(stored.rib), "--fleet", str(stored.fleet),
        "--data-dir", str(stored.data_dir), *args,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


@pytest.mark.timeout(300)
def test_candidates_rank_as_computed_from_the_flows_and_the_mrt_table(stored: Stored) -> None:
    flows, first_bin, bins = stored.flows, stored.first_bin, stored.bins
    fleet, rib, data_dir = stored.fleet, stored.rib, stored.data_dir
    done = edgeplane(
        "peering", "candidates", "--json", "--rib", str(rib), "--fleet", str(fleet), "--data-dir", str(data_dir),
        "--peeringdb", str(PEERINGDB), "--top", "10",
    )  # fmt: skip
    report = json.loads(done.stdout)
    expected = _expected(flows, first_bin, bins, top=10)
    assert [m["code"] for m in report["metros"]] == sorted(expected)
    for metro in report["metros"]:
        want = expected[metro["code"]]
        assert metro["bins"] == bins
        got = metro["candidates"]
        assert [c["asn"] for c in got] == [w["asn"] for w in want], metro["code"]
        for c, w in zip(got, want, strict=True):
            assert c["bytes"] == w["bytes"] and c["packets"] == w["packets"]
            assert c["via_transits"] == w["via_transits"]
            assert c["p95_mbps"] == pytest.approx(w["p95_mbps"], abs=1e-6)
            assert c["share"] == pytest.approx(w["share"], abs=1e-6)
            assert c["saving_per_month"] == pytest.approx(w["saving_per_month"], abs=0.011)
    # Fewer asked for: the same head of the ranking (the store looks at networks by bytes and stops when no one
    # left can reach the top: that must never cut a network that belongs there).
    for top in (1, 2, 3):
        short = edgeplane(
            "peering", "candidates", "--json", "--rib", str(rib), "--fleet", str(fleet), "--data-dir", str(data_dir),
            "--top", str(top),
        )  # fmt: skip
        for metro in json.loads(short.stdout)["metros"]:
            assert [c["asn"] for c in metro["candidates"]] == [w["asn"] for w in expected[metro["code"]][:top]]
    # The PeeringDB fixture (tests/data/peeringdb-small.json): where both we (AS64496) and they are present in the
    # metro, by exchange or facility (Secaucus counts as New York: it lies within 50 km), with their policy.
    by_metro = {m["code"]: {c["asn"]: c for c in m["candidates"]} for m in report["metros"]}
    meets = {
        ("nyc", 64510): ("Example Content Delivery", "Open", [("ix", "NYIIX New York"), ("facility", "Equinix NY2"),
                                                              ("facility", "Equinix NY9")]),
        ("ams", 64510): ("Example Content Delivery", "Open", [("ix", "AMS-IX")]),
        ("iad", 64513): ("No Peering Enterprise", "No", []),  # its Ashburn port is marked deleted
        ("nyc", 64514): ("Amsterdam Hosting", "Open", []),
        ("ams", 64517): ("Chicago Access", "Open", []),
    }  # fmt: skip
    for (metro, asn), (name, policy, where) in meets.items():
        found = by_metro[metro][asn]
        assert (found["name"], found["policy"]) == (name, policy)
        assert [(m["kind"], m["name"]) for m in found["meet"]] == where, (metro, asn)


def _inbound_gbps(stored: Stored) -> dict[str, dict[int, float]]:
    """The 95th percentile of each PoP's inbound traffic per transit, in Gbps, computed here."""
    per: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    for pop, flow, direction in stored.flows:
        route = _best(pop, flow.src if direction == "in" else flow.dst)
        if route is None:
            continue
        series = per[(pop, route[0])]
        if direction == "in":
            b = flow.end_ms // 300_000 - stored.first_bin
            series[b] = series.get(b, 0) + flow.bytes
    answer: dict[str, dict[int, float]] = defaultdict(dict)
    for (pop, transit), series in per.items():
        answer[pop][transit] = _p95(series, stored.bins) * 8 / 300 / 1e9
    return answer


def test_bgp_balance_reads_the_inbound_95th_percentiles_from_the_flows(stored: Stored) -> None:
    done = edgeplane(
        "bgp", "balance", "--flows", "--json", "--rib", str(stored.rib), "--fleet", str(stored.fleet),
        "--data-dir", str(stored.data_dir),
    )  # fmt: skip
    suggestions = {s["pop"]: s for s in json.loads(done.stdout)["suggestions"]}
    expected = _inbound_gbps(stored)
    assert set(suggestions) == set(expected)
    for pop, per in expected.items():
        got = suggestions[pop]["gbps_before"]
        for transit, gbps in per.items():
            assert got[str(transit)] == pytest.approx(gbps, abs=1e-4)
    refused = edgeplane("bgp", "balance", "--flows", "--traffic", str(stored.rib), check=False)
    assert refused.returncode == 2 and "one of them" in refused.stderr


def test_the_html_report_and_the_published_report_say_what_json_says(stored: Stored, tmp_path: Path) -> None:
    from tests.control.test_peering_api import TOKEN, Control, latest

    report = _candidates(stored, "--top", "5")
    page = tmp_path / "peering.html"
    data_dir = tmp_path / "control"
    data_dir.mkdir()
    control = Control(data_dir)
    try:
        done = edgeplane(
            "--control", control.url, "peering", "candidates", "--rib", str(stored.rib), "--fleet", str(stored.fleet),
            "--data-dir", str(stored.data_dir), "--top", "5", "--html", str(page), "--publish",
            env={"EDGEPLANE_ADMIN_TOKEN": TOKEN},
        )  # fmt: skip
        assert "published" in done.stdout
        published = latest(control.url)["report"]
    finally:
        control.stop()
    for metro in report["metros"]:
        shown = next(m for m in published["metros"] if m["code"] == metro["code"])
        assert [c["asn"] for c in shown["candidates"]] == [c["asn"] for c in metro["candidates"]]
    text = page.read_text()
    assert text.count("<svg") == sum(1 for m in report["metros"] if m["candidates"])
    for metro in report["metros"]:
        for candidate in metro["candidates"]:
            assert f"AS{candidate['asn']}" in text


def test_expiry_keeps_the_answer_and_a_restart_keeps_the_counts(stored: Stored, tmp_path: Path) -> None:
    """Raw flows past their retention go, the 5-minute table is compacted, and the candidates stay the same; a
    collector started again on the directory counts on from what it had stored."""
    import shutil

    from edgeplane.peering import FlowStore

    copy = tmp_path / "data"
    shutil.copytree(stored.data_dir, copy)
    before = _candidates(Stored(stored.fleet, stored.rib, copy, [], 0, 0), "--top", "10")
    store = FlowStore(copy)
    with store.open() as connection:
        rows = connection.execute("SELECT count(*) FROM traffic_5m").fetchone()[0]
        store.expire(connection, raw_before_ms=2**62, aggregates_before_ms=0, compact_from_bin=0)
        assert connection.execute("SELECT count(*) FROM flows").fetchone()[0] == 0
        assert connection.execute("SELECT count(*) FROM traffic_5m").fetchone()[0] <= rows
    after = _candidates(Stored(stored.fleet, stored.rib, copy, [], 0, 0), "--top", "10")
    assert after["metros"] == before["metros"]
    stats = json.loads(edgeplane("flows", "stats", "--json", "--data-dir", str(copy)).stdout)
    assert stats["records"] == len(stored.flows) and stats["stored"]["raw"] == 0
    now_ms = int(time.time() * 1000)
    with collector(copy, fleet=stored.fleet) as running:
        send(datagrams([Flow("198.19.0.10", "203.0.113.9", now_ms - 1000, 10, 1)], export_ms=now_ms), running.udp)
        wait_for("the new flow stored", lambda: running.live_stats()["stored_this_run"] == 1, 60, 0.2)
        assert running.live_stats()["records"] == len(stored.flows) + 1
        running.stop()
    stats = json.loads(edgeplane("flows", "stats", "--json", "--data-dir", str(copy)).stdout)
    assert stats["records"] == len(stored.flows) + 1


def test_without_a_rib_the_speakers_received_routes_are_used(stored: Stored, tmp_path: Path) -> None:
    """What each PoP's speaker wrote (`bgp run`: DATA_DIR/bgp-POP/rib-in.json) gives the same answer as the MRT
    file holding the same routes; with neither, a clear error says what to give."""
    import shutil

    from edgeplane.bgp import Route

    copy = tmp_path / "data"
    shutil.copytree(stored.data_dir, copy)
    for pop, transits in TRANSITS.items():
        routes = [
            Route(prefix=p, peer=f"192.0.2.{t - 64400}", peer_asn=t, next_hop=f"192.0.2.{t - 64400}",
                  as_path=tuple(path), med=med).to_json()
            for p, t, path, med in ROUTES if t in transits
        ]  # fmt: skip
        (copy / f"bgp-{pop}").mkdir()
        (copy / f"bgp-{pop}" / "rib-in.json").write_text(json.dumps({"pop": pop, "routes": routes}))
    live = edgeplane("peering", "candidates", "--json", "--fleet", str(stored.fleet), "--data-dir", str(copy))
    from_file = _candidates(stored)
    assert [m["candidates"] for m in json.loads(live.stdout)["metros"]] == [
        m["candidates"] for m in from_file["metros"]
    ]
    empty = tmp_path / "empty"
    shutil.copytree(stored.data_dir, empty)
    refused = edgeplane("peering", "candidates", "--fleet", str(stored.fleet), "--data-dir", str(empty), check=False)
    assert refused.returncode == 1 and "--rib FILE" in refused.stderr and "Traceback" not in refused.stderr


def test_a_metro_asked_alone_is_what_the_whole_report_says_of_it(stored: Stored) -> None:
    whole = {m["code"]: m for m in _candidates(stored)["metros"]}
    for code in ("iad", "ams"):
        (alone,) = _candidates(stored, "--metro", code)["metros"]
        assert alone == whole[code]
        assert alone["candidates"], code  # not an empty answer twice


@pytest.mark.timeout(300)
def test_the_window_is_the_stores_whichever_metros_are_asked(tmp_path: Path) -> None:
    """A metro whose traffic began later than another's is billed over the same bins when asked alone as in the
    whole report (the quiet bins count as zero in its 95th percentile either way)."""
    fleet, rib, data_dir = _place(tmp_path)
    now_ms = int(time.time() * 1000)
    last_bin = now_ms // 300_000 - 1
    early = [Flow(OURS["nyc"], "203.0.113.7", (last_bin - 3) * 300_000 + 1000 * i, 5000, 5) for i in range(3)]
    late = [Flow(OURS["ams"], "203.0.113.7", last_bin * 300_000 + 1000 * i, 7000, 7) for i in range(3)]
    with collector(data_dir, fleet=fleet) as running:
        send(datagrams(early, export_ms=now_ms), running.udp, source=EXPORTERS["nyc1"])
        send(datagrams(late, export_ms=now_ms), running.udp, source=EXPORTERS["ams1"])
        wait_for("the flows stored", lambda: running.live_stats()["stored"] == 6, 60, 0.1)
    here = Stored(fleet, rib, data_dir, [], last_bin - 3, 4)
    whole = {m["code"]: m for m in _candidates(here)["metros"]}
    (alone,) = _candidates(here, "--metro", "ams")["metros"]
    assert whole["ams"]["bins"] == 4
    assert alone == whole["ams"]
    # A window wider than the data bills the same bins (nothing is known outside them), not years of zeros.
    wide = _candidates(here, "--since", "2000-01-01", "--until", "2100-01-01")["metros"]
    assert {m["code"]: m for m in wide} == whole


def test_an_empty_window_is_an_empty_report_and_exports_are_not_doubled(stored: Stored, tmp_path: Path) -> None:
    for window in (
        ("--since", "2030-01-01"),
        ("--until", "2000-01-01"),
        ("--since", "2026-01-02", "--until", "2026-01-01"),
    ):
        report = _candidates(stored, *window)
        assert all(m["candidates"] == [] for m in report["metros"]), window
    only = _candidates(stored, "--metro", "iad", "--since", "2030-01-01")["metros"]
    assert only == [
        {"code": "iad", "name": "Ashburn", "bins": 0, "transit_bytes": 0, "unrouted_bytes": 0, "transits": [],
         "candidates": []}
    ]  # fmt: skip
    balance = edgeplane(
        "bgp", "balance", "--flows", "--json", "--rib", str(stored.rib), "--fleet", str(stored.fleet),
        "--data-dir", str(stored.data_dir),
    )  # fmt: skip
    assert balance.returncode == 0
    # Export: IPv6 addresses as IPv6 text; a second export into the same place is refused unless replaced.
    out = tmp_path / "export"
    edgeplane("flows", "export", "--to", str(out), "--data-dir", str(stored.data_dir))
    again = edgeplane("flows", "export", "--to", str(out), "--data-dir", str(stored.data_dir), check=False)
    assert again.returncode == 1 and "--replace" in again.stderr
    edgeplane("flows", "export", "--to", str(out), "--data-dir", str(stored.data_dir), "--replace")
    import duckdb

    rows = duckdb.sql(
        f"SELECT src, dst, bytes FROM read_parquet('{out}/flows/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    assert len(rows) == len(stored.flows)
    sent = sorted(
        (str(ipaddress.ip_address(f.src)), str(ipaddress.ip_address(f.dst)), f.bytes) for _, f, _ in stored.flows
    )
    assert sorted((str(ipaddress.ip_address(s)), str(ipaddress.ip_address(d)), b) for s, d, b in rows) == sent
