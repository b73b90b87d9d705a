"""Tenants' API keys as the control plane keeps them: made (the secret shown once, stored hashed), revoked,
and published to gateways as a table of hashes whose version they follow."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from edgeplane.control._errors import UnknownTarget
from edgeplane.control._store import AuditRecord, Store, StoredKey
from edgeplane.fleet import Fleet
from edgeplane.tenants import KeyPolicy, key_hash, new_key


class KeyBook:
    """``version`` moves with every change, so gateways know when to fetch the table again."""

    def __init__(self, store: Store, fleet: Callable[[], Fleet], wall_clock: Callable[[], float], version: int) -> None:
        self.store, self.fleet, self.wall_clock, self.version = store, fleet, wall_clock, version

    def __repr__(self) -> str:
        return f"<KeyBook v{self.version} [Keys: {len(self.store.api_keys())}]>"

    def create(
        self,
        tenant: str,
        *,
        by: str,
        continent: str | None = None,
        region: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        models: list[str] | None = None,
    ) -> tuple[KeyPolicy, str]:
        """A new key and its secret, which is returned this once and stored only as a hash."""
        if not tenant:
            raise ValueError("a key needs a tenant")
        if continent and region:
            raise ValueError("pin a key to a continent or to a region, not both")
        if continent and continent not in self.fleet().continent_by_code:
            raise ValueError(
                f"unknown continent {continent!r}; expected one of: {', '.join(sorted(self.fleet().continent_by_code))}"
            )
        if region and region not in self.fleet().region_by_code:
            raise ValueError(
                f"unknown region {region!r}; expected one of: {', '.join(sorted(self.fleet().region_by_code))}"
            )
        for limit, name in ((rpm, "rpm"), (tpm, "tpm")):
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be a positive number")
        unknown = sorted(set(models or []) - set(self.fleet().model_by_name))
        if unknown:
            raise ValueError(
                f"unknown model {unknown[0]!r}; expected one of: {', '.join(sorted(self.fleet().model_by_name))}"
            )
        secret = new_key()
        policy = KeyPolicy(
            "key_" + secrets.token_hex(6),
            tenant,
            continent,
            region,
            rpm,
            tpm,
            frozenset(models) if models is not None else None,
        )
        self.store.add_key(StoredKey(key_hash(secret), policy, self.wall_clock()))
        self.store.audit(AuditRecord(self.wall_clock(), by, "create key", policy.id, "ok", policy.to_json()))
        self.version += 1
        return policy, secret

    def revoke(self, key_id: str, *, by: str) -> bool:
        if key_id not in {k.policy.id for k in self.store.api_keys()}:
            raise UnknownTarget(f"unknown key {key_id!r}")
        revoked = self.store.revoke_key(key_id, self.wall_clock())
        outcome = "ok" if revoked else "already revoked"
        self.store.audit(AuditRecord(self.wall_clock(), by, "revoke key", key_id, outcome, {}))
        self.version += 1
        return revoked

    def table(self) -> dict[str, Any]:
        """What gateways need to check keys locally: hashes and policies, never secrets."""
        return {"version": self.version, "keys": {k.hash: k.policy.to_json() for k in self.store.api_keys()}}
