"""Tenants (floor 1): API keys, their hashes and policies."""

from edgeplane.tenants._keys import KEY_PREFIX, KeyPolicy, key_hash, new_key
from edgeplane.tenants._limits import LEASE_SHARE, WINDOW_SECONDS, Bucket, Grant, LeaseBook

__all__ = [
    "KEY_PREFIX",
    "LEASE_SHARE",
    "WINDOW_SECONDS",
    "Bucket",
    "Grant",
    "KeyPolicy",
    "LeaseBook",
    "key_hash",
    "new_key",
]
