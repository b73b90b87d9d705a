"""The options `up` shares with the services it starts (`control run`, `gateway run`, `site run`) and with the
commands that read a fleet file: each defined once, so a default or a check cannot drift between them."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

RESET_STORE_HELP = (
    "Start with an empty store on purpose: the data directory's edgeplane.db (damaged or not) is moved aside to"
    " edgeplane.db.broken-TIMESTAMP, never deleted."
)
FIRST_TOKEN_TIMEOUT_SECONDS = 10.0  # the gateway's own defaults (GatewayOptions), shown in help
READ_TIMEOUT_SECONDS = 300.0

fleet_option = click.option(
    "--fleet", "fleet_path", type=click.Path(path_type=Path), help="Fleet file (default: the embedded fleet)."
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where state is kept (or EDGEPLANE_DATA_DIR).",
)
admin_token_option = click.option(
    "--admin-token", envvar="EDGEPLANE_ADMIN_TOKEN", help="Token for admin actions (required beyond loopback)."
)
home_metro_option = click.option(
    "--home-metro", help="The gateway's own metro, for clients outside every metro's prefixes."
)
auth_option = click.option(
    "--auth",
    type=click.Choice(["on", "off"]),
    default=None,
    help="Require API keys (default: off on loopback, on anywhere else; off is refused beyond loopback).",
)
graceful_shutdown_option = click.option(
    "--graceful-shutdown-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How long a drained metro's prefixes carry GRACEFUL_SHUTDOWN (65535:0) before they are withdrawn.",
)
reset_store_option = click.option("--reset-store", is_flag=True, help=RESET_STORE_HELP)
store_option = click.option(
    "--store",
    "store_url",
    envvar="EDGEPLANE_STORE",
    help="The control plane's store: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (or EDGEPLANE_STORE;"
    " default: edgeplane.db in the data directory). Give a PostgreSQL password through PGPASSWORD or ~/.pgpass,"
    " not the URL, which other users can read in the process list.",
)


def host_option(help: str = "Address to listen on.") -> Callable[[F], F]:
    return click.option("--host", default="127.0.0.1", show_default=True, help=help)


def gateway_timeout_options(*, passed_on: bool = False) -> Callable[[F], F]:
    """--first-token-timeout and --read-timeout. ``passed_on`` (`up`): no default of their own, so the gateway
    `up` starts gets only what was given, and keeps its defaults otherwise."""

    def decorate(command: F) -> F:
        for name, default, what in (
            ("--read-timeout", READ_TIMEOUT_SECONDS, "a whole non-streamed answer"),
            ("--first-token-timeout", FIRST_TOKEN_TIMEOUT_SECONDS, "a stream's first event"),
        ):
            if passed_on:
                option = click.option(name, type=float, help=f"Gateway: seconds to wait for {what} ({default:g}).")
            else:
                option = click.option(name, default=default, show_default=True, help=f"Seconds to wait for {what}.")
            command = option(command)
        return command

    return decorate


def site_backend_options(command: F) -> F:
    """What serves a PoP's models and which of its units are read: `site run` and `pop run` take the same."""
    for option in reversed(
        [
            click.option(
                "--backend", default="emulator", show_default=True,
                type=click.Choice(["emulator", "llamacpp", "upstream"]), help="What serves the models.",
            ),
            click.option(
                "--gguf", "gguf_path", type=click.Path(path_type=Path, dir_okay=False), help="GGUF file (llamacpp)."
            ),
            click.option("--upstream", "upstream_url", help="OpenAI-compatible base URL (upstream)."),
            click.option("--seed", default=0, show_default=True, help="Seed of the emulator."),
            click.option(
                "--time-scale", default=1.0, show_default=True, type=click.FloatRange(min=0),
                help="Emulator delays times this.",
            ),
            click.option("--redfish", multiple=True, metavar="UNIT=URL", help="A unit's Redfish service to poll."),
            click.option(
                "--dcgm", multiple=True, metavar="UNIT=URL",
                help="A DCGM exporter (/metrics URL) in a unit; repeat per server.",
            ),
            click.option(
                "--redfish-emulate", is_flag=True,
                help="Emulate the Redfish service and DCGM exporter of every unit not given one.",
            ),
        ]
    ):  # fmt: skip
        command = option(command)
    return command


class PositiveNumber(click.FloatRange):
    """A number above 0 that is finite: NaN compares false with every bound and would slip through FloatRange
    (a NaN scale planned with no demand; an infinite one printed NaN into --json)."""

    name = "positive number"

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


POSITIVE = PositiveNumber()


link_scale_option = click.option(
    "--link-scale", default=1.0, show_default=True, type=PositiveNumber(),
    help="The fabric's links run at their capacity times this (0.0004 runs 400 Gbit/s at 20 MB/s).",
)  # fmt: skip


def fabric_options(command: F) -> F:
    """Where a site keeps the fabric's objects and how fast its links run: `site run` and `pop run` take both."""
    for option in reversed(
        [
            click.option(
                "--data-dir", type=click.Path(path_type=Path, file_okay=False),
                help="Where the site keeps the fabric's objects (default: sites/POP in EDGEPLANE_DATA_DIR).",
            ),
            link_scale_option,
            click.option(
                "--store-limit", type=click.IntRange(min=0), metavar="BYTES",
                help="Most bytes of objects the site keeps (default: as many as the disk holds).",
            ),
        ]
    ):  # fmt: skip
        command = option(command)
    return command
