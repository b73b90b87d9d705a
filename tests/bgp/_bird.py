"""A real BIRD 2 daemon on a loopback address, configured per test, read back with `birdc`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests._time import wait_for as wait_until

BIRD = shutil.which("bird") or ("/usr/sbin/bird" if os.path.exists("/usr/sbin/bird") else None)
BIRDC = shutil.which("birdc") or ("/usr/sbin/birdc" if os.path.exists("/usr/sbin/birdc") else None)


def require_bird() -> None:
    if BIRD is None or BIRDC is None:
        if os.environ.get("CI"):
            pytest.fail("bird2 is not installed: scripts/install installs it with apt-get")
        pytest.skip("bird2 is not installed (scripts/install installs it with apt-get)")


@dataclass
class BirdRoute:
    prefix: str
    protocol: str
    primary: bool
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def large_communities(self) -> list[str]:
        text = self.attributes.get("BGP.large_community", "")
        return [":".join(t) for t in re.findall(r"\((\d+), (\d+), (\d+)\)", text)]

    @property
    def communities(self) -> list[str]:
        return [":".join(t) for t in re.findall(r"\((\d+),(\d+)\)", self.attributes.get("BGP.community", ""))]

    @property
    def as_path(self) -> list[int]:
        return [int(a) for a in self.attributes.get("BGP.as_path", "").split()]


class Bird:
    """One BIRD process: `protocols` is the text of its BGP protocols (and any other sections)."""

    def __init__(self, tmp: Path, name: str, router_id: str, protocols: str) -> None:
        self.dir = tmp / f"bird-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name, self.router_id, self.protocols = name, router_id, protocols
        self.socket = self.dir / "bird.ctl"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Bird:
        require_bird()
        assert BIRD is not None
        config = self.dir / "bird.conf"
        config.write_text(
            f'router id {self.router_id};\nlog "{self.dir / "bird.log"}" all;\nprotocol device {{}}\n{self.protocols}\n'
        )
        self.process = subprocess.Popen(
            [BIRD, "-f", "-c", str(config), "-s", str(self.socket)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                assert self.process.stderr is not None
                raise RuntimeError(f"bird {self.name} exited: {self.process.stderr.read().decode()}")
            try:
                return "ready" in self.birdc("show status")
            except subprocess.CalledProcessError:
                return False

        try:
            wait_until(f"bird {self.name} answers on {self.socket}", ready, timeout_seconds=10, every=0.05)
        except AssertionError as error:
            raise RuntimeError(str(error)) from None
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def birdc(self, *command: str) -> str:
        assert BIRDC is not None
        return subprocess.run(
            [BIRDC, "-s", str(self.socket), *command], check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def routes(self, *extra: str) -> list[BirdRoute]:
        """Every route BIRD holds (`show route all`), the primary (best) one of each prefix marked."""
        routes: list[BirdRoute] = []
        prefix = ""
        for line in self.birdc("show", "route", "all", *extra).splitlines():
            if not line.strip() or line.startswith(("BIRD ", "Table ")):
                continue
            if line.startswith("\t"):
                key, _, value = line.strip().partition(":")
                if routes and key.startswith("BGP."):
                    routes[-1].attributes[key] = value.strip()
                continue
            match = re.match(r"^(\S*)\s+\w+\s+\[(\S+)\s", line)
            if not match:
                continue
            if match.group(1):
                prefix = match.group(1)
            routes.append(BirdRoute(prefix, match.group(2), " * " in line))
        return routes

    def by_prefix(self) -> dict[str, BirdRoute]:
        """The BGP routes BIRD learned (its own static routes left out), one per prefix: the best."""
        learned = [r for r in self.routes() if r.attributes]
        return {r.prefix: r for r in sorted(learned, key=lambda r: r.primary)}

    def wait_for(self, what: str, check: Callable[[dict[str, BirdRoute]], Any], timeout_seconds: float = 30) -> Any:
        """Until ``check`` of the routes BIRD holds is true; returns what it returned."""
        seen: dict[str, BirdRoute] = {}
        results: list[Any] = []

        def happened() -> Any:
            seen.clear()
            seen.update(self.by_prefix())
            results.append(check(seen))
            return results[-1]

        try:
            wait_until(f"bird {self.name}: {what}", happened, timeout_seconds)
        except AssertionError as error:
            raise AssertionError(f"{error}; it holds {sorted(seen)}") from None
        return results[-1]


def transit(
    tmp: Path, name: str, address: str, asn: int, port: int, *, exports: str = "", export_filter: str = ""
) -> Bird:
    """A transit's router: listens on ADDRESS:PORT for our speaker (AS 64496 from 127.0.0.1), takes every
    route; ``exports`` (a static protocol's routes) are sent back to us, through ``export_filter``'s body."""
    body = export_filter or "accept;"
    export = f"export filter {{ if source != RTS_STATIC then reject; {body} }};" if exports else "export none;"
    protocols = f"""
{exports}
protocol bgp edge {{
  local {address} port {port} as {asn};
  neighbor 127.0.0.1 as 64496;
  passive on; multihop; strict bind on;
  ipv4 {{ import all; {export} }};
  ipv6 {{ import all; export none; }};
}}
"""
    return Bird(tmp, name, address, protocols)
