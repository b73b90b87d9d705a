"""HTML reports of plans, with plots (matplotlib, drawn to inline SVG: one self-contained file, no network)."""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeplane._extras import require
from edgeplane.fleet import Fleet
from edgeplane.planning import GrowthPlan, Plan, Scenario

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.bad { color: #b00020; font-weight: 600; }
figure { margin: 1.5em 0; }
"""


def _svg(figure: Any) -> str:
    plt = _pyplot()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "plan", "HTML reports (--html)")
    matplotlib.use("Agg")  # files only, never a window
    return require("matplotlib.pyplot", "plan", "HTML reports (--html)")


def _page(title: str, body: list[str]) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p>edgeplane, {stamp}</p>{''.join(body)}</body></html>"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    lines = []
    for row in rows:
        cells = "".join(f"<td>{cell if str(cell).startswith('<') else html.escape(str(cell))}</td>" for cell in row)
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def placement_report(fleet: Fleet, plan: Plan, path: Path) -> None:
    """GPUs per PoP by model, and the figures of the solve."""
    plt = _pyplot()
    pops = [p.code for p in fleet.pops]
    models = sorted({p.model for p in plan.placement})
    figure, axes = plt.subplots(figsize=(10, 4))
    bottom = [0.0] * len(pops)
    for model in models:
        heights = [sum(p.gpus for p in plan.placement if p.pop == pop and p.model == model) for pop in pops]
        axes.bar(pops, heights, bottom=bottom, label=model)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.plot(pops, [sum(p.gpus_by_type().values()) for p in fleet.pops], "k_", markersize=20, label="GPUs there")
    axes.set_ylabel("GPUs")
    axes.set_title("GPUs placed per PoP")
    axes.legend(fontsize="small")
    summary = (
        f"<p>{plan.gpus_used} GPUs (lower bound {plan.lower_bound_gpus}, gap {plan.gap:.1%}); solver gap"
        f" {plan.mip_gap:.2%} ({html.escape(plan.status)}); ${plan.cost_per_hour_usd:,.0f}/h; demand-weighted RTT"
        f" {plan.latency_ms_weighted:.1f} ms. Every single PoP and metro failure leaves enough capacity in each"
        " continent.</p>"
    )
    rows = [(p.model, p.pop, p.gpu_type, p.replicas, p.gpus, f"{p.replica_capacity_rps:.2f}") for p in plan.placement]
    body = [
        summary,
        f"<figure>{_svg(figure)}</figure>",
        _table(("model", "PoP", "GPU", "replicas", "GPUs", "rps per replica"), rows),
    ]
    path.write_text(_page("Placement", body))


def scenarios_report(fleet: Fleet, results: Sequence[Scenario], path: Path) -> None:
    """Utilisation per metro per scenario (a heat map), and every breach."""
    plt = _pyplot()
    metros = [m.code for m in fleet.metros]
    matrix = []
    for s in results:
        row = []
        for metro in metros:
            loads = [x.utilisation for x in s.sites if fleet.pop_by_code[x.pop].metro == metro]
            row.append(min(max(loads, default=0.0), 1.5))
        matrix.append(row)
    figure, axes = plt.subplots(figsize=(1.2 + 0.6 * len(metros), 1 + 0.3 * len(results)))
    image = axes.imshow(matrix, cmap="RdYlGn_r", vmin=0.0, vmax=1.2, aspect="auto")
    axes.set_xticks(range(len(metros)), metros)
    axes.set_yticks(range(len(results)), [s.name for s in results])
    axes.set_title("busiest site's utilisation per metro, per scenario")
    figure.colorbar(image, ax=axes, label="utilisation (1 = capacity within the SLO)")
    rows = []
    for s in results:
        for m in s.metros:
            if m.breaches:
                ttft = "unbounded" if m.ttft_p99_ms == float("inf") else f"{m.ttft_p99_ms:.0f}"
                rows.append((s.name, m.metro, m.model, ttft, f"{m.slo_ms:g}", f"{m.unserved_rps:.1f}"))
    unserved = sum(s.unserved_rps for s in results)
    body = [
        f"<p>{len(results)} scenarios; {len(rows)} breaches; {unserved:.1f} requests/s unserved in all.</p>",
        f"<figure>{_svg(figure)}</figure>",
        "<h2>Breaches</h2>",
        _table(("scenario", "metro", "model", "p99 TTFT ms", "SLO ms", "unserved rps"), rows)
        if rows
        else "<p>None.</p>",
    ]
    path.write_text(_page("Failure scenarios", body))


def growth_report(growth: GrowthPlan, path: Path) -> None:
    """Capacity against demand over the horizon, and the unit orders on a timeline."""
    plt = _pyplot()
    months = [m.month for m in growth.timeline]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    top.step(months, [m.gpus for m in growth.timeline], where="post", label="GPUs in the fleet")
    top.plot(months, [m.gpus_used for m in growth.timeline], "o-", label="GPUs the placement uses")
    top.set_ylabel("GPUs")
    top.legend()
    top.set_title(f"demand x{growth.factor:g} over {growth.horizon_months} months")
    metros = sorted({o.metro for o in growth.orders})
    for o in growth.orders:
        y = metros.index(o.metro)
        colour = "tab:red" if o.late_by_months else "tab:blue"
        bottom.plot([max(0.0, o.order_month), o.serving_month], [y, y], "-", color=colour, alpha=0.5)
        bottom.plot([o.serving_month], [y], "s", color=colour)
    bottom.set_yticks(range(len(metros)), metros)
    bottom.set_xlabel("month")
    bottom.set_title(f"unit orders: order to serving ({growth.lead_time_months:g} months lead time; red: late)")
    rows = [
        (f"{max(0.0, o.order_month):g}", o.metro, o.pop, f"#{o.number}", o.needed_month,
         f"<span class='bad'>late by {o.late_by_months:g} months</span>" if o.late_by_months else "")
        for o in growth.orders
    ]  # fmt: skip
    body = [
        f"<p>{len(growth.orders)} units to add.</p>",
        f"<figure>{_svg(figure)}</figure>",
        _table(("order at month", "metro", "PoP", "unit", "needed at month", ""), rows),
    ]
    path.write_text(_page("Growth and unit orders", body))
