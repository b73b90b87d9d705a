"""A PoP's BGP speaker: ExaBGP driven through its process API, keeping each transit's routes equal to the
intents of `edgeplane.bgp`, with its status page. The service side of the network edge."""

from edgeplane.speaker._speaker import (
    ControlIntents,
    ExaBgp,
    FleetIntents,
    IntentSource,
    Speaker,
    SpeakerError,
    intent_from_json,
    status_app,
)

__all__ = [
    "ControlIntents",
    "ExaBgp",
    "FleetIntents",
    "IntentSource",
    "Speaker",
    "SpeakerError",
    "intent_from_json",
    "status_app",
]
