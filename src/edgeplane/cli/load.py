"""`load`: replay a demand file against a gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.table import Table

from edgeplane._errors import ConfigError
from edgeplane.cli._options import POSITIVE, fleet_option
from edgeplane.cli._root import _console, _load, _print_json, cli


@cli.command("load")
@fleet_option
@click.option("--demand", "demand_path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--gateway", "gateway_url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds of load.")
@click.option("--scale", "factor", default=1.0, show_default=True, type=POSITIVE, help="Multiply the demand's rates.")
@click.option("--max-tokens", default=16, show_default=True, type=click.IntRange(1))
@click.option("--api-key", envvar="EDGEPLANE_API_KEY", help="Key for a gateway that requires one.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def load_command(
    ctx: click.Context,
    fleet_path: Path | None,
    demand_path: Path,
    gateway_url: str,
    duration: float,
    factor: float,
    max_tokens: int,
    api_key: str | None,
    seed: int,
    as_json: bool,
) -> None:
    """Replay a demand file against a gateway (Poisson arrivals, each client inside its metro's prefixes)
    and show where each metro's requests were served."""
    from edgeplane.local import replay
    from edgeplane.planning import load_demand, scale

    fleet = _load(ctx, fleet_path)
    try:
        demand = scale(load_demand(demand_path, fleet), factor)
    except (ConfigError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    console = _console(ctx)
    with console.status("sending") as status:
        tallies = asyncio.run(
            replay(
                fleet, demand, gateway_url, duration_seconds=duration, max_tokens=max_tokens, api_key=api_key,
                seed=seed, progress=lambda n: status.update(f"sending: {n} requests"),
            )
        )  # fmt: skip
    if as_json:
        rows = [{"metro": m, "model": n, **t.to_json()} for (m, n), t in tallies.items()]
        _print_json({"duration_seconds": duration, "results": rows})
        return
    table = Table(title=f"{duration:g} s of {demand_path} x{factor:g} against {gateway_url}")
    for column in ("metro", "model", "sent", "ok", "failed", "served in (share)"):
        table.add_column(column)
    for (metro, model), t in tallies.items():
        shares = t.to_json()["shares"]
        table.add_row(
            metro, model, str(t.sent), str(t.ok), str(t.failed), ", ".join(f"{m} {s:.0%}" for m, s in shares.items())
        )
    console.print(table)
