"""`control run`, `gateway run`, `site run`: each service on its own, as `up` starts them."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edgeplane._errors import ConfigError, EdgeplaneError
from edgeplane.cli._options import (
    admin_token_option,
    auth_option,
    data_dir_option,
    fabric_options,
    fleet_option,
    gateway_timeout_options,
    graceful_shutdown_option,
    home_metro_option,
    host_option,
    reset_store_option,
    site_backend_options,
    store_option,
)
from edgeplane.cli._root import (
    _auth_choice,
    _fail,
    _load,
    _lock_or_exit,
    _open_access_log,
    _open_store_or_exit,
    _run,
    cli,
    default_data_dir,
)
from edgeplane.local import DirectoryLock

if TYPE_CHECKING:
    from edgeplane.fabric import FabricNode
    from edgeplane.fleet import Fleet


@cli.group()
def control() -> None:
    """The control plane service."""


@control.command("run")
@fleet_option
@host_option()
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@data_dir_option
@admin_token_option
@click.option("--agent-timeout", default=2.0, show_default=True, help="Seconds without a report before a site is down.")
@click.option(
    "--limit-window", default=60.0, show_default=True, help="Seconds of a rate-limit window (rpm/tpm scale to it)."
)
@graceful_shutdown_option
@reset_store_option
@store_option
@click.pass_context
def control_run(
    ctx: click.Context,
    fleet_path: Path | None,
    host: str,
    port: int,
    data_dir: Path | None,
    admin_token: str | None,
    agent_timeout: float,
    limit_window: float,
    graceful_shutdown_seconds: float,
    reset_store: bool,
    store_url: str | None,
) -> None:
    """Serve the control plane API."""
    from edgeplane.control import ControlPlane, FleetState
    from edgeplane.dashboard import with_dashboard

    fleet = _load(ctx, fleet_path)
    data_dir = data_dir or default_data_dir()
    # Its own lock file (`up` holds up.lock in the same directory): two control planes on one SQLite store refuse;
    # on a shared store (PostgreSQL) they are replicas, and the data directory holds nothing of the store's.
    shared = (store_url or "").strip().lower().startswith(("postgresql://", "postgres://"))
    lock = DirectoryLock(data_dir / "control.lock", "edgeplane control run", data_dir / "edgeplane.db")
    if not shared:
        _lock_or_exit(ctx, lock)
    store = _open_store_or_exit(ctx, data_dir, reset=reset_store, url=store_url)
    plane = with_dashboard(
        ControlPlane(
            FleetState(
                fleet, store, agent_timeout_seconds=agent_timeout, graceful_shutdown_seconds=graceful_shutdown_seconds
            ),
            admin_token=admin_token,
            limit_window_seconds=limit_window,
        )
    )
    try:
        _run(plane.run(host, port, on_ready=lambda url: print(f"control plane at {url}", flush=True)))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except OSError as error:
        if error.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        _fail(ctx, EdgeplaneError(f"the control plane cannot listen on {host}:{port}: {error.strerror}"))
    finally:
        if not shared:
            lock.release()


@cli.group()
def gateway() -> None:
    """The OpenAI-compatible gateway service."""


@gateway.command("run")
@host_option()
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--pop",
    help="The PoP whose gateway this is: its own site serves first, answers carry x-edgeplane-ingress, and its"
    " metro is the home metro unless --home-metro says otherwise.",
)
@home_metro_option
@click.option("--trusted-proxy", multiple=True, help="Network whose X-Forwarded-For is believed (default: loopback).")
@click.option(
    "--max-attempts", default=3, show_default=True, type=click.IntRange(1, 10), help="Sites tried per request."
)
@gateway_timeout_options()
@click.option(
    "--request-budget",
    default=30.0,
    show_default=True,
    help="Seconds in which tries may start; a stream's try ends with it, a whole answer's runs to --read-timeout.",
)
@auth_option
@click.option(
    "--access-log", type=click.Path(path_type=Path, dir_okay=False), help="One JSON line per request ('-': stderr)."
)
@click.option(
    "--max-connections-per-address",
    default=256,
    show_default=True,
    type=click.IntRange(0),
    help="Open connections one client address may hold (0: no limit; raise it behind a proxy that pools).",
)
@click.option(
    "--snapshot-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Keep the last snapshot acted on here (written whole, then renamed); started while no control plane"
    " replica answers, the gateway serves from it and /healthz says so (snapshot_source: disk).",
)
@click.pass_context
def gateway_run(
    ctx: click.Context,
    host: str,
    port: int,
    pop: str | None,
    home_metro: str | None,
    trusted_proxy: tuple[str, ...],
    max_attempts: int,
    first_token_timeout: float,
    read_timeout: float,
    request_budget: float,
    auth: str | None,
    access_log: Path | None,
    max_connections_per_address: int,
    snapshot_file: Path | None,
) -> None:
    """Serve the OpenAI API, routing on the control plane's snapshots."""
    require_keys = _auth_choice(host, auth)
    if access_log is not None:
        _open_access_log(access_log)
    from edgeplane.gateway import DEFAULT_TRUSTED_PROXIES, ClientLocator, Gateway, GatewayOptions, SnapshotWatcher
    from edgeplane.web import ConnectionLimits, serve, supervised

    watcher = SnapshotWatcher(
        ctx.obj["control_url"], home_metro=home_metro, pop=pop, admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"),
        snapshot_file=snapshot_file,
    )  # fmt: skip
    try:
        locator = ClientLocator(trusted_proxy or DEFAULT_TRUSTED_PROXIES)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--trusted-proxy") from None
    options = GatewayOptions(
        max_attempts, first_token_timeout, read_timeout, request_budget, auth=require_keys, pop=pop
    )
    app = Gateway(watcher, locator=locator, options=options)

    async def main() -> None:
        try:
            await serve(
                app.app(),
                host,
                port,
                on_ready=lambda url: print(f"gateway{f' of {pop}' if pop else ''} at {url}", flush=True),
                background=lambda url: [
                    supervised("snapshot watch", watcher.watch_forever),
                    supervised("gateway probes", app.probe_forever),
                    supervised("gateway reports", app.report_forever),
                    supervised("lease keeping", app.lease_forever),
                ],
                limits=ConnectionLimits(max_connections_per_address=max_connections_per_address or None),
            )
        finally:
            await watcher.close()

    _run(main())


