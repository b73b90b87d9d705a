"""Routing is pure: the scope ladder, drains and downs, and the explanation, with no process running."""

from __future__ import annotations

from dataclasses import replace

import pytest

from edgeplane.fleet import Fleet, load_default_fleet
from edgeplane.routing import Router, Scope, SiteState, SiteView

SMALL = "llama-3.1-8b-instruct"
LARGE = "llama-3.1-405b-instruct"


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return load_default_fleet()


def views(fleet: Fleet, **states: SiteState) -> dict[str, SiteView]:
    out = {}
    for pop in fleet.pops:
        out[pop.code] = SiteView(
            pop.code,
            states.get(pop.code, SiteState.SERVING),
            frozenset(fleet.models_at(pop.code)),
            f"http://127.0.0.1:1/{pop.code}",
        )
    return out


def test_longest_prefix_match_for_both_families(fleet: Fleet) -> None:
    router = Router(fleet)
    assert router.locate("198.18.96.200")[0] == "lon"
    assert router.locate("2001:db8:700::42")[0] == "lon"
    metro, how = router.locate("203.0.113.9")
    assert metro == router.home_metro and "home" in how
    assert Router(fleet, home_metro="fra").locate("not an address")[0] == "fra"


def test_clients_are_served_in_their_own_metro(fleet: Fleet) -> None:
    router = Router(fleet)
    for metro in fleet.metros:
        for prefix in metro.client_prefixes:
            client = prefix.split("/")[0]
            decision = router.decide(client, SMALL, views(fleet))
            assert decision.scope is Scope.METRO
            assert decision.chosen is not None and decision.chosen.metro == metro.code


def test_scope_ladder_around_drains(fleet: Fleet) -> None:
    router = Router(fleet)
    client = "198.18.0.10"  # nyc, in us-east with iad
    drained = {p.code: SiteState.DRAINED for p in fleet.pops_in("nyc")}
    decision = router.decide(client, SMALL, views(fleet, **drained))
    assert (decision.scope, decision.chosen and decision.chosen.metro) == (Scope.REGION, "iad")
    assert {p.pop for p in decision.passed_over if p.scope is Scope.METRO} == {"nyc1", "nyc2"}

    drained["iad1"] = SiteState.DOWN
    decision = router.decide(client, SMALL, views(fleet, **drained))
    assert decision.scope is Scope.CONTINENT
    assert decision.chosen is not None and fleet.continent_of(decision.chosen.metro).code == "na"
    # Candidates stay ordered: the whole continent before any other continent.
    scopes = [c.scope for c in decision.candidates]
    assert scopes == sorted(scopes)
    assert Scope.GLOBAL in scopes

    everything = {p.code: SiteState.DRAINED for p in fleet.pops}
    assert router.decide(client, SMALL, views(fleet, **everything)).chosen is None


def test_models_not_placed_push_outward_and_explain_why(fleet: Fleet) -> None:
    decision = Router(fleet).decide("198.18.96.1", LARGE, views(fleet))  # lon has no 405B
    assert decision.scope is Scope.REGION and decision.chosen is not None and decision.chosen.pop == "ams1"
    explanation = "\n".join(decision.explain())
    assert "lon1" in explanation and f"does not serve {LARGE}" in explanation
    data = decision.to_json()
    assert data["scope"] == "region" and data["pop"] == "ams1"
    assert data["passed_over"][0] == {
        "pop": "lon1",
        "metro": "lon",
        "scope": "metro",
        "reason": f"does not serve {LARGE}",
    }


def test_within_a_scope_the_lowest_predicted_ttft_wins(fleet: Fleet) -> None:
    router = Router(fleet)
    sites = views(fleet)
    decision = router.decide("198.18.0.1", SMALL, sites)
    first, second = decision.candidates[:2]
    assert {first.pop, second.pop} == {"nyc1", "nyc2"} and first.cost_ms <= second.cost_ms
    # nyc2 has H200s, so its prefill is faster; queue up nyc2 past its slots and nyc1 wins.
    assert first.pop == "nyc2"
    busy = dict(sites)
    busy["nyc2"] = replace(sites["nyc2"], busy={SMALL: 4 * 128 + 10})
    decision = router.decide("198.18.0.1", SMALL, busy)
    assert [c.pop for c in decision.candidates[:2]] == ["nyc1", "iad1"]
    assert decision.candidates[-1].pop == "nyc2" and decision.candidates[-1].full
    assert any(p.pop == "nyc2" and p.reason.startswith("full") for p in decision.passed_over)


def test_leaves_the_metro_only_when_the_slo_would_break(fleet: Fleet) -> None:
    router = Router(fleet)
    sites = views(fleet)
    client = "198.18.96.1"  # lon: one PoP, 4 replicas of the 8B model, 128 slots each
    slots = 4 * 128
    calm = dict(sites)
    calm["lon1"] = replace(sites["lon1"], busy={SMALL: slots - 1})  # busy, but a slot is free
    assert router.decide(client, SMALL, calm).scope is Scope.METRO
    # Past its slots lon1 is full: even a short predicted wait sends the request one scope out.
    queued = dict(sites)
    queued["lon1"] = replace(sites["lon1"], busy={SMALL: slots + 3})
    decision = router.decide(client, SMALL, queued, output_tokens=16)
    assert decision.scope is Scope.REGION and decision.chosen is not None and decision.chosen.pop == "ams1"
    # When every site would break the SLO (a huge prompt), the closest still serves, marked as such.
    decision = router.decide(client, SMALL, sites, prompt_tokens=2_000_000)
    assert decision.scope is Scope.METRO and not decision.candidates[0].within_slo
    explained = "\n".join(router.decide(client, SMALL, queued).explain())
    assert "lon1" in explained and "full" in explained
    assert "predicted time to first token" in explained


def test_the_gateways_own_in_flight_counts_are_fresher_than_the_snapshot(fleet: Fleet) -> None:
    router = Router(fleet)
    sites = views(fleet)
    decision = router.decide("198.18.96.1", SMALL, sites, local_busy={("lon1", SMALL): 4 * 128 + 1})
    assert decision.scope is Scope.REGION


def test_unreported_sites_are_passed_over(fleet: Fleet) -> None:
    sites = views(fleet)
    del sites["nyc1"]
    decision = Router(fleet).decide("198.18.0.1", SMALL, sites)
    assert decision.chosen is not None and decision.chosen.pop == "nyc2"
    assert any(p.pop == "nyc1" and "no state" in p.reason for p in decision.passed_over)
