"""`edgeplane lab`: the plan checked anywhere; then, as root on Linux with BIRD 2, the lab for real on the small
fleet: every BGP session up, every metro's client answered through the official openai SDK from its own
namespace, a failed PoP's sessions gone within the hold time, and nothing left behind by SIGTERM."""

from __future__ import annotations

import ipaddress
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgeplane.bgp import client_router, igp_cost, next_hops
from edgeplane.fleet import Fleet, load_default_fleet, load_fleet
from edgeplane.lab import (
    HOLD_TIME_SECONDS,
    HOST_LINK,
    NETNS_KINDS,
    STATE_DIR,
    addresses,
    bird_config,
    fleet_networks,
    parse_protocols,
    plan_lab,
)
from tests._time import wait_for
from tests.conftest import ROOT, SMALL_FLEET, terminate

DOCUMENTATION = [
    ipaddress.ip_network(n) for n in ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]
EDGEPLANE = [sys.executable, "-m", "edgeplane"]


def fleets() -> list[Fleet]:
    return [load_fleet(SMALL_FLEET), load_default_fleet()]


@pytest.mark.parametrize("fleet", fleets(), ids=["small", "default"])
def test_the_plan_uses_documentation_space_and_takes_no_address_of_the_fleet(fleet: Fleet) -> None:
    plan = plan_lab(fleet)
    planned = fleet_networks(fleet)
    services = {ipaddress.ip_address(a) for a in plan.service_address_by_metro.values()}
    clients = {ipaddress.ip_address(c.address) for c in plan.clients}
    gateways = {ipaddress.ip_address(c.gateway) for c in plan.clients}
    hops = {ipaddress.ip_address(next_hops(p.id)[0]) for p in fleet.pops}
    seen: dict[tuple[str | None, str], int] = {}
    for netns, text in addresses(plan):
        address = ipaddress.ip_address(text)
        assert any(address in n for n in DOCUMENTATION), (netns, text)
        if address not in services | clients | gateways | hops:  # infrastructure: outside every fleet prefix
            assert not any(address in n for n in planned), (netns, text)
        seen[(netns, text)] = seen.get((netns, text), 0) + 1
    # An address appears once per namespace, except a PoP's next hop, which is on each of its transit links.
    assert {k for k, n in seen.items() if n > 1} <= {(p.netns, p.next_hop) for p in plan.pops}
    assert not (ipaddress.ip_network(plan.mgmt_network).overlaps(ipaddress.ip_network(plan.infra_network)))
    for link in plan.links:
        for end in (link.a, link.b):
            assert len(end.ifname) <= 15 and (end.netns is None) == (end.ifname == HOST_LINK)
    assert {c.metro for c in plan.clients} == {m.code for m in fleet.metros}
    for client in plan.clients:
        assert client.router == client_router(fleet, client.metro).name
    assert all(len(p.service_addresses) == len(fleet.metros) for p in plan.pops)  # anycast: every metro's


def test_bird_runs_the_transit_model_costs_and_honours_graceful_shutdown() -> None:
    fleet = load_default_fleet()
    plan = plan_lab(fleet)
    router = next(r for r in plan.routers if r.metro == "lon")
    config = bird_config(router, fleet_asn=fleet.asn, log_path="/dev/null")
    by_name = {r.name: r for r in plan.routers}
    for peer in router.peers:
        cost = igp_cost(fleet, router.metro, by_name[peer.name].metro)
        assert f'interface "{peer.ifname}" {{ type ptp; cost {cost};' in config
        assert f"neighbor {peer.loopback} as {router.asn};" in config
    assert "next hop self" in config and "(65535, 0) ~ bgp_community then bgp_local_pref = 0" in config
    assert f"hold time {HOLD_TIME_SECONDS};" in config
    for pop in router.pops:
        assert f"neighbor {pop.neighbor} as {fleet.asn};" in config


def test_sessions_are_read_from_birdc_show_protocols() -> None:
    plan = plan_lab(load_fleet(SMALL_FLEET))
    router = next(r for r in plan.routers if r.name == "transit-a-nyc")
    text = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     07:41:02.512
transit_igp OSPF      master4    up     07:41:02.512  Running
pop_nyc1   BGP        ---        up     07:41:09.101  Established
ibgp_transit_a_iad BGP        ---        start  07:41:02.512  Active        Socket: Connection refused
ibgp_transit_a_ord BGP        ---        start  2024-01-02    Connect
"""
    sessions = {s.peer: s for s in parse_protocols(router, text)}
    assert sessions["nyc1"].up and sessions["nyc1"].kind == "pop"
    assert not sessions["transit-a-iad"].up and sessions["transit-a-iad"].info.startswith("Active")
    assert sessions["transit-a-ord"].info == "Connect"


# -- the lab for real -------------------------------------------------------------------------------------------


def _missing() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the lab needs root (it makes network namespaces and links)"
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return "the lab needs pyroute2 (the `lab` extra; scripts/install installs it)"
    from edgeplane.lab import LabError, find_bird

    try:
        find_bird()
    except LabError as error:
        return str(error)
    return None


def require_lab() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") and os.geteuid() == 0 and sys.platform.startswith("linux"):
            pytest.fail(reason)
        pytest.skip(reason)


def lab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGEPLANE, "lab", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def status() -> dict[str, Any]:
    done = lab("status", "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def left_behind() -> list[str]:
    names = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    mine = [n for n in names if any(n == k or (k.endswith("-") and n.startswith(k)) for k in NETNS_KINDS)]
    link = subprocess.run(["ip", "-o", "link", "show", HOST_LINK], capture_output=True, text=True)
    return mine + ([HOST_LINK] if link.returncode == 0 else []) + ([str(STATE_DIR)] if STATE_DIR.exists() else [])


def read_line(process: subprocess.Popen[str], timeout_seconds: float, errors: Path) -> str:
    """One line of the process's stdout, or AssertionError with its stderr when none comes in time."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=0.5):
                return process.stdout.readline()
    raise AssertionError(
        f"lab up was not ready in {timeout_seconds:g} s (exit {process.poll()}):\n{errors.read_text()[-3000:]}"
    )


