"""What every resource of the control plane's API shares: the control plane it answers for, the admin token its
@admin routes are checked against, and long polls that wait for the next published version."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from edgeplane.web import error_response

if TYPE_CHECKING:
    from edgeplane.control._service import ControlPlane
    from edgeplane.control._state import FleetState

MAX_WAIT_SECONDS = 30.0


class Resource:
    """One resource of the API: its routes (``routes()``) and their handlers. Admin routes carry @admin; an
    UnknownTarget raised by a handler is a 404 and a StoreError a 507 or 503 (the control plane's middleware)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.plane!r}>"

    @property
    def state(self) -> FleetState:
        return self.plane.state

    @property
    def admin_token(self) -> str | None:
        return self.plane.admin_token

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError


def wait_seconds(request: web.Request) -> float | web.Response:
    """The ``wait`` of a long poll, at most MAX_WAIT_SECONDS; a 400 if it is not a number."""
    try:
        return min(MAX_WAIT_SECONDS, float(request.query.get("wait", "0")))
    except ValueError:
        return error_response(400, "`wait` must be a number of seconds.", type="invalid_request_error")


async def long_poll(
    request: web.Request, version: Callable[[], int], changed: Callable[[], asyncio.Event]
) -> web.Response | None:
    """Hold a request asking for a version past `after` for up to `wait` seconds, until it is published.
    ``changed`` is read when waiting starts: each publication replaces the event. A bad query: a 400."""
    try:
        after = int(request.query.get("after", "0"))
        wait = min(MAX_WAIT_SECONDS, float(request.query.get("wait", "0")))
    except ValueError:
        return error_response(400, "`after` must be an integer and `wait` a number.", type="invalid_request_error")
    if version() <= after and wait > 0:
        try:
            async with asyncio.timeout(wait):
                await changed().wait()
        except TimeoutError:
            pass
    return None
