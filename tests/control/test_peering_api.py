"""The peering report on the control plane (`PUT`/`GET /api/peering/candidates`), against `edgeplane control run` as a
real process with an admin token: a report is kept as parsed with the time it came, refused naming the field when
its shape is wrong (413 when too large), never answered with a 500 whatever the body, and kept across a restart."""

from __future__ import annotations

import contextlib
import copy
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeplane.control.api.peering import MAX_REPORT_BYTES, PeeringReport
from tests.control import test_store_integrity as integrity
from tests.test_reports_peering import HOSTILE, sample_report

TOKEN = "peering-admin-token"
PATH = "/api/peering/candidates"
ANSWERS = {200, 400, 401, 413, 415}  # what a PUT may get: never a 500


class Control(integrity.Control):
    """`edgeplane control run` with an admin token, on a data directory that outlives it."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, env={"EDGEPLANE_ADMIN_TOKEN": TOKEN})


def send(
    url: str, method: str, path: str, body: bytes | None = None, *, token: str | None = TOKEN,
    content_type: str = "application/json", headers: dict[str, str] | None = None,
) -> tuple[int, Any]:  # fmt: skip
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers or {})
    if body is not None:
        request.add_header("Content-Type", content_type)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("X-Edgeplane-Actor", "peering-test")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def put(url: str, report: Any, **options: Any) -> tuple[int, Any]:
    return send(url, "PUT", PATH, json.dumps(report).encode(), **options)


def latest(url: str) -> dict[str, Any]:
    status, answer = send(url, "GET", PATH, token=None)  # reading needs no token
    assert status == 200, answer
    return dict(answer)


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Control]:
    data_dir = tmp_path_factory.mktemp("peering-api") / "data"
    data_dir.mkdir()
    running = Control(data_dir)
    yield running
    with contextlib.suppress(AssertionError):
        running.stop()


def test_a_published_report_is_read_back_as_parsed_with_the_time_it_came(control: Control) -> None:
    assert latest(control.url) == {"report": None, "received_at": None}
    report = sample_report()
    sent = copy.deepcopy(report)
    sent["from_a_newer_cli"] = {"anything": [1, 2]}  # keys the control plane does not know are left out
    sent["metros"][0]["candidates"][0]["rpki"] = "valid"
    before = time.time()
    status, answer = put(control.url, sent)
    after = time.time()
    assert status == 200, answer
    assert answer["metros"] == 3 and answer["candidates"] == 3
    kept = latest(control.url)
    assert before <= kept["received_at"] <= after and kept["received_at"] == answer["received_at"]
    assert kept["report"] == PeeringReport.model_validate(report).model_dump(mode="json")
    assert kept["report"]["metros"][0]["candidates"][0]["name"] == HOSTILE  # kept as text; faces escape it
    assert "from_a_newer_cli" not in kept["report"] and "rpki" not in kept["report"]["metros"][0]["candidates"][0]
    # A metro with no traffic comes as code, name and no rows: it is read back with the figures it lacks at zero.
    assert kept["report"]["metros"][2] == {
        "code": "ams", "name": "Amsterdam", "bins": 0, "transit_bytes": 0, "unrouted_bytes": 0, "transits": [],
        "candidates": [],
    }  # fmt: skip
    audit = send(control.url, "GET", "/api/audit?limit=5")[1]["audit"]
    assert [(a["who"], a["action"], a["outcome"]) for a in audit[:1]] == [("peering-test", "publish-peering", "ok")]


def test_a_wrong_report_is_refused_naming_the_field_and_the_last_one_stays(control: Control) -> None:
    assert put(control.url, sample_report())[0] == 200
    kept = latest(control.url)

    cases: list[tuple[list[str | int], Any, str]] = [
        (["metros", 0, "candidates", 0, "p95_mbps"], "fast", "metros.0.candidates.0.p95_mbps"),
        (["metros", 0, "candidates", 1, "asn"], -1, "metros.0.candidates.1.asn"),
        (["metros", 0, "candidates", 0, "meet", 0, "kind"], "pub", "metros.0.candidates.0.meet.0.kind"),
        (["metros", 1, "transits", 0, "price_per_mbps"], True, "metros.1.transits.0.price_per_mbps"),
        (["metros", 0, "candidates", 0, "share"], -0.5, "metros.0.candidates.0.share"),
        (["metros", 0, "code"], KeyError, "metros.0.code"),
        (["routes"], KeyError, "routes"),
        (["metros"], {"nyc": []}, "metros"),
    ]
    for path, value, field in cases:
        body = mutated(path, value)
        status, answer = send(control.url, "PUT", PATH, body)
        assert status == 400, (field, answer)
        assert answer["error"]["param"] == field and f"`{field}`" in answer["error"]["message"], answer
        assert answer["error"]["code"] == "invalid_body"
    for body in (
        b"",
        b"{",
        b"[]",
        b'"report"',
        b"null",
        b"{}",
        b'{"metros": [], "routes": {"source": "x", "prefixes": 1}, "bin_seconds": 1e400}',
        b'{"metros": [], "routes": {"source": "x", "prefixes": 1}, "bin_seconds": NaN}',
        b'{"metros": [], "routes": {"source": "x", "prefixes": 1}, "bin_seconds": Infinity}',
        mutated(["metros", 0, "candidates", 0, "asn"], 2**64),
        mutated(["metros", 0, "candidates", 0, "bytes"], 2**70),
    ):
        status, answer = send(control.url, "PUT", PATH, body)
        assert status == 400 and answer["error"]["message"], (body, answer)
    assert put(control.url, sample_report(), token=None)[0] == 401
    assert put(control.url, sample_report(), token="wrong")[0] == 401
    assert put(control.url, sample_report(), content_type="text/plain")[0] == 415
    # A page in a browser: even with the token (a page cannot have it, but the origin alone is refused).
    foreign = send(
        control.url, "PUT", PATH, json.dumps(sample_report()).encode(), headers={"Origin": "http://evil.example"}
    )
    assert foreign[0] == 403, foreign
    # A client that leaves half-way through its body.
    with socket.create_connection(("127.0.0.1", int(control.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(
            f"PUT {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 2000000\r\n\r\n".encode()
            + b'{"metros": [' * 5000
        )
    assert control.healthy()
    assert latest(control.url) == kept  # nothing refused replaced it


def mutated(path: list[str | int], value: Any) -> bytes:
    """The sample report's JSON with the value at ``path`` replaced (KeyError: removed)."""
    report: Any = sample_report()
    node = report
    for step in path[:-1]:
        node = node[step]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(report).encode()


