"""Who sent a request: the policy of its API key, or a 401 that says why not."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from edgeplane.tenants import KeyPolicy, key_hash
from edgeplane.web import ApiError


class Authenticator:
    """Looks keys up in the key table by their hash. The key itself is never kept or logged."""

    def __init__(self, failures: Counter) -> None:
        self.failures = failures  # by reason: missing, unknown, revoked

    def authenticate(self, authorization: str, keys: Mapping[str, KeyPolicy]) -> KeyPolicy:
        """The policy of the key in an Authorization header's value, or ApiError(401)."""
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            self.failures.labels("missing").inc()
            raise ApiError(
                401,
                "You didn't provide an API key. Send it as `Authorization: Bearer KEY`.",
                type="invalid_request_error",
                code="invalid_api_key",
            )
        policy = keys.get(key_hash(secret.strip()))
        if policy is None:
            self.failures.labels("unknown").inc()
            raise ApiError(401, "Incorrect API key provided.", type="invalid_request_error", code="invalid_api_key")
        if policy.revoked:
            self.failures.labels("revoked").inc()
            raise ApiError(401, "This API key has been revoked.", type="invalid_request_error", code="invalid_api_key")
        return policy
