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
        # One URL, or the replicas' (comma-separated): each is tried in turn while it cannot be reached.
        self.urls = [u.strip().rstrip("/") for u in base_url.split(",") if u.strip()] or [base_url.strip()]
        self.base_url = self.urls[0]
        self.admin_token = admin_token
        self.timeout_seconds = timeout_seconds

    def __repr__(self) -> str:
        return f"<ControlClient {self.base_url} timeout={self.timeout_seconds:g}s>"

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        """The answer's JSON; unreachable, an HTTP error (with the server's OpenAI-style message) or an answer
        that is not JSON raise ControlPlaneError. With several replicas, the next is tried when one cannot be
        reached: for any read, and for a change only when its connection was refused (it was not made there)."""
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ControlPlaneError(f"{url!r} is not a control plane URL (http://HOST:PORT)")
        for at, url in enumerate(self.urls):
            self.base_url = url
            last = at == len(self.urls) - 1
            try:
                return self._call(method, path, payload)
            except _Unreachable as unreachable:
                if last or not (method == "GET" or unreachable.refused):
                    raise ControlPlaneError(str(unreachable)) from None
            except _BadAnswer as bad:  # a read is asked of the next replica; a change is not repeated
                if last or method != "GET":
                    raise ControlPlaneError(str(bad)) from None
        raise AssertionError("unreachable")

    def _call(self, method: str, path: str, payload: Any) -> Any:
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
            if error.code >= 500:
                raise _BadAnswer(f"control plane answered {error.code}: {message}") from None
            raise ControlPlaneError(f"control plane answered {error.code}: {message}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            refused = isinstance(reason, ConnectionRefusedError)
            raise _Unreachable(f"cannot reach the control plane at {self.base_url}: {reason}", refused) from None
        try:
            return json.loads(body)
        except ValueError:
            raise _BadAnswer(f"the control plane at {self.base_url} answered {path} with no JSON") from None


class _Unreachable(Exception):
    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(message)
        self.refused = refused


class _BadAnswer(Exception):
    """An answer that is no control plane's (no JSON) or a server error: another replica may do better."""
