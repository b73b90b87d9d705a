"""`drill`: rehearsed drains that roll back by themselves."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from edgeplane.cli._root import _api, _console, _print_json, cli


@cli.group()
def drill() -> None:
    """Rehearsed drains that watch the moved traffic's SLO and roll back by themselves."""


@drill.command("metro")
@click.argument("code")
@click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds drained.")
@click.option("--slo-ttft-ms", type=click.FloatRange(min=0.001), help="TTFT limit (default: each model's own SLO).")
@click.option("--force", is_flag=True, help="Drain even past the headroom and blast radius.")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@click.pass_context
def drill_metro(
    ctx: click.Context, code: str, duration: float, slo_ttft_ms: float | None, force: bool, as_json: bool
) -> None:
    """Drain metro CODE for --duration seconds, roll back on an SLO breach, and print a report."""
    payload: dict[str, Any] = {"metro": code, "duration_seconds": duration, "force": force}
    if slo_ttft_ms is not None:
        payload["slo_ttft_ms"] = slo_ttft_ms
    drill = _api(ctx, "POST", "/api/drills", payload)
    console = _console(ctx)
    if not as_json:
        console.print(f"drill {drill['id']}: draining metro {code} for {duration:g} s", highlight=False)
    while not drill["done"]:
        drill = _api(ctx, "GET", f"/api/drills/{drill['id']}?wait=5")
        if not as_json and drill["state"] == "running" and drill["figures"]:
            f = drill["figures"]
            console.print(f"  {f['samples']} moved requests, p95 TTFT {_ms(f['ttft_ms_p95'])}", highlight=False)
    if as_json:
        _print_json(drill)
    else:
        _print_drill(console, drill)
    if drill["state"] != "completed":
        ctx.exit(1)


def _print_drill(console: Console, drill: dict[str, Any]) -> None:
    colour = {"completed": "green", "rolled back": "yellow", "refused": "red"}.get(drill["state"], "white")
    console.print(f"drill {drill['id']} on metro {drill['metro']}: [{colour}]{drill['state']}[/]", highlight=False)
    if drill["reason"]:
        console.print(f"  {drill['reason']}", highlight=False, markup=False)
    f = drill["figures"]
    if f and not f["samples"]:
        console.print("  no moved traffic", highlight=False)
    elif f:
        ttft = (
            f"TTFT p50 {_ms(f['ttft_ms_p50'])}, p95 {_ms(f['ttft_ms_p95'])}, p99 {_ms(f['ttft_ms_p99'])}"
            if f["ttft_ms_p50"] is not None
            else "TTFT not timed (only streamed answers are)"
        )
        console.print(f"  moved requests: {f['samples']}; {ttft}; over the SLO: {f['over_slo']}", highlight=False)
        for where, n in sorted(f["served_at"].items(), key=lambda kv: -kv[1]):
            console.print(f"  served at {where}: {n}", highlight=False)


def _ms(value: float | None) -> str:
    """A TTFT figure; none while no moved request has been timed (no traffic moved, or none streamed)."""
    return "-" if value is None else f"{value} ms"
