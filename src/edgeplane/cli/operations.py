"""Operations on a running fleet: `status`, `drain` and `undrain`, `route`."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from edgeplane.cli._root import _api, _console, _print_json, cli


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Every metro and PoP with its state, load and site agent pid."""
    data = _api(ctx, "GET", "/api/status")
    if as_json:
        _print_json(data)
        return
    console = _console(ctx)
    colours = {"serving": "green", "drained": "yellow", "down": "red"}
    table = Table(title=f"edgeplane status (snapshot v{data['snapshot_version']})")
    for column in ("metro", "PoP", "state", "load", "pid", "reason"):
        table.add_column(column)
    metro_state = {m["code"]: m["state"] for m in data["metros"]}
    for pop in data["pops"]:
        colour = colours.get(pop["state"], "white")
        table.add_row(
            f"{pop['metro']} ({metro_state.get(pop['metro'], '?')})",
            pop["code"],
            f"[{colour}]{pop['state']}[/]",
            f"{pop['load']:.0%}",
            str(pop["pid"] or "-"),
            _reason(pop),
        )
    console.print(table)


def _reason(pop: dict[str, Any]) -> str:
    """Why a PoP is in its state, and a model it is loading (with its weights' progress over the fabric)."""
    said = pop.get("reason") or ""
    weights, loading = pop.get("loading_weights"), pop.get("loading")
    if weights:
        size = weights.get("size_bytes")
        share = f"{weights['bytes_held'] / size:.0%}" if size else "not started"
        loading = f"{weights['model']}: weights {share} here"
    return "; ".join(part for part in (said, f"loading {loading}" if loading else "") if part)


def _drain_command(name: str, drain: bool) -> click.Command:
    @click.command(
        name, help=f"{'Drain' if drain else 'Undrain'} a metro, a PoP or one unit: `edgeplane {name} metro CODE`."
    )
    @click.argument("kind", type=click.Choice(["metro", "pop", "unit"]))
    @click.argument("code")
    @click.option("--force", is_flag=True, hidden=not drain, help="Drain even past the headroom and blast radius.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_context
    def command(ctx: click.Context, kind: str, code: str, force: bool, as_json: bool) -> None:
        if drain:
            data = _api(ctx, "POST", "/api/drains", {"kind": kind, "code": code, "force": force})
        else:
            data = _api(ctx, "DELETE", f"/api/drains/{kind}/{code}")
        if as_json:
            _print_json(data, one_line=True)
            return
        verb = "drained" if drain else "undrained"
        note = "" if data.get("changed") else f" (it was already {verb})"
        _console(ctx).print(f"{kind} {code} {verb}{note}; snapshot v{data['snapshot_version']}", highlight=False)

    return command


cli.add_command(_drain_command("drain", True))
cli.add_command(_drain_command("undrain", False))


@cli.command()
@click.option("--client", required=True, help="Client IP address.")
@click.option("--model", required=True, help="Model name.")
@click.option("--prompt-tokens", default=256, show_default=True, type=click.IntRange(1), help="Prompt length.")
@click.option("--max-tokens", default=256, show_default=True, type=click.IntRange(1), help="Output length.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def route(ctx: click.Context, client: str, model: str, prompt_tokens: int, max_tokens: int, as_json: bool) -> None:
    """The decision the gateway would take for a client and a model, explained."""
    from urllib.parse import urlencode

    query = {"client": client, "model": model, "prompt_tokens": prompt_tokens, "max_tokens": max_tokens}
    data = _api(ctx, "GET", "/api/route?" + urlencode(query))
    if as_json:
        _print_json(data)
        return
    console = _console(ctx)
    for line in data["explanation"]:
        console.print(line, highlight=False, markup=False)
    if data["candidates"]:
        table = Table(title="candidates, in order")
        for column in ("PoP", "metro", "scope", "rtt ms", "queue ms", "prefill ms", "TTFT ms", "SLO", "load"):
            table.add_column(column)
        for c in data["candidates"]:
            slo = "full" if c["full"] else ("ok" if c["within_slo"] else "breaks")
            numbers = (c["rtt_ms"], c["queue_ms"], c["prefill_ms"], c["predicted_ttft_ms"])
            table.add_row(c["pop"], c["metro"], c["scope"], *(f"{n:.1f}" for n in numbers), slo, f"{c['load']:.0%}")
        console.print(table)
