"""`fault`: the emulator's fault catalogue."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from edgeplane.cli._root import _api, _console, _print_json, cli


@cli.group()
def fault() -> None:
    """Inject named faults into sites (emulator behaviours for tests and drills)."""


@fault.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fault_list(ctx: click.Context, as_json: bool) -> None:
    """The catalogue of faults, and which sites show one now."""
    data = _api(ctx, "GET", "/api/faults")
    if as_json:
        _print_json(data)
        return
    table = Table(title="faults")
    table.add_column("fault")
    table.add_column("what it does")
    for entry in data["catalogue"]:
        table.add_row(entry["fault"], entry["what"])
    console = _console(ctx)
    console.print(table)
    for pop, active in sorted(data["active"].items()):
        console.print(f"{pop}: {active['fault']} is active", highlight=False)


@fault.command("set")
@click.argument("pop")
@click.argument("name", metavar="FAULT")
@click.option("--tokens", type=int, help="cut-stream: tokens before the cut (default 3).")
@click.option("--factor", type=float, help="slow: how many times slower (default 5).")
@click.option(
    "--seconds", type=float, help="How long it lasts (refuse-connections: default 10; others: until cleared)."
)
@click.option(
    "--spare-probes",
    is_flag=True,
    help="Health probes get whole answers: a gray failure only clients' requests meet, found by trying the site.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fault_set(
    ctx: click.Context,
    pop: str,
    name: str,
    tokens: int | None,
    factor: float | None,
    seconds: float | None,
    spare_probes: bool,
    as_json: bool,
) -> None:
    """Make the site agent of POP show FAULT (see `edgeplane fault list`)."""
    payload: dict[str, Any] = {"pop": pop, "fault": name}
    for key, value in (("tokens", tokens), ("factor", factor), ("seconds", seconds)):
        if value is not None:
            payload[key] = value
    if spare_probes:
        payload["spare_probes"] = True
    data = _api(ctx, "POST", "/api/faults", payload)
    if as_json:
        _print_json(data, one_line=True)
        return
    _console(ctx).print(f"{pop}: {data['active']['fault']} injected", highlight=False)


@fault.command("clear")
@click.argument("pop")
@click.pass_context
def fault_clear(ctx: click.Context, pop: str) -> None:
    """Clear the fault of POP's site agent."""
    _api(ctx, "DELETE", f"/api/faults/{pop}")
    _console(ctx).print(f"{pop}: fault cleared", highlight=False)
