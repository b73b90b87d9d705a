"""What stands in front of every route of a service: OpenAI-shaped errors for what no route answers, the
browser guards (a web page in the operator's browser can reach loopback too), the admin token and the actor.

Browser guards, for the control plane and the site agents:
- every request's ``Host`` must name the address the connection came to (or ``localhost`` on loopback, or a
  name the operator allowed): a DNS-rebinding page sends its own host name and is refused;
- a state change (POST, PUT, PATCH, DELETE) is refused when it comes from another origin (``Origin`` or
  ``Sec-Fetch-Site`` say so), and a body sent to the admin API (``/api/``) must be ``application/json``, which
  a form or a simple cross-origin ``fetch`` cannot send without asking first.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from edgeplane.web._openai import ApiError
from edgeplane.web._service import error_response

log = logging.getLogger("edgeplane")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALLOWED_HOSTS_ENV = "EDGEPLANE_ALLOWED_HOSTS"
MAX_ACTOR_CHARS = 64
# On an admin request the control plane passes on to a site agent: audited at the control plane, not again.
RELAYED_HEADER = "X-Edgeplane-Relayed"
_PRINTABLE = re.compile(r"[^\x20-\x7e]")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "request_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "request_header_fields_too_large",
}


def json_error(
    status: int, message: str, *, code: str | None = None, type: str | None = None, headers: Any = None
) -> web.Response:
    """error_response with the type and code a status implies, where the caller names none."""
    kind = type or ("server_error" if status >= 500 else "invalid_request_error")
    return error_response(status, message, type=kind, code=code or _STATUS_CODES.get(status), headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A handler's ApiError, and aiohttp's own answers (no such route, method not allowed, body too large), in
    OpenAI's error shape."""
    try:
        return await handler(request)
    except ApiError as error:
        return web.Response(
            body=error.body(), status=error.status, content_type="application/json", headers=error.headers
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items() if k.lower() in ("allow", "retry-after")}
        if error.status == 404:
            message = f"No route {request.method} {request.path}."
        elif error.status == 405:
            message = f"Method {request.method} is not allowed on {request.path}; allowed: {headers.get('Allow', '')}."
        else:
            message = error.reason
        return json_error(error.status, message, headers=headers)


def allowed_host_names() -> frozenset[str]:
    """Host names the operator allows beside addresses (EDGEPLANE_ALLOWED_HOSTS, comma-separated)."""
    return frozenset(n.strip().lower().rstrip(".") for n in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if n)


def _host_of(value: str) -> str:
    """The host of a Host header or an origin's netloc: no port, no brackets, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0].rstrip(".")
    return value.rstrip(".")


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_of(text: str) -> Address | None:
    """The address in a Host header, an origin or an X-Forwarded-For entry: IPv4, IPv6, ``[v6]`` or
    ``[v6]:port``, ``v4:port``; an IPv4-mapped IPv6 address as the IPv4 address it carries. None for
    anything else (a name, "unknown", junk)."""
    return _address(_host_of(text.strip().strip('"')))


def _address(host: str) -> Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def host_allowed(host_header: str, local_address: str | None, names: Collection[str] = ()) -> bool:
    """Whether ``Host`` names the address the connection came to, loopback by name, or an allowed name."""
    host = _host_of(host_header)
    if not host:
        return False
    if host in names:
        return True
    local = _address(local_address or "")
    if host in ("localhost", "localhost6"):
        return local is None or local.is_loopback
    named = _address(host)
    if named is None:
        return False
    return local is None or local.is_unspecified or named == local


def same_origin(request: web.Request) -> bool:
    """False when the browser says the request comes from another site."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not sent by a browser, or sent same-origin by an older one
    parts = urlsplit(origin)
    if origin == "null" or parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc.lower() == request.headers.get("Host", "").strip().lower()


def browser_guard(names: Collection[str] | None = None, *, admin_token: str | None = None) -> Middleware:
    """Middleware for the control plane and the site agents (not for the OpenAI gateway, whose clients are
    programs on other hosts, with keys). A request that carries the admin token (where one is set) may name the
    service by any host name: a page that rebinds a name cannot know the token, and the fleet's own gateways
    and agents on other hosts reach the control plane by its DNS name with it."""
    allowed = frozenset(names) if names is not None else allowed_host_names()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        local = str(sockname[0]) if isinstance(sockname, tuple) and sockname else None
        vouched = admin_token is not None and authorised(request, admin_token)
        if not vouched and not host_allowed(request.headers.get("Host", ""), local, allowed):
            return json_error(
                421,
                "The Host header does not name this service. Use its address, or allow the name in "
                f"{ALLOWED_HOSTS_ENV}.",
                code="host_not_allowed",
            )
        if request.method in UNSAFE_METHODS:
            if not same_origin(request):
                return json_error(403, "Cross-origin requests may not change state.", code="foreign_origin")
            # The admin API under /api/ takes JSON only; the OpenAI routes of an agent keep what clients send.
            has_body = request.body_exists or request.method in ("POST", "PUT", "PATCH")
            if has_body and request.path.startswith("/api/") and request.content_type != "application/json":
                return json_error(
                    415, "State changes take a JSON body: send `Content-Type: application/json`.",
                    code="unsupported_media_type",
                )  # fmt: skip
        return await handler(request)

    return guard


def authorised(request: web.Request, token: str | None) -> bool:
    """With no token configured (loopback), everyone; else exactly `Authorization: Bearer TOKEN`."""
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def refused() -> web.Response:
    return json_error(401, "This action needs the admin token.", type="authentication_error", code="unauthorized")


class HasAdminToken(Protocol):
    @property
    def admin_token(self) -> str | None: ...


S = TypeVar("S", bound=HasAdminToken)
Method = Callable[[S, web.Request], Awaitable[web.StreamResponse]]


def admin(handler: Method[S]) -> Method[S]:
    """Marks a handler as an admin action: refused with 401 without the admin token (when one is set)."""

    @functools.wraps(handler)
    async def checked(self: S, request: web.Request) -> web.StreamResponse:
        if not authorised(request, self.admin_token):
            return refused()
        return await handler(self, request)

    return checked


def actor(request: web.Request) -> str:
    """Who asks, for the audit log: the X-Edgeplane-Actor a client names itself with (printable, at most
    MAX_ACTOR_CHARS, quoted when it is not a plain word), or the peer's address."""
    given = _PRINTABLE.sub("?", request.headers.get("X-Edgeplane-Actor", "").strip())[:MAX_ACTOR_CHARS]
    if not given:
        return f"api@{request.remote}"
    return given if re.fullmatch(r"[\w.@:+-]+", given) else repr(given)
