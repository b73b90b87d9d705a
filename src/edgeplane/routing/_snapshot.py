"""The versioned routing state a gateway acts on; the last good one keeps serving if the control plane is away."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeplane.routing._model import SiteState, SiteView


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    generated_at: float  # unix seconds at the control plane
    fleet_digest: str
    sites: Mapping[str, SiteView] = field(default_factory=dict)
    keys_version: int = 0  # gateways fetch the key table again when this moves

    def __repr__(self) -> str:
        serving = sum(1 for s in self.sites.values() if s.state is SiteState.SERVING)
        return f"<Snapshot v{self.version} [Sites: {serving} serving, {len(self.sites) - serving} not]>"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "generated_at": self.generated_at,
            "fleet_digest": self.fleet_digest,
            "keys_version": self.keys_version,
            "sites": {
                code: {
                    "state": site.state.value,
                    "models": sorted(site.models),
                    "url": site.url,
                    "load": site.load,
                    "reason": site.reason,
                    "busy": dict(site.busy),
                    "busy_at": site.busy_at,
                    "replicas": dict(site.replicas),
                }
                for code, site in self.sites.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        sites = {
            code: SiteView(
                pop=code,
                state=SiteState(raw["state"]),
                models=frozenset(raw["models"]),
                url=raw.get("url"),
                load=float(raw.get("load", 0.0)),
                reason=str(raw.get("reason", "")),
                busy={str(m): int(n) for m, n in (raw.get("busy") or {}).items()},
                busy_at=float(raw.get("busy_at") or 0.0),
                replicas={str(m): int(n) for m, n in (raw.get("replicas") or {}).items()},
            )
            for code, raw in data["sites"].items()
        }
        return cls(
            int(data["version"]),
            float(data["generated_at"]),
            str(data["fleet_digest"]),
            sites,
            int(data.get("keys_version", 0)),
        )
