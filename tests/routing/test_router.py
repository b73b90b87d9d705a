"""Routing is pure: the scope ladder, drains and downs, and the explanation, with no process running."""

from __future__ import annotations

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


def test_within_a_scope_rtt_and_load_order_sites(fleet: Fleet) -> None:
    router = Router(fleet)
    sites = views(fleet)
    decision = router.decide("198.18.0.1", SMALL, sites)
    assert [c.pop for c in decision.candidates[:2]] == ["nyc1", "nyc2"]
    busy = dict(sites)
    busy["nyc1"] = SiteView("nyc1", SiteState.SERVING, sites["nyc1"].models, sites["nyc1"].url, load=0.9)
    decision = router.decide("198.18.0.1", SMALL, busy)
    assert [c.pop for c in decision.candidates[:2]] == ["nyc2", "nyc1"]
    assert any(p.pop == "nyc1" and "costlier" in p.reason for p in decision.passed_over)


def test_unreported_sites_are_passed_over(fleet: Fleet) -> None:
    sites = views(fleet)
    del sites["nyc1"]
    decision = Router(fleet).decide("198.18.0.1", SMALL, sites)
    assert decision.chosen is not None and decision.chosen.pop == "nyc2"
    assert any(p.pop == "nyc1" and "no state" in p.reason for p in decision.passed_over)
