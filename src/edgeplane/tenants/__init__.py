"""Tenants (floor 1): API keys, their hashes and policies."""

from edgeplane.tenants._keys import KEY_PREFIX, KeyPolicy, key_hash, new_key

__all__ = ["KEY_PREFIX", "KeyPolicy", "key_hash", "new_key"]
