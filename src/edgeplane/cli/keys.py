"""`keys`: tenants' API keys."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from edgeplane.cli._root import _api, _console, _print_json, cli


@cli.group()
def keys() -> None:
    """API keys: who may use the gateway, for which models, where, and how much."""


@keys.command("create")
@click.option("--tenant", required=True, help="Who the key belongs to.")
@click.option("--continent", help="Serve this key only on this continent (code).")
@click.option("--region", help="Serve this key only in this region (code).")
@click.option("--rpm", type=click.IntRange(1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(1), help="Tokens (prompt + completion) per minute.")
@click.option("--models", help="Comma-separated models the key may use (default: all).")
@click.option("--json", "as_json", is_flag=True, help='Print {"id": ..., "key": ...} for scripts.')
@click.pass_context
def keys_create(
    ctx: click.Context,
    tenant: str,
    continent: str | None,
    region: str | None,
    rpm: int | None,
    tpm: int | None,
    models: str | None,
    as_json: bool,
) -> None:
    """Create a key; it is shown this once and stored only as a hash."""
    payload: dict[str, Any] = {"tenant": tenant, "continent": continent, "region": region, "rpm": rpm, "tpm": tpm}
    if models:
        payload["models"] = [m.strip() for m in models.split(",") if m.strip()]
    data = _api(ctx, "POST", "/api/keys", payload)
    if as_json:
        _print_json(data, one_line=True)
        return
    console = _console(ctx)
    console.print(f"key {data['id']} for tenant {data['tenant']}:", highlight=False)
    console.print(f"  {data['key']}", highlight=False, markup=False)
    console.print("Store it now: it is not shown again.", highlight=False)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """Every key with its tenant, limits and residency (never the key itself)."""
    data = _api(ctx, "GET", "/api/keys")
    if as_json:
        _print_json(data)
        return
    table = Table(title="API keys")
    for column in ("id", "tenant", "pinned to", "rpm", "tpm", "models", "state"):
        table.add_column(column)
    for key in data["keys"]:
        pinned = (key["region"] and f"region {key['region']}") or (key["continent"] and f"continent {key['continent']}")
        table.add_row(
            key["id"],
            key["tenant"],
            pinned or "-",
            str(key["rpm"] or "-"),
            str(key["tpm"] or "-"),
            ", ".join(key["models"]) if key["models"] is not None else "all",
            "revoked" if key["revoked"] else "active",
        )
    _console(ctx).print(table)


@keys.command("revoke")
@click.argument("key_id", metavar="ID")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key; gateways refuse it at once."""
    data = _api(ctx, "DELETE", f"/api/keys/{key_id}")
    note = "" if data.get("changed") else " (it was revoked already)"
    _console(ctx).print(f"key {key_id} revoked{note}", highlight=False)