# The official SDK from a client's namespace (OPENAI_BASE_URL and OPENAI_API_KEY come from `lab exec`): the
# headers say where the request was served.
ASK = """
import json, openai
client = openai.OpenAI(max_retries=0, timeout=10)
raw = client.chat.completions.with_raw_response.create(
    model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
answer = raw.parse()
print(json.dumps({"headers": {k: v for k, v in raw.headers.items() if k.startswith("x-edgeplane")},
                  "content": answer.choices[0].message.content}))
client.close()
"""


def ask(metro: str) -> dict[str, Any] | None:
    done = lab("exec", metro, "--", sys.executable, "-c", ASK, timeout=30)
    if done.returncode != 0:
        return None
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def answered(metro: str, timeout_seconds: float = 60) -> dict[str, Any]:
    """The first answer a client of ``metro`` gets, asking again until one comes."""
    answers: list[dict[str, Any] | None] = []
    wait_for(f"{metro}'s client answered", lambda: answers.append(ask(metro)) or answers[-1], timeout_seconds, 0.5)
    answer = answers[-1]
    assert answer is not None
    return answer


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_lab_serves_every_metro_through_bgp_and_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    require_lab()
    assert lab("down").returncode == 0  # whatever an earlier run left (under the fleet lock: no one else's lab)
    fleet = load_fleet(SMALL_FLEET)
    argv = [*EDGEPLANE, "lab", "up", "--fleet", str(SMALL_FLEET), "--json-ready", "--graceful-shutdown-seconds", "1"]
    errors = tmp_path / "lab-up.stderr"
    with errors.open("w") as stderr:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    pids: list[int] = []
    try:
        ready = json.loads(read_line(process, 150, errors))
        assert {m["code"] for m in ready["metros"]} == {m.code for m in fleet.metros}
        assert all(s["up"] for s in ready["sessions"]) and ready["sessions"], ready["sessions"]
        state = json.loads((STATE_DIR / "state.json").read_text())
        pids = [p["pid"] for p in state["processes"]]

        # Every metro's clients reach their metro's service address; BGP brings them to a PoP of their metro
        # (each has one), whose gateway serves them there.
        for metro in ready["metros"]:
            site = fleet.pops_in(metro["code"])[0].code
            assert metro["service_url"].endswith(":8080/v1")
            headers = answered(metro["code"])["headers"]
            assert headers["x-edgeplane-site"] == site and headers["x-edgeplane-scope"] == "metro", headers
            if "x-edgeplane-ingress" in headers:  # `pop run`'s gateways say where the connection entered
                assert headers["x-edgeplane-ingress"] == site, headers

        # `sudo` leaves a bare PATH: `lab exec` puts edgeplane's own Python first, so `python -c "import openai"`
        # (the README's example) finds the SDK.
        bare = {**os.environ, "PATH": "/usr/bin:/bin"}
        script = "import openai, sys; print(sys.prefix)"
        found = subprocess.run(
            [*EDGEPLANE, "lab", "exec", ready["metros"][0]["code"], "--", "python", "-c", script],
            capture_output=True, text=True, cwd=ROOT, timeout=60, env=bare,
        )  # fmt: skip
        assert found.returncode == 0 and found.stdout.strip() == sys.prefix, found.stderr

        # A failed PoP: every process in its namespace killed; its transits' sessions to it drop within the hold
        # time (ExaBGP's socket closes with it, so at once here).
        failed = lab("fail", "iad1")
        assert failed.returncode == 0 and "killed" in failed.stdout, failed.stderr
        started = time.monotonic()
        wait_for(
            "iad1's BGP sessions down",
            lambda: not any(s["up"] for s in status()["sessions"] if s["peer"] == "iad1"),
            HOLD_TIME_SECONDS + 5,
            every=0.2,
        )
        print(f"iad1's sessions went down {time.monotonic() - started:.1f} s after lab fail")
        # Its clients fall to the us-east aggregate, which nyc1 announces too: they are answered in New York.
        moved = answered("iad")
        assert moved["headers"]["x-edgeplane-site"] != "iad1", moved
    finally:
        stopped = terminate(process, 60)
        if process.stdout is not None:
            process.stdout.close()
    assert stopped, "lab up ignored SIGTERM"
    assert process.returncode == 0, errors.read_text()[-3000:]
    assert left_behind() == []
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
    assert lab("down").stdout.strip() == "no lab to remove"


def test_lab_down_with_nothing_to_remove_is_fine() -> None:
    require_lab()
    if left_behind():
        pytest.skip("a lab is running here")
    for _ in range(2):
        done = lab("down")
        assert (done.returncode, done.stdout.strip()) == (0, "no lab to remove"), done.stderr
