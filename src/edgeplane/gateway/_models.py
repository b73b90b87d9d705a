"""The fleet's models as a key sees them: what /v1/models lists, and the checks a request's model must pass."""

from __future__ import annotations

from typing import Any

from edgeplane.fleet import Fleet
from edgeplane.tenants import KeyPolicy
from edgeplane.web import ApiError, InferenceRequest, model_not_found


def visible(fleet: Fleet, policy: KeyPolicy | None) -> list[str]:
    """The models a key may use (every one without a key)."""
    names = [m.name for m in fleet.models]
    if policy is None:
        return names
    return [n for n in names if policy.models is None or n in policy.models]


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "edgeplane"}


def check_model(fleet: Fleet, parsed: InferenceRequest, policy: KeyPolicy | None) -> None:
    """Raise ApiError unless the fleet serves the request's model (404), the model takes the request's kinds
    of content (400), and the key may use it (403)."""
    spec = fleet.model_by_name.get(parsed.model)
    if spec is None:
        raise model_not_found(parsed.model)
    unsupported = sorted(parsed.inputs - set(spec.inputs))
    if unsupported:
        raise ApiError(
            400,
            f"The model `{parsed.model}` takes {' and '.join(spec.inputs)} input only; this request carries"
            f" {' and '.join(unsupported)} content.",
            type="invalid_request_error",
            code="unsupported_input",
            param="messages",
        )
    if policy is not None and policy.models is not None and parsed.model not in policy.models:
        raise ApiError(
            403,
            f"This API key may not use the model `{parsed.model}`.",
            type="permission_error",
            code="model_not_allowed",
            param="model",
        )
