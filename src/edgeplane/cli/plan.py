"""`plan`: placement, failure scenarios and growth."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from edgeplane._errors import ConfigError
from edgeplane.cli._options import POSITIVE, fleet_option
from edgeplane.cli._root import _api, _console, _fail, _load, _print_json, cli
from edgeplane.fleet import Fleet


@cli.group()
def plan() -> None:
    """Capacity planning: placement that survives any single failure, failure scenarios, growth."""


def _plan_demand(
    ctx: click.Context, fleet: Fleet, demand_path: Path | None, observed: bool, window: float
) -> list[Any]:
    """Demand from a file, or what the control plane saw the gateways serve over ``window`` seconds (also
    when neither is asked for, so `plan growth --factor 10 --horizon-months 24` plans a running fleet)."""
    from edgeplane.planning import Demand, load_demand

    if demand_path is not None and observed:
        raise click.UsageError("give --demand FILE or --observed, not both")
    if demand_path is not None:
        try:
            return load_demand(demand_path, fleet)
        except ConfigError as error:
            _fail(ctx, error)
    # Neither given: what the running fleet has served, if there is one to ask.
    hint = "" if observed else "give --demand FILE, or run against a fleet that has served requests; "
    answer = _api(ctx, "GET", f"/api/demand?window={window}", doing=f"{hint}observed demand")
    rows = [
        Demand(
            r["metro"], r["model"], float(r["requests_per_second"]), int(r["prompt_tokens"]), int(r["output_tokens"])
        )
        for r in answer["demand"]
        if r["metro"] in fleet.metro_by_code and r["model"] in fleet.model_by_name
    ]
    if not rows:
        _fail(ctx, f"the control plane at {ctx.obj['control_url']} has seen no requests in the last {window:g} s")
    return rows


_OBSERVED = click.option(
    "--observed", is_flag=True, help="Use the demand the running fleet served (from the control plane)."
)
_WINDOW = click.option(
    "--window", default=600.0, show_default=True, type=POSITIVE, help="Seconds of observed demand to use."
)


@plan.command("placement")
@fleet_option
@click.option(
    "--demand",
    "demand_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV (metro,model,requests_per_second,prompt_tokens,output_tokens) or YAML with the same fields.",
)
@_OBSERVED
@_WINDOW
@click.option(
    "--scale", "factor", default=1.0, show_default=True, type=POSITIVE, help="Grow the demand by this factor (2, 10)."
)
@click.option(
    "--time-limit", default=60.0, show_default=True,
    help="Seconds the solver may take: a safety net (a search it ends may give another plan on another machine).",
)  # fmt: skip
@click.option(
    "--node-limit", type=click.IntRange(1),
    help="Branch-and-bound nodes the solver may explore (20,000): the budget that makes the same input give the"
    " same plan.",
)  # fmt: skip
@click.option(
    "--latency-weight",
    default=0.0002,
    show_default=True,
    help="Dollars per hour for carrying one request per second one millisecond further.",
)
@click.option(
    "--apply", "apply_", is_flag=True, help="Send it to the running fleet: agents load and unload models to match."
)
@click.option(
    "--force", is_flag=True, help="With --apply: even if a model is left unserved or its other sites lack headroom."
)
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), help="Also write an HTML report.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def plan_placement(
    ctx: click.Context,
    fleet_path: Path | None,
    demand_path: Path | None,
    observed: bool,
    window: float,
    factor: float,
    time_limit: float,
    node_limit: int | None,
    latency_weight: float,
    apply_: bool,
    force: bool,
    html_path: Path | None,
    as_json: bool,
) -> None:
    """Replicas per model per PoP: the cheapest (GPU cost plus demand-weighted latency) that leaves enough
    capacity in each continent after any single PoP or metro failure. A MILP on HiGHS, with its proven gap."""
    from edgeplane.planning import PlacementError, place, scale

    fleet = _load(ctx, fleet_path)
    try:
        demand = scale(_plan_demand(ctx, fleet, demand_path, observed, window), factor)
        from edgeplane.planning import MIP_NODE_LIMIT

        result = place(
            fleet, demand, latency_weight=latency_weight, time_limit_seconds=time_limit,
            node_limit=node_limit or MIP_NODE_LIMIT,
        )  # fmt: skip
    except (PlacementError, ValueError) as error:
        if as_json and isinstance(error, PlacementError):
            _print_json({"error": str(error), "shortfalls": error.shortfalls})
            ctx.exit(1)
        _fail(ctx, str(error))
    if html_path is not None:
        from edgeplane.reports import placement_report

        placement_report(fleet, result, html_path)
    applied: dict[str, Any] | None = None
    if apply_:
        entries = [{"model": p.model, "pop": p.pop, "replicas": p.replicas} for p in result.placement]
        body = {"placement": entries, "force": force}
        applied = _api(ctx, "POST", "/api/placement", body, doing="applying the placement")
    if as_json:
        _print_json({**result.to_json(), **({"applied": applied} if applied else {})})
        return
    console = _console(ctx)
    source = demand_path or f"observed demand ({window:g} s)"
    table = Table(title=f"placement for {source} (x{factor:g}): survives every single PoP and metro failure")
    for column in ("model", "PoP", "GPU", "replicas", "GPUs", "rps per replica"):
        table.add_column(column)
    for p in result.placement:
        table.add_row(p.model, p.pop, p.gpu_type, str(p.replicas), str(p.gpus), f"{p.replica_capacity_rps:.2f}")
    console.print(table)
    console.print(
        f"{result.gpus_used} GPUs (lower bound {result.lower_bound_gpus}, gap {result.gap:.1%}); solver gap"
        f" {result.mip_gap:.2%} ({result.status}, {result.solve_seconds:.2f} s); ${result.cost_per_hour_usd:,.0f}/h;"
        f" demand-weighted RTT {result.latency_ms_weighted:.1f} ms"
    )
    if applied:
        console.print(
            f"applied to {ctx.obj['control_url']}: {len(applied['added'])} to load, {len(applied['removed'])} to"
            f" unload, {len(applied['resized'])} resized; sites serve each model once it is loaded"
        )


def _read_placement(ctx: click.Context, path: Path) -> list[tuple[str, str, int]]:
    """A placement as `plan placement --json` writes it."""
    try:
        data = json.loads(path.read_text())
        return [(str(p["model"]), str(p["pop"]), int(p["replicas"])) for p in data["placement"]]
    except OSError as error:
        _fail(ctx, f"{path}: cannot read the placement ({error.strerror})")
    except UnicodeDecodeError:
        _fail(ctx, f"{path}: not a placement as `edgeplane plan placement --json` writes it (not UTF-8)")
    except ValueError as error:
        _fail(ctx, f"{path}: not a placement as `edgeplane plan placement --json` writes it (not JSON: {error})")
    except (KeyError, TypeError, AttributeError):
        _fail(ctx, f"{path}: not a placement as `edgeplane plan placement --json` writes it (no placement rows)")


@plan.command("scenarios")
@fleet_option
@click.option("--demand", "demand_path", type=click.Path(path_type=Path, dir_okay=False))
@_OBSERVED
@_WINDOW
@click.option(
    "--placement",
    "placement_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A placement from `plan placement --json` (default: the fleet file's placement).",
)
@click.option(
    "--scale", "factor", default=1.0, show_default=True, type=POSITIVE, help="Grow the demand by this factor."
)
@click.option("--pairs", is_flag=True, help="Also every pair of metros failing together.")
@click.option(
    "--fast",
    is_flag=True,
    help="Vectorised: all scenarios at once along the gateway's ladders (loads and unserved demand only).",
)
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), help="Also write an HTML report.")
@click.option(
    "--publish", is_flag=True, help="Also send the report to the control plane, whose dashboard shows the latest."
)
@click.option(
    "--ingress",
    "show_ingress",
    is_flag=True,
    help="Also print the PoP each metro's clients enter at, per scenario (JSON rows always carry it).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def plan_scenarios(
    ctx: click.Context,
    fleet_path: Path | None,
    demand_path: Path | None,
    observed: bool,
    window: float,
    placement_path: Path | None,
    factor: float,
    pairs: bool,
    fast: bool,
    html_path: Path | None,
    publish: bool,
    show_ingress: bool,
    as_json: bool,
) -> None:
    """Every single PoP and metro failure and every metro drain: the load each site then carries, predicted p99
    time to first token per metro and model, SLO breaches and demand nobody can serve, routed by the gateway's
    own router; and the PoP each metro's clients enter at, as the transits' BGP decides (`--ingress`)."""

    def published(rows: list[dict[str, Any]]) -> None:
        if publish:
            title = f"{'observed' if observed else demand_path} x{factor:g}{' (fast)' if fast else ''}"
            _api(ctx, "POST", "/api/plan/scenarios", {"scenarios": rows, "title": title})
            if not as_json:
                _console(ctx).print(f"published {len(rows)} scenarios to the control plane", highlight=False)

    from edgeplane.planning import cold_receivers, scale, scenarios, with_placement

    fleet = _load(ctx, fleet_path)
    try:
        demand = scale(_plan_demand(ctx, fleet, demand_path, observed, window), factor)
    except ValueError as error:
        _fail(ctx, str(error))
    if placement_path is not None:
        planned = _read_placement(ctx, placement_path)
        unknown = sorted({p for _, p, _ in planned} - set(fleet.pop_by_code))
        if unknown:
            _fail(ctx, f"{placement_path}: PoPs not in the fleet: {', '.join(unknown)}")
        fleet = with_placement(fleet, planned)
    if fast:
        from edgeplane.planning import fast_scenarios

        rows = [{**s.to_json(), "cold": None} for s in fast_scenarios(fleet, demand, pairs=pairs)]  # no site loads
        published(rows)
        if as_json:
            _print_json({"scenarios": rows})
            return
        fast_table = Table(title="failure scenarios (vectorised along the gateway's ladders)")
        for column in ("scenario", "busiest PoP", "utilisation", "unserved rps"):
            fast_table.add_column(column)
        for row in rows:
            top_site = row["busiest"]
            fast_table.add_row(
                row["scenario"], top_site["pop"], f"{top_site['utilisation']:.0%}", f"{row['unserved_rps']:.1f}"
            )
        _console(ctx).print(fast_table)
        if show_ingress:
            _console(ctx).print(_ingress_table(rows))
        return
    results = scenarios(fleet, demand, pairs=pairs)
    if html_path is not None:
        from edgeplane.reports import scenarios_report

        scenarios_report(fleet, results, html_path)
    weights = _weights_held(ctx, fleet)
    rows = [s.to_json() for s in results]
    for s, row in zip(results, rows, strict=True):  # None: the control plane does not answer, nobody knows
        row["cold"] = cold_receivers(s.sites, weights) if weights is not None else None
    published(rows)
    if as_json:
        _print_json({"scenarios": rows})
        return
    table = Table(title="failure scenarios (routed by the gateway's router)")
    columns = ["scenario", "busiest site", "utilisation", "worst p99 TTFT", "SLO breaches", "unserved rps"]
    for column in [*columns, *(["cold receivers"] if weights is not None else [])]:
        table.add_column(column)
    for s, row in zip(results, rows, strict=True):
        busiest = max(s.sites, key=lambda x: x.utilisation, default=None)
        worst = max(s.metros, key=lambda m: m.ttft_p99_ms / m.slo_ms, default=None)
        table.add_row(
            s.name,
            f"{busiest.pop} {busiest.model}" if busiest else "",
            f"{busiest.utilisation:.0%}" if busiest else "",
            f"{worst.ttft_p99_ms:.0f} ms ({worst.metro} {worst.model}, SLO {worst.slo_ms:g})" if worst else "",
            str(sum(1 for m in s.metros if m.breaches)),
            f"{s.unserved_rps:.1f}",
            *([", ".join(f"{c['pop']} {c['model']} ({c['held_share']:.0%})" for c in row["cold"])] if row["cold"]
              is not None else []),
        )  # fmt: skip
    _console(ctx).print(table)
    if weights is None:
        _console(ctx).print("weights on disk: unknown (the control plane does not answer); cold receivers not checked")
    if show_ingress:
        _console(ctx).print(_ingress_table([s.to_json() for s in results]))


def _weights_held(ctx: click.Context, fleet: Fleet) -> dict[str, dict[str, float]] | None:
    """Per model whose weights travel over the fabric, the share of them each site holds on disk, as the control
    plane hears from the sites; None when it does not answer."""
    from edgeplane._errors import ControlPlaneError
    from edgeplane.cli._root import _control

    try:
        objects = _control(ctx, timeout_seconds=5).call("GET", "/api/fabric/objects")["objects"]
    except (ControlPlaneError, KeyError, TypeError):
        return None
    held: dict[str, dict[str, float]] = {}
    for row in objects:
        model = row.get("weights_of")
        if model in fleet.model_by_name:
            size = row["size_bytes"] or 1
            held[model] = {s["pop"]: 1.0 if s["complete"] else s["bytes_held"] / size for s in row["sites"]}
    return held


def _ingress_table(rows: list[dict[str, Any]]) -> Table:
    """Scenario by client metro: the PoP the metro's clients enter at; where it differs from the first row's
    (no failure), marked with `*`."""
    metros = list(rows[0]["ingress"]) if rows else []
    baseline = rows[0]["ingress"] if rows else {}
    table = Table(title="ingress PoP per client metro (predicted from the transits' BGP; * moved)")
    table.add_column("scenario", no_wrap=True)
    for metro in metros:
        table.add_column(metro)
    for row in rows:
        cells = []
        for metro in metros:
            pop = row["ingress"].get(metro)
            cells.append("none" if pop is None else f"{pop}*" if pop != baseline.get(metro) else pop)
        table.add_row(row["scenario"], *cells)
    return table


@plan.command("growth")
@fleet_option
@click.option(
    "--demand",
    "demand_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Today's demand (CSV or YAML, as for `plan placement`).",
)
@_OBSERVED
@_WINDOW
@click.option("--factor", default=10.0, show_default=True, type=POSITIVE)
@click.option("--horizon-months", default=24, show_default=True, type=click.IntRange(1, 240))
@click.option("--step-months", default=1, show_default=True, type=click.IntRange(1, 12), help="Plan every N months.")
@click.option("--time-limit", default=10.0, show_default=True, help="Seconds the solver may take per step.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), help="Also write an HTML report.")
@click.option(
    "--apply", "apply_orders", is_flag=True, help="Record the orders in the running fleet (`edgeplane unit list`)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def plan_growth_command(
    ctx: click.Context,
    fleet_path: Path | None,
    demand_path: Path | None,
    observed: bool,
    window: float,
    factor: float,
    horizon_months: int,
    step_months: int,
    time_limit: float,
    html_path: Path | None,
    apply_orders: bool,
    as_json: bool,
) -> None:
    """Units to add per metro, and when to order each (the fleet file's unit_template and its lead time), so
    that capacity stays ahead of demand growing FACTOR times over the horizon, surviving any single failure."""
    from edgeplane.planning import PlacementError, plan_growth

    fleet = _load(ctx, fleet_path)
    demand = _plan_demand(ctx, fleet, demand_path, observed, window)
    console = _console(ctx)
    try:
        with console.status("planning growth") as status:
            result = plan_growth(
                fleet,
                demand,
                factor=factor,
                horizon_months=horizon_months,
                step_months=step_months,
                time_limit_seconds=time_limit,
                progress=lambda done, total: status.update(f"planning growth: month {done} of {total}"),
            )
    except PlacementError as error:
        _fail(ctx, str(error))
    if html_path is not None:
        from edgeplane.reports import growth_report

        growth_report(result, html_path)
    recorded = _record_orders(ctx, result.orders) if apply_orders else None
    if as_json:
        _print_json({**result.to_json(), **({"recorded": recorded} if recorded is not None else {})})
        return
    if recorded is not None:
        console.print(f"recorded {len(recorded)} unit orders in the running fleet: {', '.join(recorded) or 'none new'}")
    table = Table(
        title=f"demand x{factor:g} over {horizon_months} months; lead time {result.lead_time_months:g} months"
    )
    for column in ("month", "demand rps", "units added", "GPUs", "GPUs used"):
        table.add_column(column)
    for m in result.timeline:
        table.add_row(str(m.month), f"{m.demand_rps:,.0f}", str(m.units_added), str(m.gpus), str(m.gpus_used))
    console.print(table)
    orders = Table(title="unit orders")
    for column in ("order at month", "metro", "PoP", "unit", "needed at month", "note"):
        orders.add_column(column)
    for o in result.orders:
        note = f"late by {o.late_by_months:g} months: serves at month {o.serving_month:g}" if o.late_by_months else ""
        orders.add_row(f"{max(0.0, o.order_month):g}", o.metro, o.pop, f"#{o.number}", str(o.needed_month), note)
    console.print(orders)


def _record_orders(ctx: click.Context, orders: list[Any]) -> list[str]:
    """Each planned order as an ordered unit of the running fleet, due when the plan has it serving; orders
    already recorded there (by count per PoP) are not made twice. The codes of the new ones."""
    from edgeplane.units import SECONDS_PER_MONTH

    held: dict[str, int] = {}
    for u in _api(ctx, "GET", "/api/units")["units"]:
        if u["origin"] == "order" and u["state"] != "decommissioned":
            held[u["pop"]] = held.get(u["pop"], 0) + 1
    now = time.time()
    made = []
    for o in orders:
        if o.number <= held.get(o.pop, 0):
            continue
        note = f"plan growth: order at month {max(0.0, o.order_month):g}, needed at month {o.needed_month}"
        due = now + o.serving_month * SECONDS_PER_MONTH
        made.append(_api(ctx, "POST", "/api/units", {"pop": o.pop, "due": due, "note": note})["code"])
    return made
