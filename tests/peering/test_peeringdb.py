"""Where we could meet a network, from a small PeeringDB file; and files of every wrong shape, refused by name."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeplane.fleet import Metro, load_fleet
from edgeplane.peering._peeringdb import Meet, PeeringDb, PeeringDbError
from tests.conftest import SMALL_FLEET

PEERINGDB = Path(__file__).resolve().parents[1] / "data" / "peeringdb-small.json"
OUR_ASN = 64496
METROS = {m.code: m for m in load_fleet(SMALL_FLEET).metros}
DOCUMENT = json.loads(PEERINGDB.read_text())


def ix(name: str) -> Meet:
    return Meet("ix", name)


def fac(name: str) -> Meet:
    return Meet("facility", name)


@pytest.fixture(scope="module")
def pdb() -> PeeringDb:
    return PeeringDb.load(PEERINGDB)


def test_names_policies_and_what_is_left_out(pdb: PeeringDb) -> None:
    assert repr(pdb) == "<PeeringDb [Networks: 9, Exchanges: 5, Facilities: 10]>"  # AS64515 is deleted
    assert (pdb.name(64510), pdb.policy(64510), pdb.info_type(64510)) == ("Example Content Delivery", "Open", "Content")
    assert [pdb.policy(a) for a in (64511, 64512, 64513)] == ["Selective", "Restrictive", "No"]
    assert (pdb.name(64515), pdb.policy(64515)) == (None, None)
    assert (pdb.name(64999), pdb.policy(64999), pdb.info_type(64999)) == (None, None, None)


@pytest.mark.parametrize(
    ("metro", "asn", "expected"),
    [
        # NY2 is in Secaucus, 5 km from the metro's centre: in it by distance.
        ("nyc", 64510, [ix("NYIIX New York"), fac("Equinix NY2"), fac("Equinix NY9")]),
        ("nyc", 64511, [fac("Equinix NY9")]),  # DE-CIX and Broad Street are theirs, not ours
        ("nyc", 64512, [ix("NYIIX New York")]),  # its port names only the exchange's LAN (ixlan_id)
        ("nyc", 64513, []),  # Philadelphia is 130 km away; its Ashburn port is deleted
        ("nyc", 64515, []),  # deleted
        ("ams", 64510, [ix("AMS-IX")]),
        ("ams", 64514, [ix("AMS-IX"), fac("Equinix AM7")]),  # Nikhef is theirs only
        ("ord", 64517, [fac("Equinix CH1")]),
        ("iad", 64510, []),
        ("nyc", 64999, []),  # not in PeeringDB
    ],
)
def test_meet_where_both_are_present(pdb: PeeringDb, metro: str, asn: int, expected: list[Meet]) -> None:
    assert pdb.meet(asn, OUR_ASN, METROS[metro]) == expected


def test_when_we_are_not_in_peeringdb_the_candidates_own_places_are_where_we_could_join(pdb: PeeringDb) -> None:
    nyc = METROS["nyc"]
    assert pdb.meet(64510, 64501, nyc) == [
        ix("DE-CIX New York"),
        ix("NYIIX New York"),
        fac("Digital Realty JFK12"),
        fac("Equinix NY2"),
        fac("Equinix NY9"),
    ]
    # "  new YORK " is New York; Newark, with no coordinates, is not.
    assert pdb.meet(64511, 64501, nyc) == [ix("DE-CIX New York"), fac("Equinix NY9"), fac("Telx Broad Street")]
    assert pdb.meet(64513, 64501, nyc) == []
    assert pdb.meet(64514, 64501, METROS["ams"]) == [ix("AMS-IX"), fac("Equinix AM7"), fac("Nikhef")]


def test_a_metro_is_matched_by_city_or_distance_to_its_centre() -> None:
    document = {
        "net": [{"id": 1, "asn": 64510, "name": "A", "policy_general": "Open"}],
        "ix": [{"id": 1, "name": "Paris IX", "city": "Amsterdam ", "country": "NL"}],  # city decides for an IX
        "netixlan": [{"net_id": 1, "ix_id": 1, "asn": 64510}],
        "fac": [
            {"id": 1, "name": "Near", "city": "Schiphol", "latitude": 52.31, "longitude": 4.76},  # ~12 km
            {"id": 2, "name": "Far", "city": "Rotterdam", "latitude": 51.92, "longitude": 4.48},  # ~58 km
        ],
        "netfac": [{"net_id": 1, "fac_id": 1}, {"net_id": 1, "fac_id": 2}],
    }
    pdb = PeeringDb.from_data(document, source="inline")
    assert pdb.meet(64510, OUR_ASN, METROS["ams"]) == [ix("Paris IX"), fac("Near")]
    assert pdb.meet(64510, OUR_ASN, METROS["nyc"]) == []
    assert pdb.policy(64510) == "Open"


def test_plain_lists_and_an_ixlan_table_that_maps_lans_to_exchanges() -> None:
    document = {
        "net": [{"id": 1, "asn": 64496, "name": "Us"}, {"id": 2, "asn": 64510, "name": "Them"}],
        "ix": {"data": [{"id": 5, "name": "AMS-IX", "city": "Amsterdam"}]},
        "ixlan": {"data": [{"id": 9, "ix_id": 5}]},
        "netixlan": [{"net_id": 1, "ixlan_id": 9, "asn": 64496}, {"net_id": 2, "ixlan_id": 9, "asn": 64510}],
        "fac": [],
        "netfac": {"data": []},
    }
    pdb = PeeringDb.from_data(document, source="inline")
    assert pdb.meet(64510, 64496, METROS["ams"]) == [ix("AMS-IX")]
    assert pdb.policy(64510) is None  # PeeringDB always has one; a hand-made file may not


def bad(path: str, value: Any) -> dict[str, Any]:
    """The fixture with the value at ``path`` ("net.3.asn") replaced (or, for None, removed)."""
    document = copy.deepcopy(DOCUMENT)
    *parents, last = path.split(".")
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else (node[part]["data"] if part in DOCUMENT else node[part])
    key: Any = int(last) if isinstance(node, list) else last
    if value is None:
        del node[key]
    else:
        node[key] = value
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (bad("net.3.asn", "64512"), r"pdb\.json: net\[3\]\.asn: Input should be a valid integer"),
        (bad("net.3.asn", 0), r"pdb\.json: net\[3\]\.asn: Input should be greater than or equal to 1"),
        (bad("net.3.asn", 2**32), r"net\[3\]\.asn: Input should be less than or equal to 4294967295"),
        (bad("net.2.policy_general", "Maybe"), r"net\[2\]\.policy_general: Input should be 'Open', 'Selective'"),
        (bad("net.1.name", None), r"net\[1\]\.name: missing; this field is required"),
        (bad("net.1.id", True), r"net\[1\]\.id: Input should be a valid integer"),
        (bad("net.4.asn", 64510), r"net\[4\]\.asn: AS64510 again \(first at net\[1\]\)"),
        (bad("ix.0.name", 7), r"ix\[0\]\.name: Input should be a valid string"),
        (bad("fac.2.latitude", 91.5), r"fac\[2\]\.latitude: Input should be less than or equal to 90"),
        (bad("fac.2.longitude", "east"), r"fac\[2\]\.longitude: Input should be a valid number"),
        (bad("netixlan.7.ixlan_id", None), r"netixlan\[7\]: neither ix_id nor ixlan_id"),
        (bad("netfac.0", "10"), r"netfac\[0\]: Input should be a valid dictionary"),
        (bad("fac", None), r'pdb\.json: fac: missing; expected a list or \{"data": \[...\]\}'),
        ({**DOCUMENT, "ix": {"data": {"id": 1}}}, r'pdb\.json: ix: expected a list or \{"data": \[...\]\}, not dict'),
        ({**DOCUMENT, "netfac": None}, r"netfac: expected a list .*, not null"),
        ([DOCUMENT], r"pdb\.json: expected an object with net, ix, netixlan, fac, netfac, not list"),
    ],
)
def test_wrong_shapes_name_the_file_and_object(tmp_path: Path, document: Any, message: str) -> None:
    path = tmp_path / "pdb.json"
    path.write_text(json.dumps(document))
    with pytest.raises(PeeringDbError, match=message) as caught:
        PeeringDb.load(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_unreadable_and_not_json(tmp_path: Path) -> None:
    with pytest.raises(PeeringDbError, match=r"absent\.json: cannot read"):
        PeeringDb.load(tmp_path / "absent.json")
    (tmp_path / "pdb.json").write_bytes(b'{"net": [')
    with pytest.raises(PeeringDbError, match=r"pdb\.json: not JSON"):
        PeeringDb.load(tmp_path / "pdb.json")
    (tmp_path / "pdb.json").write_bytes(b"\xff\xfe")
    with pytest.raises(PeeringDbError, match=r"pdb\.json: not JSON"):
        PeeringDb.load(tmp_path / "pdb.json")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_json_in_any_place_is_a_peeringdb_error_or_reads(data: st.DataObject) -> None:
    """Replace one value anywhere in the fixture (or the whole of it) with any JSON: it reads, or it is refused
    with PeeringDbError; nothing else escapes, and what reads answers every question."""
    document: Any = copy.deepcopy(DOCUMENT)
    node = document
    for _ in range(data.draw(st.integers(0, 5), label="depth")):
        keys: list[Any] = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys), label="key")
        if not isinstance(node[key], dict | list) or data.draw(st.booleans(), label="replace here"):
            node[key] = data.draw(JSON, label="value")
            break
        node = node[key]
    else:
        document = data.draw(st.one_of(st.just(document), JSON), label="document")
    try:
        pdb = PeeringDb.from_data(document, source="pdb.json")
    except PeeringDbError as error:
        assert str(error).startswith("pdb.json: ")
        return
    for metro in METROS.values():
        for asn in (64496, 64510, 64511, 64514):
            assert all(isinstance(m, Meet) for m in pdb.meet(asn, OUR_ASN, metro))
            assert pdb.name(asn) is None or isinstance(pdb.policy(asn), str | None)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), JSON))
def test_any_file_is_a_peeringdb_error_or_reads(tmp_path: Path, text: bytes) -> None:
    path = tmp_path / "pdb.json"
    path.write_bytes(text)
    try:
        PeeringDb.load(path)
    except PeeringDbError:
        pass


def test_metros_are_the_fleets() -> None:
    # The fixture is written around the small fleet's metros: a change there should be seen here first.
    assert {c: (m.name, m.latitude, m.longitude) for c, m in METROS.items() if c in ("nyc", "ams")} == {
        "nyc": ("New York", 40.71, -74.01),
        "ams": ("Amsterdam", 52.37, 4.90),
    }
    assert isinstance(METROS["nyc"], Metro)
