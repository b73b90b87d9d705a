"""`flows`: the NetFlow/IPFIX collector, what it has stored, and its export to Parquet."""

from __future__ import annotations

import errno
import ipaddress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from edgeplane._errors import EdgeplaneError
from edgeplane.cli._options import data_dir_option, fleet_option
from edgeplane.cli._root import _console, _fail, _load, _lock_or_exit, _print_json, _run, cli, default_data_dir
from edgeplane.local import DirectoryLock

DEFAULT_LISTEN = "127.0.0.1:2055"  # NetFlow's usual port; loopback unless asked
DEFAULT_HTTP = "127.0.0.1:9179"


def _address(text: str, what: str) -> tuple[str, int]:
    """ADDR:PORT or [IPv6]:PORT."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise click.BadParameter(f"expected ADDR:PORT (e.g. 127.0.0.1:2055), got {text!r}", param_hint=what) from None
    if not sep or not 0 <= number <= 65535:
        raise click.BadParameter(f"expected ADDR:PORT with a port 0-65535, got {text!r}", param_hint=what)
    return host, number


def when(text: str | None, what: str) -> int | None:
    """An ISO 8601 time (UTC unless it says otherwise) as unix milliseconds."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 time like 2026-12-01T00:00, got {text!r}", param_hint=what
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


window_options = [
    click.option("--since", help="Only flows that ended at or after this time (ISO 8601, UTC by default)."),
    click.option("--until", help="Only flows that ended before this time (ISO 8601, UTC by default)."),
]


def with_window(command: Any) -> Any:
    for option in reversed(window_options):
        command = option(command)
    return command


@cli.group()
def flows() -> None:
    """NetFlow v5/v9 and IPFIX: collect flows, see what was collected, export it as Parquet."""


@flows.command("collect")
@click.option(
    "--listen", default=DEFAULT_LISTEN, show_default=True, help="UDP ADDR:PORT the exporters send to."
)  # fmt: skip
@click.option(
    "--pop", "pop_code", help="Tag every flow with this PoP (default: by exporter, the fleet's flow_exporters)."
)
@click.option(
    "--http", "http", default=DEFAULT_HTTP, show_default=True, help="ADDR:PORT of /metrics and /api/flows/stats."
)
@click.option(
    "--retention-hours", default=48.0, show_default=True, type=click.FloatRange(min=0, max=87_600, min_open=True),
    help="How long raw flows are kept; their traffic lives on in the 5-minute table.",
)  # fmt: skip
@click.option(
    "--aggregate-days", default=400.0, show_default=True, type=click.FloatRange(min=0, max=36_500, min_open=True),
    help="How long the 5-minute table is kept.",
)  # fmt: skip
@click.option(
    "--receive-buffer", default=8 << 20, show_default=True, type=click.IntRange(min=65_536, max=(1 << 31) - 1),
    help="Bytes of UDP receive queue to ask the kernel for (held to net.core.rmem_max), as nfcapd's -B.",
)  # fmt: skip
@data_dir_option
@fleet_option
@click.pass_context
def flows_collect(
    ctx: click.Context,
    listen: str,
    pop_code: str | None,
    http: str,
    retention_hours: float,
    aggregate_days: float,
    receive_buffer: int,
    data_dir: Path | None,
    fleet_path: Path | None,
) -> None:
    """Receive flows (foreground) and store them in the data directory's flows.duckdb, tagged with the PoP and
    metro of their exporter. Stop with Ctrl-C: what arrived is stored first."""
    from edgeplane.peering import CollectorOptions, FlowCollector

    udp_host, udp_port = _address(listen, "--listen")
    http_host, http_port = _address(http, "--http")
    fleet = _load(ctx, fleet_path)
    if pop_code is not None and pop_code not in fleet.pop_by_code:
        raise click.BadParameter(f"no PoP {pop_code!r} in the fleet", param_hint="--pop")
    data_dir = data_dir or default_data_dir()
    try:
        lock = _lock_or_exit(ctx, DirectoryLock(data_dir / "flows.lock", "flow collector", data_dir))
    except OSError as error:
        _fail(ctx, f"{data_dir}: cannot use it as the data directory ({error.strerror or error})")
    options = CollectorOptions(
        retention_hours=retention_hours, aggregate_days=aggregate_days, receive_buffer_bytes=receive_buffer
    )
    collector = FlowCollector(fleet, data_dir, pop=pop_code, options=options)

    def ready(udp: str, url: str) -> None:
        click.echo(f"collecting NetFlow v5/v9 and IPFIX on udp {udp}; metrics at {url}/metrics", nl=True)

    try:
        _run(collector.run(udp_host, udp_port, http_host, http_port, on_ready=ready))
    except OSError as error:
        if error.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            _fail(ctx, f"cannot listen on {listen} or {http}: {error.strerror or error}")
        _fail(ctx, f"the flow collector stopped: {error.strerror or error} ({error.filename or data_dir})")
    finally:
        lock.release()


def store_of(data_dir: Path | None) -> Any:
    from edgeplane.peering import FlowStore

    return FlowStore(data_dir or default_data_dir())


@flows.command("stats")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def flows_stats(ctx: click.Context, data_dir: Path | None, as_json: bool) -> None:
    """What the collector has received and stored, per exporter, and what it dropped and why."""
    try:
        stats = store_of(data_dir).stats()
    except EdgeplaneError as error:
        _fail(ctx, error)
    if as_json:
        _print_json(stats)
        return
    console = _console(ctx)
    stored = stats["stored"]
    console.print(
        f"{stats['records']} records from {stats['exporters']} exporters ({stored['raw']} raw flows kept,"
        f" {stored['in_5m_bins']} counted in 5-minute bins)"
    )
    table = Table(title="exporters")
    for column in ("exporter", "pop", "metro", "records", "last seen"):
        table.add_column(column)
    for row in stats["by_exporter"]:
        seen = datetime.fromtimestamp(row["last_seen_ms"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(row["address"], row["pop"] or "-", row["metro"] or "-", str(row["records"]), seen)
    console.print(table)
    dropped = stats["dropped"]
    console.print(
        "dropped: " + (", ".join(f"{reason} {count}" for reason, count in dropped.items()) if dropped else "nothing")
    )


@flows.command("export")
@click.option("--to", "destination", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Directory to write the Parquet files into (metro=/date=/hour= partitions).")  # fmt: skip
@click.option("--replace", is_flag=True, help="Replace an earlier export in that directory (refused otherwise).")
@with_window
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def flows_export(
    ctx: click.Context,
    destination: Path,
    replace: bool,
    since: str | None,
    until: str | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Write the stored flows as partitioned Parquet (raw flows under flows/, traffic per 5-minute bin and remote
    address under traffic_5m/), for ClickHouse, Trino or Spark when one machine is not enough."""
    try:
        done = store_of(data_dir).export(
            destination, since_ms=when(since, "--since"), until_ms=when(until, "--until"), replace=replace
        )
    except EdgeplaneError as error:
        _fail(ctx, error)
    if as_json:
        _print_json(done)
        return
    _console(ctx).print(
        f"wrote {done['flows']} flows and {done['traffic_5m']} five-minute traffic rows in {len(done['files'])} files"
        f" under {done['path']}"
    )
