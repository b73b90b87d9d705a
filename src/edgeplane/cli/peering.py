"""`peering candidates`: the networks behind each metro's transits worth a direct session, from flow data."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from edgeplane._errors import EdgeplaneError
from edgeplane.cli._options import data_dir_option, fleet_option
from edgeplane.cli._root import _api, _console, _fail, _load, _print_json, cli, default_data_dir
from edgeplane.cli.flows import store_of, when, with_window


@cli.group()
def peering() -> None:
    """Peering analysis from flow data: which networks to peer with, per metro."""


@peering.command("candidates")
@click.option(
    "--metro", "metros", multiple=True, help="Only this metro (repeatable; default: every metro with traffic)."
)
@click.option("--top", default=20, show_default=True, type=click.IntRange(min=1), help="Candidates per metro.")
@click.option(
    "--rib", "rib_path", type=click.Path(path_type=Path, dir_okay=False),
    help="Routes from a file: MRT TABLE_DUMP_V2 or `birdc show route all` (default: the speakers' routes).",
)  # fmt: skip
@click.option(
    "--peeringdb", "peeringdb_path", type=click.Path(path_type=Path, dir_okay=False),
    help="PeeringDB-shaped JSON (net, ix, netixlan, fac, netfac): names, policies, where to meet.",
)  # fmt: skip
@click.option(
    "--price-per-mbps", type=click.FloatRange(min=0, max=1e9),
    help="Transit price per Mbps (95th percentile) per month, for every transit (default: the fleet's).",
)  # fmt: skip
@with_window
@data_dir_option
@fleet_option
@click.option(
    "--publish", is_flag=True, help="Send the report to the control plane (--control), for the dashboard's panel."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write an HTML report with a chart per metro.")  # fmt: skip
@click.pass_context
def peering_candidates(
    ctx: click.Context,
    metros: tuple[str, ...],
    top: int,
    rib_path: Path | None,
    peeringdb_path: Path | None,
    price_per_mbps: float | None,
    since: str | None,
    until: str | None,
    data_dir: Path | None,
    fleet_path: Path | None,
    publish: bool,
    as_json: bool,
    html_path: Path | None,
) -> None:
    """Per metro, the networks (ASNs) behind its transits ranked by the 95th percentile of the traffic we
    exchange with and through them, the transits carrying it today, its share, what a direct session would
    save, and where both networks meet."""
    from edgeplane.peering import PeeringDb, report, rib_routes, speaker_routes

    fleet = _load(ctx, fleet_path)
    for code in metros:
        if code not in fleet.metro_by_code:
            raise click.BadParameter(f"no metro {code!r} in the fleet", param_hint="--metro")
    data_dir = data_dir or default_data_dir()
    try:
        routes = rib_routes(fleet, rib_path) if rib_path is not None else speaker_routes(fleet, data_dir)
        directory = PeeringDb.load(peeringdb_path) if peeringdb_path is not None else None
        found = report(
            fleet,
            store_of(data_dir),
            routes,
            metros=list(dict.fromkeys(metros)) or None,
            top=top,
            directory=directory,
            price_per_mbps=price_per_mbps,
            since_ms=when(since, "--since"),
            until_ms=when(until, "--until"),
        )
    except EdgeplaneError as error:
        _fail(ctx, error)
    if html_path is not None:
        from edgeplane.reports import peering_html

        try:
            html_path.write_text(peering_html(fleet, found))
        except OSError as error:
            _fail(ctx, f"{html_path}: cannot write the report ({error.strerror})")
    if publish:
        _api(ctx, "PUT", "/api/peering/candidates", found, timeout_seconds=60, doing="publishing the report")
    if as_json:
        _print_json(found)
        return
    console = _console(ctx)
    for metro in found["metros"]:
        table = Table(title=f"{metro['code']}: peering candidates ({metro['bins']} five-minute bins)")
        for column in ("AS", "name", "p95 Mbps", "share", "via", "saving/month", "meet", "policy"):
            table.add_column(column)
        if not metro["candidates"]:
            console.print(f"{metro['code']}: no traffic through its transits in the window")
            continue
        for row in metro["candidates"]:
            saving = "-" if row["saving_per_month"] is None else f"{row['saving_per_month']:,.2f}"
            meet = ", ".join(m["name"] for m in row["meet"]) or "-"
            via = ", ".join(f"AS{a}" for a in row["via_transits"])
            table.add_row(
                f"AS{row['asn']}", row["name"] or "-", f"{row['p95_mbps']:.3f}", f"{row['share']:.1%}", via, saving,
                meet, row["policy"] or "-",
            )  # fmt: skip
        console.print(table)
    if html_path is not None:
        console.print(f"report written to {html_path}")
    if publish:
        console.print("published to the control plane (the dashboard's peering panel)")
