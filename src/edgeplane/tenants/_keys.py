"""API keys and what they allow: who (tenant), which models, where (residency), how much (limits)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KEY_PREFIX = "ep-"


def new_key() -> str:
    """A fresh secret key: shown once, stored only as its hash."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # Keys are 256 random bits, so a plain SHA-256 is as strong as a slow hash and costs a microsecond.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """A key as gateways see it: everything but the secret."""

    id: str
    tenant: str
    continent: str | None = None
    region: str | None = None
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens (prompt + completion) per minute
    models: frozenset[str] | None = None  # None: every model
    revoked: bool = False

    @property
    def pinned(self) -> str | None:
        if self.region:
            return f"region {self.region}"
        if self.continent:
            return f"continent {self.continent}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "continent": self.continent,
            "region": self.region,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "models": sorted(self.models) if self.models is not None else None,
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyPolicy:
        models = data.get("models")
        return cls(
            id=str(data["id"]),
            tenant=str(data["tenant"]),
            continent=data.get("continent"),
            region=data.get("region"),
            rpm=data.get("rpm"),
            tpm=data.get("tpm"),
            models=frozenset(models) if models is not None else None,
            revoked=bool(data.get("revoked", False)),
        )
