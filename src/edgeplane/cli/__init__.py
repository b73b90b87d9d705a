"""The `edgeplane` command, one module per command group (as pip's commands/): the root group and what
commands share are in _root."""

from __future__ import annotations

import sys

import click

from edgeplane._errors import EdgeplaneError
from edgeplane.cli import (  # noqa: F401
    bgp,
    drill,
    fabric,
    fault,
    fleet,
    flows,
    keys,
    lab,
    load,
    operations,
    peering,
    plan,
    pop,
    services,
    store,
    unit,
    up,
)
from edgeplane.cli._root import cli


def main() -> None:
    from edgeplane._extras import MissingExtra

    try:
        cli(prog_name="edgeplane")
    except MissingExtra as missing:  # wherever a command first needed it: one line, what to install
        click.echo(f"error: {missing}", err=True)
        sys.exit(2)
    except EdgeplaneError as error:  # an error of ours a command did not answer itself: said, not a traceback
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


__all__ = ["cli", "main"]