@cli.group()
def site() -> None:
    """The site agent of one PoP."""


@site.command("run")
@click.option("--pop", required=True, help="Code of the PoP this agent serves.")
@fleet_option
@host_option()
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--advertise-address",
    help="Address gateways reach this agent at, reported to the control plane (default: --host, which other"
    " hosts cannot reach when it is a wildcard such as 0.0.0.0).",
)
@site_backend_options
@fabric_options
@click.option("--no-report", is_flag=True, help="Do not report to the control plane.")
@click.pass_context
def site_run(
    ctx: click.Context,
    pop: str,
    fleet_path: Path | None,
    host: str,
    port: int,
    advertise_address: str | None,
    backend: str,
    gguf_path: Path | None,
    upstream_url: str | None,
    seed: int,
    time_scale: float,
    no_report: bool,
    redfish: tuple[str, ...],
    dcgm: tuple[str, ...],
    redfish_emulate: bool,
    data_dir: Path | None,
    link_scale: float,
    store_limit: int | None,
) -> None:
    """Serve the models placed at one PoP."""
    from prometheus_client import CollectorRegistry

    from edgeplane.site import ModelLoader, SiteAgent, SiteOptions, build_backends
    from edgeplane.telemetry import UnitAddressError, pop_watch

    fleet = _load(ctx, fleet_path)
    registry = CollectorRegistry()
    options = SiteOptions(backend, seed, time_scale, gguf_path, upstream_url)
    try:
        backends = build_backends(fleet, pop, options, registry)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    try:
        watch = pop_watch(
            fleet, pop, registry, redfish=redfish, dcgm=dcgm, emulate=redfish_emulate, time_scale=time_scale,
            seed=seed, admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"),
        )  # fmt: skip
    except UnitAddressError as error:
        raise click.BadParameter(str(error), param_hint=f"--{error.source}") from None
    fabric = _fabric_node(ctx, fleet, pop, data_dir, link_scale, store_limit)
    agent = SiteAgent(
        pop,
        backends,
        kind=backend,
        registry=registry,
        control_url=None if no_report else ctx.obj["control_url"],
        admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"),
        loader=None if no_report else ModelLoader(fleet, pop, options, registry, fabric),
        watch=watch,
        fabric=fabric,
        link_scale=link_scale,
    )
    agent.replicas = dict(fleet.models_at(pop))
    _run(
        agent.run(
            host,
            port,
            on_ready=lambda url: print(f"site {pop} at {url}", flush=True),
            advertise_address=advertise_address,
        )
    )


def _fabric_node(
    ctx: click.Context, fleet: Fleet, pop: str, data_dir: Path | None, link_scale: float, store_limit: int | None
) -> FabricNode:
    """The site's part of the fabric: its object store in its data directory, its links at their scaled capacity."""
    from edgeplane.fabric import FabricError, FabricNode, ObjectStore
    from edgeplane.planning import fabric_links

    root = (data_dir or default_data_dir() / "sites" / pop) / "fabric"
    try:
        store = ObjectStore(root, limit_bytes=store_limit)
    except (FabricError, OSError) as error:
        _fail(ctx, f"cannot open the fabric store in {root}: {error}")
    return FabricNode(
        pop, store, fabric_links(fleet, link_scale), pops=list(fleet.pop_by_code),
        admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"),
    )  # fmt: skip
