"""`store check` and `store copy`: what a control plane's store holds, and moving a fleet's state between stores
(SQLite file and PostgreSQL database alike)."""

from __future__ import annotations

import click
from rich.table import Table

from edgeplane._errors import ConfigError
from edgeplane.cli._root import _console, _fail, _print_json, cli

URL_HELP = "sqlite:///PATH (a file) or postgresql://USER@HOST:PORT/DB."


@cli.group()
def store() -> None:
    """The control plane's store: SQLite (one machine) or PostgreSQL (replicas)."""


@store.command("check")
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def store_check(ctx: click.Context, url: str, as_json: bool) -> None:
    """Say which schema version the store at URL holds and how many records of each kind, changing nothing.
    Exit 0 when a control plane of this edgeplane can open it (current, older, or empty), 1 when it cannot."""
    from edgeplane.control._stores import REFUSED_STATES, describe, parse_store_url

    try:
        found = describe(parse_store_url(url))
    except ConfigError as error:
        _fail(ctx, error)
    if as_json:
        _print_json(found)
    else:
        words = {
            "current": f"schema {found['schema_version']} (current)",
            "migrates": f"schema {found['schema_version']}: brought to {found['current_version']} when a control"
            " plane opens it",
            "empty": f"no store yet: made (schema {found['current_version']}) when a control plane opens it",
            "newer": f"schema {found['schema_version']}: written by a newer edgeplane (this one knows up to"
            f" {found['current_version']})",
            "foreign": "not an edgeplane store",
            "damaged": "a damaged edgeplane store: no control plane opens it",
        }
        console = _console(ctx)
        console.print(f"{found['store']} ({found['kind']}): {words[found['state']]}", soft_wrap=True, highlight=False)
        if found["records"] is not None:
            table = Table("records", "count")
            for kind, count in found["records"].items():
                table.add_row(kind, str(count))
            console.print(table)
    if found["state"] in REFUSED_STATES:
        ctx.exit(1)


@store.command("copy")
@click.option("--from", "source_url", required=True, help="The store to read: " + URL_HELP)
@click.option("--to", "target_url", required=True, help="The store to write (empty): " + URL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def store_copy(ctx: click.Context, source_url: str, target_url: str, as_json: bool) -> None:
    """Copy a fleet's state (drains, keys, audit log, units, placement, BGP actions, fabric transfers, published
    reports) from one store to an empty one, all of it or nothing. The source is read in one transaction, so a
    running control plane may keep it open; stop it before moving over to the copy."""
    from edgeplane.control._stores import copy, open_store, parse_store_url

    try:
        source_at, target_at = parse_store_url(source_url), parse_store_url(target_url)
        if source_at == target_at:
            raise ConfigError("--from and --to name the same store")
        source = open_store(source_at, create=False)
        try:
            target = open_store(target_at)
            try:
                copied = copy(source, target)
            finally:
                target.close()
        finally:
            source.close()
    except ConfigError as error:
        _fail(ctx, error)
    result = {"from": source_at.shown, "to": target_at.shown, "copied": copied}
    if as_json:
        _print_json(result)
        return
    shown = ", ".join(f"{n} {kind}" for kind, n in copied.items())
    _console(ctx).print(f"copied {source_at.shown} to {target_at.shown}: {shown}", soft_wrap=True, highlight=False)
