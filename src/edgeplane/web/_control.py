"""The control plane as its clients know it: one URL, or the URLs of its replicas (`--control URL,URL,...`,
EDGEPLANE_CONTROL_URL alike). A client calls the current one and, when it fails, moves to the next."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from edgeplane._errors import ConfigError

log = logging.getLogger("edgeplane")


def control_urls(text: str | Sequence[str]) -> tuple[str, ...]:
    """``text`` split at commas into base URLs (http:// or https://, no trailing slash); ConfigError names a bad
    one."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    urls = tuple(p.strip().rstrip("/") for p in parts if p.strip())
    if not urls:
        raise ConfigError("no control plane URL given (http://HOST:PORT, or several comma-separated)")
    for url in urls:
        if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
            raise ConfigError(f"{url!r} is not a control plane URL (http://HOST:PORT)")
    return urls


class ControlUrls:
    """The replicas a client may call, and the one it calls now."""

    def __init__(self, urls: str | Sequence[str]) -> None:
        self.urls = control_urls(urls)
        self._at = 0
        self.moves = 0  # how often a failure moved this client to another replica

    @classmethod
    def of(cls, given: str | Sequence[str] | ControlUrls) -> ControlUrls:
        return given if isinstance(given, ControlUrls) else cls(given)

    def __repr__(self) -> str:
        return f"<ControlUrls {self.current} of {len(self.urls)}>"

    def __str__(self) -> str:
        return ",".join(self.urls)

    @property
    def current(self) -> str:
        return self.urls[self._at]

    def failed(self, url: str) -> bool:
        """``url`` failed a call: the next replica becomes current (if ``url`` still was). True if it moved."""
        if len(self.urls) == 1 or url != self.current:
            return False
        self._at = (self._at + 1) % len(self.urls)
        self.moves += 1
        log.info("control plane replica %s failed; moving to %s", url, self.current)
        return True
