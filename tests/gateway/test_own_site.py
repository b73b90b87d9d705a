"""A PoP's gateway serves at its own site first, while that site serves well; else the router's ladder stands."""

from __future__ import annotations

from edgeplane.fleet import load_fleet
from edgeplane.gateway._route import own_site_first
from edgeplane.routing import Decision, Router, SiteState, SiteView
from tests.conftest import SMALL_FLEET

FLEET = load_fleet(SMALL_FLEET)
ROUTER = Router(FLEET)
AMS_CLIENT = "198.18.48.7"


def sites(**changed: SiteView) -> dict[str, SiteView]:
    every = {
        p.code: SiteView(p.code, SiteState.SERVING, frozenset(FLEET.models_at(p.code)), f"http://{p.code}")
        for p in FLEET.pops
    }
    return every | changed


def order(decision: Decision) -> list[str]:
    return [c.pop for c in decision.candidates]


def test_the_own_site_comes_first_and_the_ladder_follows() -> None:
    views = sites()
    ladder = ROUTER.decide(AMS_CLIENT, "tiny-llama", views)
    assert order(ladder)[0] == "ams1"
    chosen = own_site_first(ladder, "nyc1", views)
    assert order(chosen) == ["nyc1", *(p for p in order(ladder) if p != "nyc1")]
    assert chosen.candidates[0].scope == ladder.candidates[order(ladder).index("nyc1")].scope  # still "global"
    assert own_site_first(ladder, "ams1", views) is ladder  # already first


def test_the_ladder_stands_when_the_own_site_cannot_serve_well() -> None:
    nyc = sites()["nyc1"]
    unchanged = {
        "degraded": sites(nyc1=SiteView("nyc1", SiteState.DEGRADED, nyc.models, nyc.url)),
        "drained": sites(nyc1=SiteView("nyc1", SiteState.DRAINED, nyc.models, nyc.url)),
        "full": sites(nyc1=SiteView("nyc1", SiteState.SERVING, nyc.models, nyc.url, busy={"tiny-llama": 4})),
        "without the model": sites(nyc1=SiteView("nyc1", SiteState.SERVING, frozenset({"tiny-chat"}), nyc.url)),
    }
    for why, views in unchanged.items():
        ladder = ROUTER.decide(AMS_CLIENT, "tiny-llama", views)
        assert order(own_site_first(ladder, "nyc1", views)) == order(ladder), why
        assert order(ladder)[0] == "ams1", why


def test_residency_holds_over_the_own_site() -> None:
    views = sites()
    within = ROUTER.metros_within(continent="eu")
    ladder = ROUTER.decide(AMS_CLIENT, "tiny-llama", views, within=within)
    assert order(own_site_first(ladder, "nyc1", views)) == order(ladder) == ["ams1"]
