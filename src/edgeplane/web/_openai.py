"""The OpenAI wire format shared by the gateway and the site agent: request checks and error bodies."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from edgeplane._errors import EdgeplaneError

MAX_BODY_BYTES = 4 * 1024 * 1024
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Content parts by the input they carry; a model takes text unless the catalog says more.
PART_INPUTS = {"text": "text", "refusal": "text", "image_url": "image", "input_audio": "audio", "file": "file"}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
    inputs: frozenset[str] = field(default_factory=lambda: frozenset({"text"}))  # kinds of content it carries
    spared: bool = False  # a health probe the injected fault spares (Fault.spare_probes): answered whole


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
    inputs = {"text"}
    if endpoint is Endpoint.CHAT:
        inputs = _check_messages(body.get("messages"))
        _check_tools(body.get("tools"), body.get("tool_choice"))
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
    return InferenceRequest(endpoint, model, bool(stream), body, frozenset(inputs))


def _check_messages(messages: Any) -> set[str]:
    """Check the messages; the kinds of input their content parts carry."""
    if not isinstance(messages, list) or not messages:
        raise invalid("`messages` is required and must be a non-empty array.", "messages")
    inputs = {"text"}
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(f"`messages[{i}]` must be an object.", f"messages[{i}]")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise invalid(f"`messages[{i}].role` must be one of {', '.join(sorted(_ROLES))}.", f"messages[{i}].role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise invalid(f"`messages[{i}].content` must be a string or an array.", f"messages[{i}].content")
        for j, part in enumerate(content if isinstance(content, list) else []):
            inputs.add(_check_part(part, f"messages[{i}].content[{j}]"))
    return inputs


def _check_part(part: Any, where: str) -> str:
    """A content part's shape, as OpenAI checks it; the kind of input it carries."""
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str) or kind not in PART_INPUTS:
        raise invalid(f"`{where}.type` must be one of {', '.join(sorted(PART_INPUTS))}.", f"{where}.type")
    assert isinstance(part, dict)
    value = part.get(kind)
    ok = {
        "text": isinstance(value, str),
        "refusal": isinstance(value, str),
        "image_url": isinstance(value, dict) and isinstance(value.get("url"), str),
        "input_audio": isinstance(value, dict) and isinstance(value.get("data"), str),
        "file": isinstance(value, dict),
    }[kind]
    if not ok:
        shape = "a string" if kind in ("text", "refusal") else "an object"
        raise invalid(f"`{where}.{kind}` is required and must be {shape}.", f"{where}.{kind}")
    return PART_INPUTS[kind]


def _check_tools(tools: Any, choice: Any) -> None:
    """Tool definitions as OpenAI checks them: a model server given a malformed one fails the request."""
    if tools is not None:
        if not isinstance(tools, list):
            raise invalid("`tools` must be an array.", "tools")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise invalid(f'`tools[{i}].type` must be "function".', f"tools[{i}].type")
            function = tool.get("function")
            if not isinstance(function, dict):
                raise invalid(f"`tools[{i}].function` is required and must be an object.", f"tools[{i}].function")
            name = function.get("name")
            if not isinstance(name, str) or not _TOOL_NAME.match(name):
                raise invalid(
                    f"`tools[{i}].function.name` is required: 1 to 64 letters, digits, _ or -.",
                    f"tools[{i}].function.name",
                )
            for key in ("parameters",):
                if key in function and not isinstance(function[key], dict):
                    raise invalid(f"`tools[{i}].function.{key}` must be an object.", f"tools[{i}].function.{key}")
            if "description" in function and not isinstance(function["description"], str):
                raise invalid(
                    f"`tools[{i}].function.description` must be a string.", f"tools[{i}].function.description"
                )
    if choice is None or choice in ("none", "auto"):
        return
    named = choice.get("function") if isinstance(choice, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    if choice != "required" and not (isinstance(choice, dict) and choice.get("type") == "function"
                                     and isinstance(name, str)):  # fmt: skip
        raise invalid(
            '`tool_choice` must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.',
            "tool_choice",
        )
    # A tool to call must be one the request defines: a model server told to call none, or one it was not
    # given, fails or makes a call up.
    if not tools:
        raise invalid("`tool_choice` is only allowed when `tools` are specified.", "tool_choice")
    if name is not None and name not in {t["function"]["name"] for t in tools}:
        raise invalid(f"`tool_choice` names the function {name!r}, which `tools` does not define.", "tool_choice")


def _check_prompt(prompt: Any) -> None:
    ok = isinstance(prompt, str) or (
        isinstance(prompt, list)
        and prompt
        and (all(isinstance(p, str) for p in prompt) or all(isinstance(p, int) for p in prompt))
    )
    if not ok:
        raise invalid("`prompt` is required and must be a string or an array of strings.", "prompt")


def error_message(body: bytes) -> str:
    """The message of an error body (OpenAI's shape or a model server's), for quoting to a client."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", "replace").strip()
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:500] if message else ""


def openai_error(status: int, body: bytes) -> bytes:
    """A model server's error body in OpenAI's shape. llama.cpp's "exceed_context_size_error" becomes OpenAI's
    context_length_exceeded, so clients that look for that code (to trim a conversation) find it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        message = error_message(body) or f"The model server answered {status}."
        return error_body(message, type="server_error" if status >= 500 else "invalid_request_error")
    if error.get("type") == "exceed_context_size_error":
        context, prompt = error.get("n_ctx"), error.get("n_prompt_tokens")
        return error_body(
            f"This model's maximum context length is {context} tokens. However, your messages resulted in"
            f" {prompt} tokens. Please reduce the length of the messages.",
            type="invalid_request_error",
            code="context_length_exceeded",
            param="messages",
        )
    kind = error.get("type") if isinstance(error.get("type"), str) else None
    code, param = error.get("code"), error.get("param")
    return error_body(
        str(error.get("message") or f"The model server answered {status}."),
        type=kind or ("server_error" if status >= 500 else "invalid_request_error"),
        code=code if isinstance(code, str) else None,
        param=param if isinstance(param, str) else None,
    )


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
