"""The whole edge as a user meets it: `edgeplane up`, the official openai SDK, drains, the CLI."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import openai
import pytest
from openai import OpenAI

from edgeplane.fleet import Fleet, load_fleet
from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, RunningFleet

pytestmark = pytest.mark.slow


@pytest.fixture(params=["emulator", "llamacpp"], scope="module")
def fleet(request: pytest.FixtureRequest) -> RunningFleet:
    running: RunningFleet = request.getfixturevalue(f"{request.param}_fleet")
    return running


@pytest.fixture(scope="module")
def layout(fleet: RunningFleet) -> Fleet:
    return load_fleet(fleet.fleet_path)


def client_address(fleet: Fleet, metro: str, family: int = 4) -> str:
    for prefix in fleet.metro_by_code[metro].client_prefixes:
        network = ipaddress.ip_network(prefix)
        if network.version == family:
            return str(network.network_address + 7)
    raise AssertionError(f"{metro} has no IPv{family} prefix")


def sdk(running: RunningFleet, client: str) -> OpenAI:
    made = OpenAI(
        base_url=running.gateway_url + "/v1",
        api_key="not-needed-on-loopback",
        default_headers={"X-Forwarded-For": client},
        max_retries=0,
        timeout=60,
    )
    OPEN_CLIENTS.append(made)
    return made


# The tiny llama.cpp model samples random tokens, half of its vocabulary bytes of UTF-8 that may never complete
# a character: a few tokens can decode to nothing now and then. Sixteen make an empty answer vanishingly rare.
MAX_TOKENS = 16
# Nor may it end before its first token: the tiny model samples its end-of-sequence token (id 2) now and then
# (13% of 16-token answers end early, a few of them at once, with no text); OpenAI's logit_bias rules it out.
NO_EOS: Any = {"2": -100}


def chat(running: RunningFleet, client: str, model: str, *, stream: bool = False) -> tuple[dict[str, str], str, str]:
    """One chat completion; returns the edgeplane headers, the text and the finish reason."""
    messages: Any = [{"role": "user", "content": "Say hello from the edge."}]
    with sdk(running, client) as api:
        raw = api.chat.completions.with_raw_response.create(
            model=model, messages=messages, max_tokens=MAX_TOKENS, stream=stream, logit_bias=NO_EOS
        )
        headers = {k: v for k, v in raw.headers.items() if k.startswith("x-edgeplane-")}
        if not stream:
            completion = raw.parse()
            return headers, completion.choices[0].message.content or "", completion.choices[0].finish_reason
        text, finish = "", ""
        for chunk in raw.parse():
            for choice in chunk.choices:
                text += choice.delta.content or ""
                finish = choice.finish_reason or finish
        return headers, text, finish


def served(running: RunningFleet, client: str, model: str, scope: str, timeout_seconds: float = 2.0) -> dict[str, str]:
    """Headers of the first answer served at ``scope``; drains must take effect within two seconds."""
    answers: list[dict[str, str]] = []

    def at_scope() -> bool:
        answers.append(chat(running, client, model)[0])
        return answers[-1]["x-edgeplane-scope"] == scope

    wait_for(f"{client}'s {model} served at {scope} scope", at_scope, timeout_seconds, every=0.05)
    return answers[-1]


def model_everywhere(fleet: Fleet) -> str:
    pops = {p.code for p in fleet.pops}
    return next(m.name for m in fleet.models if {e.pop for e in fleet.placement if e.model == m.name} == pops)


def test_every_metro_serves_its_own_clients(fleet: RunningFleet, layout: Fleet) -> None:
    model = model_everywhere(layout)
    for metro in layout.metros:
        for family in (4, 6):
            client = client_address(layout, metro.code, family)
            for stream in (False, True):
                headers, text, finish = chat(fleet, client, model, stream=stream)
                assert headers["x-edgeplane-metro"] == metro.code, (client, stream)
                assert headers["x-edgeplane-scope"] == "metro"
                assert headers["x-edgeplane-site"] in {p.code for p in layout.pops_in(metro.code)}
                assert headers["x-edgeplane-attempts"] == "1"
                assert text and finish in ("stop", "length")


def test_completions_endpoint_and_models(fleet: RunningFleet, layout: Fleet) -> None:
    model = model_everywhere(layout)
    api = sdk(fleet, client_address(layout, layout.metros[0].code))
    raw = api.completions.with_raw_response.create(
        model=model, prompt="The edge is", max_tokens=MAX_TOKENS, logit_bias=NO_EOS
    )
    assert raw.headers["x-edgeplane-scope"] == "metro"
    assert raw.parse().choices[0].text
    streamed = "".join(
        c.choices[0].text
        for c in api.completions.create(model=model, prompt="Hi", max_tokens=MAX_TOKENS, stream=True, logit_bias=NO_EOS)
        if c.choices
    )
    assert streamed
    assert {m.id for m in api.models.list()} == {m.name for m in layout.models}


def _region_with_two_metros(layout: Fleet) -> list[str]:
    for region in layout.regions:
        metros = [m.code for m in layout.metros if m.region == region.code]
        others = [
            m
            for m in layout.metros
            if m.region != region.code and layout.region_of(m.code).continent == region.continent
        ]
        if len(metros) >= 2 and others:
            return metros
    raise AssertionError("the fleet needs a region with two metros and a sibling region")


def test_drain_moves_clients_one_scope_out_and_undrain_restores(fleet: RunningFleet, layout: Fleet) -> None:
    model = model_everywhere(layout)
    metros = _region_with_two_metros(layout)
    x = metros[0]
    client = client_address(layout, x)
    assert served(fleet, client, model, "metro")["x-edgeplane-metro"] == x
    try:
        fleet.cli("drain", "metro", x)
        headers = served(fleet, client, model, "region")
        assert headers["x-edgeplane-scope"] == "region"
        assert headers["x-edgeplane-metro"] in metros[1:]
        _, _, finish = chat(fleet, client, model, stream=True)
        assert finish in ("stop", "length")

        for other in metros[1:]:
            fleet.cli("drain", "metro", other)
        headers = served(fleet, client, model, "continent")
        assert headers["x-edgeplane-scope"] == "continent"
        assert layout.continent_of(headers["x-edgeplane-metro"]).code == layout.continent_of(x).code
        assert headers["x-edgeplane-metro"] not in metros
    finally:
        for metro in metros:
            fleet.cli("undrain", "metro", metro)
    headers = served(fleet, client, model, "metro")
    assert (headers["x-edgeplane-scope"], headers["x-edgeplane-metro"]) == ("metro", x)


def test_status_route_and_fleet_show(fleet: RunningFleet, layout: Fleet) -> None:
    status = json.loads(fleet.cli("status", "--json").stdout)
    assert {m["code"] for m in status["metros"]} == {m.code for m in layout.metros}
    for pop in status["pops"]:
        assert {"code", "id", "metro", "state", "pid"} <= pop.keys()
        assert pop["state"] == "serving" and isinstance(pop["pid"], int)

    x = layout.metros[0].code
    model = model_everywhere(layout)
    fleet.cli("drain", "metro", x)
    try:
        decision = json.loads(
            fleet.cli("route", "--client", client_address(layout, x), "--model", model, "--json").stdout
        )
        assert decision["client_metro"] == x and decision["scope"] != "metro"
        reasons = {p["pop"]: p["reason"] for p in decision["passed_over"]}
        assert all("drained" in reasons[p.code] for p in layout.pops_in(x))
        human = fleet.cli("route", "--client", client_address(layout, x), "--model", model).stdout
        assert "passed over" in human and "drained" in human
    finally:
        fleet.cli("undrain", "metro", x)

    args = ["fleet", "show", "--json"] + (["--fleet", str(fleet.fleet_path)] if fleet.fleet_path else [])
    shown = json.loads(fleet.cli(*args).stdout)
    assert shown["asn"] == layout.asn
    metro = shown["metros"][0]
    assert {"code", "id", "name", "region", "continent", "client_prefixes", "pops"} <= metro.keys()
    assert metro["region"] == layout.metros[0].region
    assert {"code", "id"} <= metro["pops"][0].keys()
    assert {m["name"] for m in shown["models"]} == {m.name for m in layout.models}


def test_bad_requests_get_openai_errors(fleet: RunningFleet, layout: Fleet) -> None:
    api = sdk(fleet, client_address(layout, layout.metros[0].code))
    model = model_everywhere(layout)
    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        api.chat.completions.create(model=model, messages=[])
    assert bad.value.status_code == 400
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=-1)
    with pytest.raises(openai.BadRequestError):
        api.post("/chat/completions", content=b"{not json", cast_to=object)
    with pytest.raises(openai.APIStatusError) as large:
        api.chat.completions.create(model=model, messages=[{"role": "user", "content": "x" * (5 * 1024 * 1024)}])
    assert large.value.status_code == 413
    assert large.value.body and "message" in large.value.body  # type: ignore[operator]


def test_nothing_can_serve_gets_503(fleet: RunningFleet, layout: Fleet) -> None:
    model = model_everywhere(layout)
    client = client_address(layout, layout.metros[0].code)
    try:
        for metro in layout.metros:
            fleet.cli("drain", "metro", metro.code, "--force")

        def refused() -> bool:
            try:
                chat(fleet, client, model)
            except openai.APIStatusError as error:
                assert error.status_code == 503
                assert error.response.json()["error"]["code"] == "no_site_available"
                return True
            return False

        wait_for("the drains take effect", refused, timeout_seconds=2.0, every=0)
    finally:
        for metro in layout.metros:
            fleet.cli("undrain", "metro", metro.code)
    served(fleet, client, model, "metro")


def test_gateway_health_and_metrics(fleet: RunningFleet) -> None:
    import urllib.request

    with urllib.request.urlopen(fleet.gateway_url + "/healthz") as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["snapshot_version"] >= 1
    assert health["snapshot_age_seconds"] is not None
    with urllib.request.urlopen(fleet.gateway_url + "/metrics") as response:
        text = response.read().decode()
    assert "edgeplane_gateway_requests_total" in text
