"""`unit`: modular units, from order to decommissioning."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from edgeplane._errors import EdgeplaneError
from edgeplane.cli._root import _api, _console, _fail, _print_json, cli
from edgeplane.units import UnitState


@cli.group()
def unit() -> None:
    """Modular units: their lifecycle from order to decommissioning (only units in service carry traffic)."""


def _unit_line(u: dict[str, Any]) -> str:
    due = f", due {time.strftime('%Y-%m-%d', time.gmtime(u['due']))}" if u.get("due") else ""
    return f"{u['code']} at {u['pop']}: {u['state']} since {_when(u['since'])} by {u['by']}{due}"


def _print_unit(ctx: click.Context, u: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(u, one_line=True)
    else:
        _console(ctx).print(_unit_line(u), highlight=False)


def _when(seconds: float) -> str:
    return "the fleet file" if not seconds else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


@unit.command("list")
@click.option("--pop", default=None, help="Only this PoP's units.")
@click.option("--state", "state", default=None, help="Only units in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def unit_list(ctx: click.Context, pop: str | None, state: str | None, as_json: bool) -> None:
    """Every unit with its state, since when, and who set it."""
    wanted = {k: v for k, v in (("pop", pop), ("state", state)) if v is not None}
    query = f"?{urllib.parse.urlencode(wanted)}" if wanted else ""
    units = _api(ctx, "GET", f"/api/units{query}")["units"]  # the control plane refuses a PoP or state it lacks
    if as_json:
        _print_json({"units": units})
        return
    table = Table(title=f"edgeplane units ({len(units)})")
    for column in ("unit", "PoP", "state", "traffic", "since", "by", "due"):
        table.add_column(column)
    for u in units:
        due = time.strftime("%Y-%m-%d", time.gmtime(u["due"])) if u.get("due") else ""
        colour = "green" if u["carries_traffic"] else "yellow"
        table.add_row(u["code"], u["pop"], f"[{colour}]{u['state']}[/]", "yes" if u["carries_traffic"] else "no",
                      _when(u["since"]), u["by"], due)  # fmt: skip
    _console(ctx).print(table)


@unit.command("show")
@click.argument("code")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def unit_show(ctx: click.Context, code: str, as_json: bool) -> None:
    """One unit: its state, history and factory acceptance results."""
    u = _api(ctx, "GET", f"/api/units/{code}")
    if as_json:
        _print_json(u)
        return
    console = _console(ctx)
    console.print(_unit_line(u), highlight=False)
    for change in u["history"]:
        note = f" ({change['note']})" if change["note"] else ""
        console.print(f"  {_when(change['at'])}: {change['state']} by {change['by']}{note}", highlight=False)
    if u.get("acceptance"):
        console.print(f"  factory acceptance: {json.dumps(u['acceptance'])}", highlight=False)


@unit.command("set-state")
@click.argument("code")
@click.argument("state", type=click.Choice([str(s) for s in UnitState]))
@click.option("--note", default="", help="Why, for the audit log and the unit's history.")
@click.option("--acceptance", default=None, help='Factory acceptance results, JSON or @FILE: {"passed": true, ...}.')
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def unit_set_state(ctx: click.Context, code: str, state: str, note: str, acceptance: str | None, as_json: bool) -> None:
    """Move a unit along its lifecycle (needs EDGEPLANE_ADMIN_TOKEN when the control plane is not on loopback)."""
    payload: dict[str, Any] = {"state": state, "note": note}
    if acceptance is not None:
        text = _read_acceptance(acceptance[1:]) if acceptance.startswith("@") else acceptance
        try:
            payload["acceptance"] = json.loads(text)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"not JSON: {error}", param_hint="--acceptance") from None
    _print_unit(ctx, _api(ctx, "POST", f"/api/units/{code}/state", payload), as_json)


def _read_acceptance(path: str) -> str:
    """The text of an --acceptance @FILE, or a usage error naming the file (as one that is not JSON gets)."""
    try:
        return Path(path).read_text("utf-8")
    except OSError as error:
        raise click.BadParameter(f"cannot read {path}: {error.strerror}", param_hint="--acceptance") from None
    except UnicodeDecodeError as error:
        raise click.BadParameter(
            f"{path} is not UTF-8 (byte {error.start}: {error.reason})", param_hint="--acceptance"
        ) from None


@unit.command("order")
@click.argument("pop")
@click.option("--note", default="", help="Why, for the audit log.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def unit_order(ctx: click.Context, pop: str, note: str, as_json: bool) -> None:
    """Record a unit ordered for a PoP (the fleet's unit template, due after its lead time)."""
    _print_unit(ctx, _api(ctx, "POST", "/api/units", {"pop": pop, "note": note}), as_json)


@unit.command("fault")
@click.argument("code")
@click.argument("kind", required=False)  # checked by the emulator, which lists the kinds it knows
@click.option("--clear", is_flag=True, help="Clear the unit's injected fault.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def unit_fault(ctx: click.Context, code: str, kind: str | None, clear: bool, as_json: bool) -> None:
    """Inject a fault into a unit's emulated Redfish service (as `up` runs them), or --clear it: coolant, leak,
    inlet, pdu, fire-armed, fire-discharged, xid (a GPU fallen off the bus), gpu-hot, or bad telemetry
    (malformed, missing, silent)."""
    from edgeplane.web import HttpClient

    if (kind is None) == (not clear):
        raise click.UsageError("give a fault KIND, or --clear")
    url = next(
        (u.get("redfish") for p in _api(ctx, "GET", "/api/status")["pops"] for c, u in p.get("units", {}).items()
         if c == code),
        None,
    )  # fmt: skip
    if not url:
        _fail(ctx, f"no Redfish service reported for unit {code!r} (`edgeplane unit list` shows units)")

    async def send() -> tuple[int, Any]:
        client = HttpClient()
        try:
            path = f"{url}/redfish/v1/Oem/Edgeplane/Fault"
            token = os.environ.get("EDGEPLANE_ADMIN_TOKEN")
            headers = {"Authorization": f"Bearer {token}"} if token else None
            if clear:
                return await client.request_json("DELETE", path, headers=headers)
            return await client.request_json("POST", path, {"kind": kind}, headers=headers)
        finally:
            await client.close()

    try:
        status, answer = asyncio.run(send())
    except EdgeplaneError as error:
        _fail(ctx, f"unit {code}'s Redfish service at {url}: {error}")
    if status != 200:
        said = answer.get("error") if isinstance(answer, dict) else None
        message = said.get("message") if isinstance(said, dict) else None
        _fail(ctx, f"unit {code}'s Redfish service answered {status}: {message or answer}")
    if as_json:
        _print_json({**answer, "redfish": url}, one_line=True)
        return
    _console(ctx).print(f"unit {code}: fault {answer.get('fault') or 'cleared'} ({url})", highlight=False)