def test_a_large_report_is_taken_and_one_past_the_limit_is_413(control: Control) -> None:
    report = sample_report()
    row = report["metros"][0]["candidates"][0]
    many = [{**row, "asn": 70_000 + n} for n in range(4000)]  # ~2.6 MB: past the 1 MiB of other bodies
    report["metros"][0]["candidates"] = many
    body = json.dumps(report).encode()
    assert 1024 * 1024 < len(body) < MAX_REPORT_BYTES
    status, answer = send(control.url, "PUT", PATH, body)
    assert status == 200 and answer["candidates"] == len(many) + 1, answer
    assert len(latest(control.url)["report"]["metros"][0]["candidates"]) == len(many)

    too_large = b'{"metros": [], "pad": "' + b"x" * MAX_REPORT_BYTES + b'"}'
    status, answer = send(control.url, "PUT", PATH, too_large)
    assert status == 413 and answer["error"]["code"] == "request_too_large", answer
    assert len(latest(control.url)["report"]["metros"][0]["candidates"]) == len(many)


# -- fuzz: whatever the body, a documented answer --------------------------------------------------------
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["ix", "facility", "nyc", "nyc1", HOSTILE, ""])
)  # fmt: skip
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip


def leaves(node: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))


PATHS = [p for p in leaves(sample_report()) if p]


@st.composite
def near_reports(draw: st.DrawFn) -> Any:
    """The sample report with a few of its values (a number, a name, a whole list) replaced or removed."""
    report: Any = sample_report()
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=3)):
        node = report
        try:
            for step in path[:-1]:
                node = node[step]
            if draw(st.booleans()) and isinstance(node, dict):
                del node[path[-1]]
            else:
                node[path[-1]] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change took this path away
    return report


def test_fuzzed_bodies_get_documented_answers_never_a_500(control: Control) -> None:
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(near_reports() | values, st.sampled_from([TOKEN, TOKEN, None, "wrong"]))
    def json_bodies(body: Any, token: str | None) -> None:
        status, answer = put(control.url, body, token=token)
        assert status in ANSWERS, (status, answer)
        if status != 200:
            assert answer["error"]["message"] and answer["error"]["type"], answer
        if status == 200:
            kept = latest(control.url)["report"]
            assert PeeringReport.model_validate(kept).model_dump(mode="json") == kept  # served as it was parsed

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    def raw_bodies(body: bytes) -> None:
        status, answer = send(control.url, "PUT", PATH, body)
        assert status in ANSWERS and status != 200, (status, answer)

    json_bodies()
    raw_bodies()
    assert control.healthy() and "Traceback" not in control.output()


def test_the_report_survives_a_restart_of_the_control_plane(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first = Control(data_dir)
    try:
        assert put(first.url, sample_report())[0] == 200
        kept = latest(first.url)
    finally:
        first.stop()
    again = Control(data_dir)
    try:
        assert latest(again.url) == kept
    finally:
        again.stop()
