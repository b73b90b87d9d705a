"""The OpenAI wire format shared by the gateway and the site agent: request checks and error bodies."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

from edgeplane._errors import EdgeplaneError

MAX_BODY_BYTES = 4 * 1024 * 1024
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class Endpoint(enum.Enum):
    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"


class ApiError(EdgeplaneError):
    """An error answered to the client with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or {}
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> bytes:
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(message: str, *, type: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def error_event(message: str, *, type: str, code: str | None = None) -> bytes:
    """An error as a server-sent event: the openai SDK raises it, so a stream never ends looking complete."""
    return b"data: " + error_body(message, type=type, code=code) + b"\n\n"


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, type="invalid_request_error", code=code, param=param)


def model_not_found(model: str) -> ApiError:
    return ApiError(
        404,
        f"The model `{model}` does not exist.",
        type="invalid_request_error",
        code="model_not_found",
        param="model",
    )


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    endpoint: Endpoint
    model: str
    stream: bool
    body: dict[str, Any]


def parse_request(endpoint: Endpoint, raw: bytes) -> InferenceRequest:
    """Check an inference request as an OpenAI server would; raise ApiError(400) naming the field."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise invalid(f"Request body is not valid JSON: {error}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("Request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("`model` is required and must be a non-empty string.", "model")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise invalid("`stream` must be a boolean.", "stream")
    if endpoint is Endpoint.CHAT:
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise invalid(f"`{name}` must be a positive integer.", name)
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is not None and (
            not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high
        ):
            raise invalid(f"`{name}` must be a number between {low:g} and {high:g}.", name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("`stream_options` must be an object.", "stream_options")
    return InferenceRequest(endpoint, model, bool(stream), body)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise invalid("`messages` is required and must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"`messages[{i}]` must be an object.", f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise invalid(f"`messages[{i}].role` must be one of {', '.join(sorted(_ROLES))}.", f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise invalid(f"`messages[{i}].content` must be a string or an array.", f"messages[{i}].content")


def _check_prompt(prompt: Any) -> None:
    ok = isinstance(prompt, str) or (
        isinstance(prompt, list)
        and prompt
        and (all(isinstance(p, str) for p in prompt) or all(isinstance(p, int) for p in prompt))
    )
    if not ok:
        raise invalid("`prompt` is required and must be a string or an array of strings.", "prompt")


def prompt_text(request: InferenceRequest) -> str:
    """The text a model would read, for token estimates."""
    if request.endpoint is Endpoint.COMPLETIONS:
        prompt = request.body["prompt"]
        return prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt)
    parts: list[str] = []
    for message in request.body["messages"]:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)
