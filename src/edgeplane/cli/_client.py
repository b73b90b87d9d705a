"""The CLI's one client of the control plane API (synchronous): every failure it meets leaves it as a
ControlPlaneError whose message is what the user is told."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from edgeplane._errors import ControlPlaneError


class ControlClient:
    """Calls of the control plane's API as the CLI's actor, with the admin token when there is one."""

    def __init__(self, base_url: str, *, admin_token: str | None = None, timeout_seconds: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.admin_token = admin_token
        self.timeout_seconds = timeout_seconds

    def __repr__(self) -> str:
        return f"<ControlClient {self.base_url} timeout={self.timeout_seconds:g}s>"

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        """The answer's JSON; unreachable, an HTTP error (with the server's OpenAI-style message) or an answer
        that is not JSON raise ControlPlaneError."""
        if not self.base_url.startswith(("http://", "https://")):
            raise ControlPlaneError(f"{self.base_url!r} is not a control plane URL (http://HOST:PORT)")
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.admin_token:
            request.add_header("Authorization", f"Bearer {self.admin_token}")
        request.add_header("X-Edgeplane-Actor", "cli")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = error.reason
            raise ControlPlaneError(f"control plane answered {error.code}: {message}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            raise ControlPlaneError(f"cannot reach the control plane at {self.base_url}: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise ControlPlaneError(f"the control plane at {self.base_url} answered {path} with no JSON") from None
