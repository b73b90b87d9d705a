"""Routing (pure logic): client to metro, the scope ladder, site choice and its explanation."""

from edgeplane.routing._model import Candidate, Decision, PassedOver, Scope, SiteState, SiteView
from edgeplane.routing._router import DEFAULT_PROMPT_TOKENS, LOAD_PENALTY_MS, Router
from edgeplane.routing._snapshot import Snapshot

__all__ = [
    "DEFAULT_PROMPT_TOKENS",
    "LOAD_PENALTY_MS",
    "Candidate",
    "Decision",
    "PassedOver",
    "Router",
    "Scope",
    "SiteState",
    "SiteView",
    "Snapshot",
]
