"""Every route of the control plane and of a site agent, fuzzed over real HTTP against a running fleet: JSON of
the right top-level shape with the bodies' own field names and arbitrary values, with and without the admin
token. Only documented answers (2xx, 4xx) come back, never a 500, and afterwards the fleet still serves."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from edgeplane.control import _bodies as bodies
from edgeplane.fleet import load_fleet
from tests._time import wait_for
from tests.conftest import OPEN_CLIENTS, SMALL_FLEET, RunningFleet, start_fleet, stop_fleet

pytestmark = pytest.mark.slow

TOKEN = "fuzz-admin-token"
LAYOUT = load_fleet(SMALL_FLEET)
POPS = [p.code for p in LAYOUT.pops]
METROS = [m.code for m in LAYOUT.metros]
MODELS = [m.name for m in LAYOUT.models]
DOCUMENTED = {200, 201, 202, 400, 401, 403, 404, 405, 409, 413, 415, 421}
# Faults that take an agent off the network would make later relays answer 502 (the agent is unreachable,
# as documented); the fuzz leaves them out and keeps to faults the fleet serves through.
FAULTS = ["stall-first-token", "cut-stream", "slow", "error-200", "http-429", "http-503", "nope", ""]

codes = st.sampled_from([*POPS, *METROS, *MODELS, "nyc1-u1", "metro", "pop", "unit", "prepend-1", "none"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | codes
    | st.sampled_from(FAULTS)
)
keys = st.text(max_size=6) | codes
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=8
)


def shaped(model: type[BaseModel], overrides: dict[str, Any] | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the body's own field names (some of them), arbitrary values and a stray key now and then."""
    fields = {name: values for name in model.model_fields} | (overrides or {})
    return st.fixed_dictionaries({}, optional={**fields, "extra": values})


