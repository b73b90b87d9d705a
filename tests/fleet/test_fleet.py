"""The fleet file: the embedded default, and bad input refused naming file, line and field."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from edgeplane.fleet import (
    FleetError,
    default_fleet_text,
    fleet_json,
    great_circle_km,
    load_default_fleet,
    load_fleet,
    parse_fleet,
)

DOC_V4 = ipaddress.ip_network("198.18.0.0/15")
DOC_V6 = ipaddress.ip_network("2001:db8::/32")
DOC_ASNS = set(range(64496, 64512)) | set(range(65536, 65552))


def test_default_fleet_meets_its_brief() -> None:
    fleet = load_default_fleet()
    assert len(fleet.metros) == 9
    assert {c.code for c in fleet.continents} == {"na", "eu"}
    assert len(fleet.regions) >= 4
    metros_per_region = [sum(1 for m in fleet.metros if m.region == r.code) for r in fleet.regions]
    assert sum(1 for n in metros_per_region if n >= 2) > len(fleet.regions) / 2
    assert any(len(fleet.pops_in(m.code)) >= 2 for m in fleet.metros)
    for pop in fleet.pops:
        assert len(pop.transits) == 2
        assert len(pop.units) >= 2
        assert set(pop.gpus_by_type()) <= {"H100", "H200"}
    assert fleet.links
    assert len({m.parameters_billions for m in fleet.models}) >= 3


def test_default_fleet_uses_documentation_ranges_only() -> None:
    fleet = load_default_fleet()
    for metro in fleet.metros:
        for prefix in metro.client_prefixes:
            network = ipaddress.ip_network(prefix)
            assert network.subnet_of(DOC_V4 if network.version == 4 else DOC_V6), prefix  # type: ignore[arg-type]
    assert fleet.asn in DOC_ASNS
    assert all(t.asn in DOC_ASNS for p in fleet.pops for t in p.transits)


def test_codes_and_ids_are_unique_per_kind() -> None:
    fleet = load_default_fleet()
    for kind in (fleet.continents, fleet.regions, fleet.metros, fleet.pops):
        assert len({x.code for x in kind}) == len(kind)
        assert len({x.id for x in kind}) == len(kind)
    units = [u for _, u in fleet.units()]
    assert len({u.id for u in units}) == len({u.code for u in units}) == len(units)


def test_rtt_is_estimated_from_distance_unless_measured() -> None:
    fleet = load_default_fleet()
    km = great_circle_km(40.71, -74.01, 51.51, -0.13)
    assert 5500 < km < 5650
    assert fleet.metro_rtt_ms("nyc", "lon") == pytest.approx(1.0 + 2 * km / 200 * 1.5)
    assert fleet.metro_rtt_ms("nyc", "nyc") == fleet.intra_metro_rtt_ms
    assert fleet.pop_rtt_ms("nyc1", "iad1") == 5.1  # measured on the fabric link
    assert fleet.pop_rtt_ms("ord1", "dfw1") == fleet.metro_rtt_ms("ord", "dfw")


def _broken(old: str, new: str) -> str:
    text = default_fleet_text()
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("    region: us-central\n", "    region: us-centrl\n", "metros[2].region", "unknown region 'us-centrl'"),
        ("  - code: iad\n    id: 2\n", "  - code: iad\n    id: 1\n", "metros[1].id", "duplicate id 1"),
        ("198.18.16.0/20", "198.18.0.0/16", "metros[1].client_prefixes[0]", "overlaps 198.18.0.0/20 of nyc"),
        (
            "transit-a, asn: 64497, capacity_gbps: 100",
            "transit-a, asn: 64497, capacity_gbps: -5",
            "capacity_gbps",
            "greater than 0",
        ),
        ("{gpu_type: H100, servers: 4", "{gpu_type: X900, servers: 4", "gpu_type", "unknown GPU type 'X900'"),
        ("    latitude: 40.71\n", "", "metros[0].latitude", "missing"),
        ("  - {a: nyc1, b: iad1", "  - {a: nyc1, b: bos1", "links[1].b", "unknown PoP 'bos1'"),
    ],
)
def test_bad_fleet_is_refused_with_file_line_and_field(old: str, new: str, field: str, expected: str) -> None:
    text = _broken(old, new)
    with pytest.raises(FleetError) as caught:
        parse_fleet(text, "fleet.yaml")
    problems = [p for p in caught.value.problems if field in p.field and expected in p.message]
    assert problems, str(caught.value)
    problem = problems[0]
    assert problem.file == "fleet.yaml"
    # The line is the changed one or, for a missing field, that of its mapping.
    block = new.rstrip("\n") if new.strip() else "  - code: nyc"
    line = text[: text.index(block)].count("\n") + 1 + block.count("\n")
    assert problem.line == line, str(caught.value)
    assert str(problem).startswith(f"fleet.yaml:{problem.line}: ")


def test_invalid_yaml_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("asn: 64496\nmetros: [\n  {code: nyc\n")
    with pytest.raises(FleetError) as caught:
        load_fleet(path)
    assert caught.value.problems[0].file == str(path)
    assert caught.value.problems[0].line >= 2


def test_unknown_field_and_missing_file(tmp_path: Path) -> None:
    text = _broken("asn: 64496\n", "asn: 64496\nasm: 1\n")
    with pytest.raises(FleetError, match=r"fleet.yaml:\d+: asm: unknown field"):
        parse_fleet(text, "fleet.yaml")
    with pytest.raises(FleetError, match="cannot read"):
        load_fleet(tmp_path / "absent.yaml")


def test_a_file_that_is_not_utf8_or_holds_a_nul_is_refused_naming_it(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(FleetError) as caught:
        load_fleet(binary)
    assert str(caught.value) == f"{binary}:0: (file): not UTF-8 (byte 0: invalid start byte)"
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"asn: 64496\nmetros: \x00\n")
    with pytest.raises(FleetError) as caught:
        load_fleet(nul)
    assert str(caught.value).startswith(f"{nul}:2: (syntax): invalid YAML: character #x0000 is not allowed")


def test_placement_must_fit_the_gpus() -> None:
    text = _broken(
        "{model: llama-3.1-405b-instruct, pop: iad1, replicas: 2}",
        "{model: llama-3.1-405b-instruct, pop: iad1, replicas: 9}",
    )
    with pytest.raises(FleetError, match=r"placement\[\d+\]\.replicas: placement needs \d+ GPUs at iad1"):
        parse_fleet(text, "fleet.yaml")


def test_the_nested_json_holds_every_pop_once_with_figures_from_its_units() -> None:
    fleet = load_default_fleet()
    data = json.loads(json.dumps(fleet_json(fleet)))  # plain JSON all the way down
    pops = [pop for metro in data["metros"] for pop in metro["pops"]]
    assert [p["code"] for p in pops] == [p.code for m in fleet.metros for p in fleet.pops_in(m.code)]
    assert sorted(p["code"] for p in pops) == sorted(p.code for p in fleet.pops)
    for shown in pops:
        pop = fleet.pop_by_code[shown["code"]]
        assert shown["gpus"] == pop.gpus_by_type() and shown["power_kw"] == sum(u.power_kw for u in pop.units)
        assert shown["models"] == fleet.models_at(pop.code)
    assert {m["continent"] for m in data["metros"]} == {c.code for c in fleet.continents}


def test_a_flow_exporter_belongs_to_one_pop_and_is_an_address() -> None:
    text = default_fleet_text()
    first = text.index("    transits:")
    second = text.index("    transits:", first + 1)
    doubled = (
        text[:first] + "    flow_exporters: [192.0.2.9]\n" + text[first:second] + "    flow_exporters: [192.0.2.9]\n"
        + text[second:]
    )  # fmt: skip
    with pytest.raises(FleetError, match=r"flow_exporters\[0\]: flow exporter 192.0.2.9 is also in PoP nyc1"):
        parse_fleet(doubled, "fleet.yaml")
    with pytest.raises(FleetError, match=r"pops\[0\]\.flow_exporters\[0\]: value is not a valid IPv4 or IPv6"):
        parse_fleet(text[:first] + "    flow_exporters: [not-an-address]\n" + text[first:], "fleet.yaml")
