"""HTML reports of plans and of peering candidates, with plots (matplotlib, drawn to inline SVG: one self-contained
file, no network)."""

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
th.text, td.text { text-align: left; white-space: normal; max-width: 22em; }
.note { color: #666; }
"""
# Names on a chart are cut to this many characters (the table has them whole).
CHART_LABEL_CHARS = 32


class _Html(str):
    """HTML this module wrote itself: a table puts it in as it is. Every other cell is text, and escaped."""

    __slots__ = ()


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


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], text_columns: Sequence[int] = ()) -> str:
    """A table of text cells, escaped (names come from files others write); an _Html cell goes in as it is.
    Columns in ``text_columns`` are left-aligned and wrap."""
    head = "".join(
        f"<th{' class=text' if i in text_columns else ''}>{html.escape(str(h))}</th>" for i, h in enumerate(header)
    )
    lines = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            opening = "<td class=text>" if i in text_columns else "<td>"
            cells.append(f"{opening}{cell if isinstance(cell, _Html) else html.escape(str(cell))}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
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
         _Html(f"<span class='bad'>late by {o.late_by_months:g} months</span>") if o.late_by_months else "")
        for o in growth.orders
    ]  # fmt: skip
    body = [
        f"<p>{len(growth.orders)} units to add.</p>",
        f"<figure>{_svg(figure)}</figure>",
        _table(("order at month", "metro", "PoP", "unit", "needed at month", ""), rows),
    ]
    path.write_text(_page("Growth and unit orders", body))


def peering_html(fleet: Fleet, report: dict[str, Any]) -> str:
    """`peering candidates --html`: per metro, its candidates for a direct session as a chart (p95 Mbps, each bar
    labelled with its share of the metro's transit traffic) and a table. Every name in the report is escaped: they
    come from PeeringDB files and routes, which others write."""
    transit_names = {t.asn: t.name for p in fleet.pops for t in p.transits}
    routes = report.get("routes") or {}
    bin_minutes = float(report.get("bin_seconds", 300)) / 60
    body = [
        f"<p>Routes: {html.escape(str(routes.get('source', '?')))} ({int(routes.get('prefixes', 0)):,} prefixes)."
        f" Traffic is the 95th percentile of {bin_minutes:g}-minute bins, the larger of in and out, as transits"
        " bill it; the share is of all the bytes through the metro's transits.</p>"
    ]
    for metro in report.get("metros", []):
        body.extend(_peering_metro(metro, transit_names))
    return _page("Peering candidates", body)


def _peering_metro(metro: dict[str, Any], transit_names: dict[int, str]) -> list[str]:
    code, name = str(metro["code"]), str(metro.get("name") or metro["code"])
    rows: list[dict[str, Any]] = metro.get("candidates", [])
    transits = metro.get("transits", [])
    out = [f"<h2 id='metro-{html.escape(code, quote=True)}'>{html.escape(name)} ({html.escape(code)})</h2>"]
    carried = ", ".join(
        f"{t['pop']} AS{t['asn']} {t.get('name') or transit_names.get(t['asn'], '')} {t['p95_mbps']:,.1f} Mbps"
        for t in transits
    )
    if not metro.get("bins"):
        out.append("<p>No traffic through its transits in this window: no candidates.</p>")
        return out
    out.append(
        f"<p class='note'>{int(metro['bins'])} bins; {_bytes(metro.get('transit_bytes', 0))} through its"
        f" transits{': ' + html.escape(carried) if carried else ''}"
        f"{f'; {_bytes(unrouted)} with no route' if (unrouted := metro.get('unrouted_bytes', 0)) else ''}.</p>"
    )
    if not rows:
        out.append("<p>No candidates: no traffic through its transits to networks behind them in this window.</p>")
        return out
    out.append(f"<figure>{_svg(_peering_chart(name, rows))}</figure>")
    table_rows = []
    for row in rows:
        saving = row.get("saving_per_month")
        via = ", ".join(f"AS{asn} {transit_names.get(asn, '')}".strip() for asn in row.get("via_transits", []))
        meet = ", ".join(f"{m['kind']}: {m['name']}" for m in row.get("meet", []))
        table_rows.append((
            f"AS{row['asn']}", row.get("name") or "", f"{row['p95_mbps']:,.3f}", f"{row['share']:.1%}", via,
            "" if saving is None else f"{saving:,.2f}", meet, row.get("policy") or "",
        ))  # fmt: skip
    header = ("AS", "name", "p95 Mbps", "share", "via transits", "saving/month", "meet", "policy")
    out.append(_table(header, table_rows, text_columns=(1, 4, 6, 7)))
    return out


def _peering_chart(metro_name: str, rows: Sequence[dict[str, Any]]) -> Any:
    """Horizontal bars of the candidates' p95 Mbps, the first on top, each labelled with its share."""
    plt = _pyplot()
    labels = [_chart_label(f"AS{r['asn']} {r.get('name') or ''}".strip()) for r in rows]
    values = [float(r["p95_mbps"]) for r in rows]
    figure, axes = plt.subplots(figsize=(9, 0.9 + 0.32 * len(rows)))
    positions = range(len(rows))
    bars = axes.barh(positions, values, color="tab:blue")
    axes.set_yticks(positions, labels)
    for label in axes.get_yticklabels():
        label.set_parse_math(False)  # a "$" in a network's name is a dollar, not TeX
    axes.invert_yaxis()
    axes.bar_label(bars, [f" {float(r['share']):.1%}" for r in rows], fontsize="small")
    axes.margins(x=0.15)
    axes.set_xlabel("p95 Mbps (label: share of the metro's transit traffic)")
    title = axes.set_title(_chart_label(f"{metro_name}: peering candidates"))
    title.set_parse_math(False)
    return figure


def _chart_label(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= CHART_LABEL_CHARS else flat[: CHART_LABEL_CHARS - 1] + "…"


def _bytes(count: float) -> str:
    """A byte count in decimal units, as transits bill."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000:
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    return f"{count:,.1f} TB"
