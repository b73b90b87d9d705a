"""The HTTP kit every edgeplane service shares: running a service (serve), its connections' limits, the guards
in front of its routes, typed request bodies, supervised background jobs, the HTTP client that reaches sites
and model servers, health probes, and the OpenAI wire format the gateway and the site agents speak."""

from edgeplane.web._client import HttpClient, Reply
from edgeplane.web._connections import ConnectionGuard, ConnectionLimits, read_body
from edgeplane.web._control import ControlUrls, control_urls
from edgeplane.web._guards import (
    RELAYED_HEADER,
    Address,
    Handler,
    actor,
    address_of,
    admin,
    authorised,
    browser_guard,
    json_error,
    json_errors,
)
from edgeplane.web._openai import (
    MAX_BODY_BYTES,
    ApiError,
    Endpoint,
    InferenceRequest,
    error_body,
    error_event,
    error_message,
    model_not_found,
    openai_error,
    parse_request,
    prompt_text,
)
from edgeplane.web._parse import Body, Code, Count, Name, Positive, Seconds, Text, UnixSeconds, decode, parse
from edgeplane.web._probe import PROBE_HEADER, PROBE_INTERVAL_SECONDS, probe_sites
from edgeplane.web._service import Listener, abort, die_with_parent, error_response, json_response, relay_stream, serve
from edgeplane.web._tasks import supervised

__all__ = [
    "MAX_BODY_BYTES",
    "PROBE_HEADER",
    "PROBE_INTERVAL_SECONDS",
    "RELAYED_HEADER",
    "Address",
    "ApiError",
    "Body",
    "Code",
    "ConnectionGuard",
    "ConnectionLimits",
    "ControlUrls",
    "Count",
    "Endpoint",
    "Handler",
    "HttpClient",
    "InferenceRequest",
    "Listener",
    "Name",
    "Positive",
    "Reply",
    "Seconds",
    "Text",
    "UnixSeconds",
    "abort",
    "actor",
    "address_of",
    "admin",
    "authorised",
    "browser_guard",
    "control_urls",
    "decode",
    "die_with_parent",
    "error_body",
    "error_event",
    "error_message",
    "error_response",
    "json_error",
    "json_errors",
    "json_response",
    "model_not_found",
    "openai_error",
    "parse",
    "parse_request",
    "probe_sites",
    "prompt_text",
    "read_body",
    "relay_stream",
    "serve",
    "supervised",
]
