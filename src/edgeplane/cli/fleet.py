"""`fleet check` and `fleet show`: the fleet description."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from edgeplane.cli._options import fleet_option
from edgeplane.cli._root import _console, _load, _print_json, cli
from edgeplane.fleet import fleet_json


@cli.group()
def fleet() -> None:
    """Check and show fleet descriptions."""


@fleet.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
def fleet_check(ctx: click.Context, path: Path) -> None:
    """Validate a fleet file; exit 2 naming file, line and field of each problem."""
    loaded = _load(ctx, path)
    units = sum(1 for _ in loaded.units())
    counts = f"{len(loaded.metros)} metros, {len(loaded.pops)} PoPs, {units} units, {len(loaded.models)} models"
    _console(ctx).print(f"{path}: ok ({counts})", highlight=False)


@fleet.command("show")
@fleet_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def fleet_show(ctx: click.Context, fleet_path: Path | None, as_json: bool) -> None:
    """Show the fleet: metros, PoPs, GPUs and models."""
    loaded = _load(ctx, fleet_path)
    console = _console(ctx)
    if as_json:
        _print_json(fleet_json(loaded))
        return
    table = Table(title=f"fleet (AS{loaded.asn})")
    for column in ("metro", "region", "continent", "PoPs", "GPUs", "client prefixes"):
        table.add_column(column)
    for metro in loaded.metros:
        pops = loaded.pops_in(metro.code)
        gpus: dict[str, int] = {}
        for pop in pops:
            for kind, n in pop.gpus_by_type().items():
                gpus[kind] = gpus.get(kind, 0) + n
        table.add_row(
            f"{metro.code} ({metro.name})",
            metro.region,
            loaded.region_of(metro.code).continent,
            ", ".join(p.code for p in pops),
            ", ".join(f"{n}x{k}" for k, n in sorted(gpus.items())),
            ", ".join(metro.client_prefixes),
        )
    console.print(table)
    models = Table(title="models")
    for column in ("model", "params (B)", "GPUs/replica", "SLO TTFT (ms)", "placed at"):
        models.add_column(column)
    for spec in loaded.models:
        placed = [p.pop for p in loaded.placement if p.model == spec.name]
        models.add_row(
            spec.name,
            f"{spec.parameters_billions:g}",
            str(spec.gpus_per_replica),
            f"{spec.slo_ttft_ms:g}",
            ", ".join(placed),
        )
    console.print(models)