# Drills on a real metro, and unit moves on a real unit, could leave the fleet drained for as long as a random
# duration says, or in a state it cannot leave: their targets are drawn where none exists.
unknown = st.text(min_size=1, max_size=8).map(lambda t: "x-" + t)
POSTS: list[tuple[str, st.SearchStrategy[dict[str, Any]]]] = [
    ("/api/drains", shaped(bodies.DrainBody)),
    ("/api/agents/{pop}/report", shaped(bodies.AgentReport)),
    ("/api/gateways/report", shaped(bodies.GatewayReport)),
    ("/api/keys", shaped(bodies.KeyBody)),
    ("/api/leases", shaped(bodies.LeaseBody)),
    ("/api/drills", shaped(bodies.DrillBody, {"metro": unknown})),
    ("/api/faults", shaped(bodies.FaultBody, {"fault": st.sampled_from(FAULTS) | values})),
    ("/api/placement", shaped(bodies.PlacementBody)),
    ("/api/bgp/actions", shaped(bodies.BgpActionBody)),
    ("/api/units", shaped(bodies.UnitOrderBody)),
    ("/api/units/x-{pop}/state", shaped(bodies.UnitStateBody)),
    ("/api/plan/scenarios", shaped(bodies.ScenariosBody)),
]
OTHERS = [
    ("DELETE", "/api/drains/metro/{code}"),
    ("DELETE", "/api/drains/{code}/{code}"),
    ("DELETE", "/api/keys/{code}"),
    ("DELETE", "/api/faults/{pop}"),
    ("GET", "/api/status"),
    ("GET", "/api/audit"),
    ("GET", "/api/route?client={code}&model={code}&prompt_tokens={code}"),
    ("GET", "/api/drills/{code}?wait={code}"),
    ("GET", "/api/demand?window={code}"),
    ("GET", "/api/snapshot?after={code}&wait=0"),
    ("GET", "/api/bgp/intents?pop={pop}&after={code}&wait=0"),
    ("GET", "/api/units/{code}"),
]
tokens = st.sampled_from([None, TOKEN, "wrong", f"Basic {TOKEN}"])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    argv = [sys.executable, "-m", "edgeplane", "up", "--fleet", str(SMALL_FLEET), "--time-scale", "0.05"]
    running = start_fleet(
        argv, tmp_path_factory.mktemp("fuzz-api"), fleet_path=SMALL_FLEET, backend="emulator",
        env={"EDGEPLANE_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip
    yield running
    stop_fleet(running)


def send(url: str, method: str, body: Any, token: str | None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", token if token.startswith("Basic") else f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        error.close()
        return error.code, json.loads(raw)


def fill(template: str, pick: st.DataObject) -> str:
    out = template
    while "{pop}" in out or "{code}" in out:
        name = "{pop}" if "{pop}" in out else "{code}"
        value = pick.draw(st.sampled_from(POPS) if name == "{pop}" else codes | st.text(max_size=6))
        out = out.replace(name, urllib.request.quote(str(value), safe=""), 1)
    return out


def check(status: int, answer: Any) -> None:
    assert status in DOCUMENTED, (status, answer)
    if status >= 400:
        assert answer["error"]["message"] and answer["error"]["type"], answer


def agent_urls(fleet: RunningFleet) -> list[str]:
    status = send(fleet.control_url + "/api/status", "GET", None, TOKEN)[1]
    return [p["url"] for p in status["pops"] if p["url"]]


def test_the_control_plane_and_the_agents_answer_fuzz_with_documented_codes_and_the_fleet_serves(
    fleet: RunningFleet,
) -> None:
    agents = agent_urls(fleet)
    assert len(agents) == len(POPS)

    @settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data(), tokens)
    def control_posts(pick: st.DataObject, token: str | None) -> None:
        template, strategy = pick.draw(st.sampled_from(POSTS))
        body = pick.draw(strategy | values)
        check(*send(fleet.control_url + fill(template, pick), "POST", body, token))

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data(), tokens)
    def control_others(pick: st.DataObject, token: str | None) -> None:
        method, template = pick.draw(st.sampled_from(OTHERS))
        check(*send(fleet.control_url + fill(template, pick), method, None, token))

    fault = shaped(bodies.FaultBody, {"fault": st.sampled_from(FAULTS) | values})
    inference = st.fixed_dictionaries(
        {}, optional={"model": st.sampled_from(MODELS) | values, "messages": values, "prompt": values,
                      "stream": values, "max_tokens": values, "tools": values, "extra": values},
    )  # fmt: skip

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data(), tokens)
    def agent_routes(pick: st.DataObject, token: str | None) -> None:
        url = pick.draw(st.sampled_from(agents))
        route = pick.draw(st.sampled_from(["POST /api/faults", "DELETE /api/faults", "POST /v1/chat/completions",
                                            "POST /v1/completions", "GET /api/state", "GET /nope"]))  # fmt: skip
        method, path = route.split()
        body = pick.draw(fault | values) if path == "/api/faults" else pick.draw(inference)
        status, answer = send(url + path, method, body if method == "POST" else None, token)
        if path.startswith("/v1/") and status in (429, 503) and answer["error"]["message"]:
            return  # a fault the fuzz set answers for the site, as documented for the emulator
        check(status, answer)

    control_posts()
    control_others()
    agent_routes()

    # Afterwards: what the fuzz changed on purpose is undone, and the fleet serves every metro.
    for pop in POPS:
        fleet.cli("fault", "clear", pop, check=False)
    for drain in send(fleet.control_url + "/api/drains", "GET", None, TOKEN)[1]["drains"]:
        send(fleet.control_url + f"/api/drains/{drain['kind']}/{drain['code']}", "DELETE", None, TOKEN)
    placement = [{"model": p.model, "pop": p.pop, "replicas": p.replicas} for p in LAYOUT.placement]
    assert send(fleet.control_url + "/api/placement", "POST", {"placement": placement, "force": True}, TOKEN)[0] == 200
    from openai import OpenAI

    for metro, client in (("nyc", "198.18.0.9"), ("iad", "198.18.16.9"), ("ord", "198.18.32.9"),
                          ("ams", "198.18.48.9")):  # fmt: skip
        sdk = OpenAI(base_url=fleet.gateway_url + "/v1", api_key="x", max_retries=0,
                     default_headers={"X-Forwarded-For": client})  # fmt: skip
        OPEN_CLIENTS.append(sdk)

        def at_home(sdk: OpenAI = sdk, metro: str = metro) -> bool:
            answer = sdk.chat.completions.with_raw_response.create(
                model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=4
            )
            return answer.headers["x-edgeplane-metro"] == metro

        # Served at home again once every model is back where it was placed.
        wait_for(f"{metro} served at home again", at_home, timeout_seconds=60, every=0.2)
    status = send(fleet.control_url + "/api/status", "GET", None, TOKEN)[1]
    assert all(p["state"] == "serving" for p in status["pops"]), status["pops"]
