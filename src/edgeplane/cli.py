"""The `edgeplane` command: run the services, inspect the fleet, drain and route."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import platformdirs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from edgeplane._errors import ConfigError, EdgeplaneError
from edgeplane.fleet import Fleet, FleetError, load_fleet
from edgeplane.local import DirectoryLock, LockHeld
from edgeplane.units import UnitState

if TYPE_CHECKING:
    from edgeplane.control import SQLiteStore

DEFAULT_CONTROL_URL = "http://127.0.0.1:8081"


RESET_STORE_HELP = (
    "Start with an empty store on purpose: the data directory's edgeplane.db (damaged or not) is moved aside to"
    " edgeplane.db.broken-TIMESTAMP, never deleted."
)


def default_data_dir() -> Path:
    return Path(os.environ.get("EDGEPLANE_DATA_DIR") or platformdirs.user_data_dir("edgeplane"))


def _console(ctx: click.Context) -> Console:
    console = ctx.obj.get("console") if isinstance(ctx.obj, dict) else None
    return console if isinstance(console, Console) else Console()


def _load(ctx: click.Context, path: Path | None) -> Fleet:
    try:
        return load_fleet(path)
    except FleetError as error:
        console = _console(ctx)
        console.print(f"[red]fleet file refused[/] ({len(error.problems)} problem(s)):", highlight=False)
        for problem in error.problems:
            console.print(f"  {problem}", highlight=False, markup=False)
        ctx.exit(2)
        raise  # unreachable: ctx.exit raises


def _open_access_log(path: Path) -> None:
    handler: logging.Handler
    if str(path) == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("edgeplane.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)


def _auth_choice(host: str, auth: str | None) -> bool:
    """Keys are required beyond loopback; on loopback they are off unless asked for."""
    from edgeplane.control import is_loopback

    if auth == "off" and not is_loopback(host):
        raise click.UsageError(f"--auth off is refused when listening on {host}: beyond loopback, keys are required")
    return auth == "on" or not is_loopback(host)


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency, but keep asyncio as the fallback
        asyncio.run(coro)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--control",
    "control_url",
    envvar="EDGEPLANE_CONTROL_URL",
    default=DEFAULT_CONTROL_URL,
    show_default=True,
    help="URL of the control plane (or EDGEPLANE_CONTROL_URL).",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Log level of services.",
)
@click.pass_context
def cli(ctx: click.Context, control_url: str, log_level: str) -> None:
    """edgeplane: run AI inference at the edge, nearest healthy metro first."""
    if not isinstance(ctx.obj, dict):
        ctx.obj = {}
    ctx.obj["control_url"] = control_url.rstrip("/")
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )


# -- up ----------------------------------------------------------------------------------------
@cli.command()
@click.option(
    "--fleet", "fleet_path", type=click.Path(path_type=Path), help="Fleet file (default: the embedded fleet)."
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every service binds.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Gateway port.")
@click.option(
    "--control-port",
    default=8081,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Control plane port.",
)
@click.option("--backend", default="emulator", show_default=True, type=click.Choice(["emulator", "llamacpp"]))
@click.option(
    "--gguf",
    "gguf_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="GGUF file for the llamacpp backend (default: a tiny random-weights model made on first use).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where state is kept (or EDGEPLANE_DATA_DIR).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the emulator.")
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Emulator delays are multiplied by this.",
)
@click.option("--home-metro", help="The gateway's own metro, for clients outside every metro's prefixes.")
@click.option(
    "--admin-token",
    envvar="EDGEPLANE_ADMIN_TOKEN",
    help="Token for admin actions (required beyond loopback).",
)
@click.option("--ready-timeout", default=120.0, show_default=True, help="Seconds to wait for the fleet to serve.")
@click.option("--first-token-timeout", type=float, help="Gateway: seconds to wait for a stream's first event (10).")
@click.option("--read-timeout", type=float, help="Gateway: seconds to wait for a whole non-streamed answer (300).")
@click.option(
    "--auth",
    type=click.Choice(["on", "off"]),
    default=None,
    help="Require API keys (default: off on loopback, on anywhere else; off is refused beyond loopback).",
)
@click.option(
    "--graceful-shutdown-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Control plane: how long a drained metro's prefixes carry GRACEFUL_SHUTDOWN before their withdrawal.",
)
@click.option("--reset-store", is_flag=True, help=RESET_STORE_HELP)
@click.pass_context
def up(
    ctx: click.Context,
    fleet_path: Path | None,
    host: str,
    port: int,
    control_port: int,
    backend: str,
    gguf_path: Path | None,
    data_dir: Path | None,
    seed: int,
    time_scale: float,
    home_metro: str | None,
    admin_token: str | None,
    ready_timeout: float,
    first_token_timeout: float | None,
    read_timeout: float | None,
    auth: str | None,
    graceful_shutdown_seconds: float,
    reset_store: bool,
) -> None:
    """Start the control plane, the gateway and one site agent per PoP; Ctrl-C stops them all."""
    require_keys = _auth_choice(host, auth)
    from edgeplane.local import Supervisor, UpOptions, stop_on_sigterm

    console = _console(ctx)
    fleet = _load(ctx, fleet_path)
    data_dir = data_dir or default_data_dir()
    # Before anything starts: a second `up` on this directory must leave the first one's fleet alone.
    lock = _lock_or_exit(ctx, DirectoryLock(data_dir / "up.lock", "edgeplane up", data_dir))
    if not reset_store:  # refuse a broken store here, once, rather than through a control plane that keeps failing
        _open_store_or_exit(ctx, data_dir, reset=False).close()
    if backend == "llamacpp" and gguf_path is None:
        from edgeplane.site import write_tiny_llama_gguf

        gguf_path = data_dir / "models" / "tiny-llama.gguf"
        if not gguf_path.exists():
            write_tiny_llama_gguf(gguf_path)
        console.print(
            f"llamacpp backend: every model loads {gguf_path} (tiny random weights; use --gguf for a real model)"
        )
    options = UpOptions(
        fleet_path=fleet_path,
        host=host,
        port=port,
        control_port=control_port,
        backend=backend,
        data_dir=data_dir,
        gguf_path=gguf_path,
        seed=seed,
        time_scale=time_scale,
        home_metro=home_metro,
        log_level=ctx.find_root().params.get("log_level", "warning"),
        admin_token=admin_token,
        ready_timeout_seconds=ready_timeout,
        control_args=["--graceful-shutdown-seconds", str(graceful_shutdown_seconds)],
        reset_store=reset_store,
        gateway_args=[
            *(["--first-token-timeout", str(first_token_timeout)] if first_token_timeout else []),
            *(["--read-timeout", str(read_timeout)] if read_timeout else []),
            "--auth",
            "on" if require_keys else "off",
            "--access-log",
            str(data_dir / "access.log"),
        ],
    )
    supervisor = Supervisor(fleet, options, console)
    stop_on_sigterm()
    try:
        supervisor.start()
        console.print(
            f"[green]edgeplane is up[/]: {len(fleet.metros)} metros, {len(fleet.pops)} PoPs, backend {backend}"
        )
        console.print(f"  gateway (OpenAI API)  {supervisor.gateway_url}/v1")
        console.print(f"  control plane         {supervisor.control_url}/ (dashboard; API under /api/)")
        console.print(f"  data directory        {data_dir}")
        keys_note = "required (edgeplane keys create --tenant NAME)" if require_keys else "off (loopback)"
        console.print(f"  API keys              {keys_note}")
        console.print(f"  access log            {data_dir / 'access.log'}")
        console.print(
            "Try: edgeplane status; edgeplane route --client 198.18.0.1 --model "
            f"{fleet.models[0].name}. Ctrl-C stops everything.",
            highlight=False,
        )
        sys.stdout.flush()
        supervisor.wait()
    except KeyboardInterrupt:
        console.print("stopping...")
    except EdgeplaneError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        ctx.exit(1)
    finally:
        supervisor.stop()
        lock.release()
    console.print("stopped")


def _lock_or_exit(ctx: click.Context, lock: DirectoryLock) -> DirectoryLock:
    try:
        lock.acquire()
    except LockHeld as error:
        _refuse(ctx, error)
    return lock


def _open_store_or_exit(ctx: click.Context, data_dir: Path, *, reset: bool) -> SQLiteStore:
    """The control plane's store, checked: a file that is empty, damaged or not ours ends the command."""
    from edgeplane.control import SQLiteStore

    try:
        store = SQLiteStore(data_dir / "edgeplane.db", reset=reset)
    except ConfigError as error:
        _refuse(ctx, error)
    if store.moved_aside is not None:
        _console(ctx).print(f"--reset-store: the old store was moved aside to {store.moved_aside}", soft_wrap=True)
    return store


def _refuse(ctx: click.Context, error: EdgeplaneError) -> NoReturn:
    """Print why a service will not start (whole, even if long: it names files) and exit 1, no traceback."""
    _console(ctx).print(Text.assemble(("error: ", "red"), str(error)), soft_wrap=True)
    ctx.exit(1)


# -- services ----------------------------------------------------------------------------------
@cli.group()
def control() -> None:
    """The control plane service."""


@control.command("run")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--admin-token", envvar="EDGEPLANE_ADMIN_TOKEN")
@click.option("--agent-timeout", default=2.0, show_default=True, help="Seconds without a report before a site is down.")
@click.option(
    "--limit-window", default=60.0, show_default=True, help="Seconds of a rate-limit window (rpm/tpm scale to it)."
)
@click.option(
    "--graceful-shutdown-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How long a drained metro's prefixes carry GRACEFUL_SHUTDOWN (65535:0) before they are withdrawn.",
)
@click.option("--reset-store", is_flag=True, help=RESET_STORE_HELP)
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
) -> None:
    """Serve the control plane API."""
    from edgeplane.control import ControlPlane, FleetState

    fleet = _load(ctx, fleet_path)
    data_dir = data_dir or default_data_dir()
    # Its own lock file (`up` holds up.lock in the same directory): two control planes on one store refuse.
    lock = _lock_or_exit(
        ctx, DirectoryLock(data_dir / "control.lock", "edgeplane control run", data_dir / "edgeplane.db")
    )
    store = _open_store_or_exit(ctx, data_dir, reset=reset_store)
    plane = ControlPlane(
        FleetState(
            fleet, store, agent_timeout_seconds=agent_timeout, graceful_shutdown_seconds=graceful_shutdown_seconds
        ),
        admin_token=admin_token,
        limit_window_seconds=limit_window,
    )
    try:
        _run(plane.run(host, port, on_ready=lambda url: print(f"control plane at {url}", flush=True)))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except OSError as error:
        if error.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        _refuse(ctx, EdgeplaneError(f"the control plane cannot listen on {host}:{port}: {error.strerror}"))
    finally:
        lock.release()


@cli.group()
def gateway() -> None:
    """The OpenAI-compatible gateway service."""


@gateway.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--home-metro", help="Metro of clients whose address matches no metro prefix.")
@click.option("--trusted-proxy", multiple=True, help="Network whose X-Forwarded-For is believed (default: loopback).")
@click.option(
    "--max-attempts", default=3, show_default=True, type=click.IntRange(1, 10), help="Sites tried per request."
)
@click.option(
    "--first-token-timeout", default=10.0, show_default=True, help="Seconds to wait for a stream's first event."
)
@click.option(
    "--read-timeout", default=300.0, show_default=True, help="Seconds to wait for a whole non-streamed answer."
)
@click.option("--request-budget", default=30.0, show_default=True, help="Seconds for all tries before the first byte.")
@click.option(
    "--auth",
    type=click.Choice(["on", "off"]),
    default=None,
    help="Require API keys (default: off on loopback, on anywhere else; off is refused beyond loopback).",
)
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
@click.pass_context
def gateway_run(
    ctx: click.Context,
    host: str,
    port: int,
    home_metro: str | None,
    trusted_proxy: tuple[str, ...],
    max_attempts: int,
    first_token_timeout: float,
    read_timeout: float,
    request_budget: float,
    auth: str | None,
    access_log: Path | None,
    max_connections_per_address: int,
) -> None:
    """Serve the OpenAI API, routing on the control plane's snapshots."""
    require_keys = _auth_choice(host, auth)
    if access_log is not None:
        _open_access_log(access_log)
    from edgeplane.gateway import DEFAULT_TRUSTED_PROXIES, ClientLocator, Gateway, GatewayOptions, SnapshotWatcher
    from edgeplane.web import ConnectionLimits, serve, supervised

    watcher = SnapshotWatcher(
        ctx.obj["control_url"], home_metro=home_metro, admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN")
    )
    try:
        locator = ClientLocator(trusted_proxy or DEFAULT_TRUSTED_PROXIES)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--trusted-proxy") from None
    options = GatewayOptions(max_attempts, first_token_timeout, read_timeout, request_budget, auth=require_keys)
    app = Gateway(watcher, locator=locator, options=options)

    async def main() -> None:
        try:
            await serve(
                app.app(),
                host,
                port,
                on_ready=lambda url: print(f"gateway at {url}", flush=True),
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
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--backend",
    default="emulator",
    show_default=True,
    type=click.Choice(["emulator", "llamacpp", "upstream"]),
)
@click.option("--gguf", "gguf_path", type=click.Path(path_type=Path, dir_okay=False), help="GGUF file (llamacpp).")
@click.option("--upstream", "upstream_url", help="OpenAI-compatible base URL (upstream).")
@click.option("--seed", default=0, show_default=True)
@click.option("--time-scale", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--no-report", is_flag=True, help="Do not report to the control plane.")
@click.option("--redfish", "redfish", multiple=True, metavar="UNIT=URL", help="A unit's Redfish service to poll.")
@click.option(
    "--dcgm",
    "dcgm",
    multiple=True,
    metavar="UNIT=URL",
    help="A DCGM exporter (/metrics URL) in a unit; repeat per server.",
)
@click.option(
    "--redfish-emulate", is_flag=True, help="Emulate the Redfish service and DCGM exporter of every unit not given one."
)
@click.pass_context
def site_run(
    ctx: click.Context,
    pop: str,
    fleet_path: Path | None,
    host: str,
    port: int,
    backend: str,
    gguf_path: Path | None,
    upstream_url: str | None,
    seed: int,
    time_scale: float,
    no_report: bool,
    redfish: tuple[str, ...],
    dcgm: tuple[str, ...],
    redfish_emulate: bool,
) -> None:
    """Serve the models placed at one PoP."""
    from prometheus_client import CollectorRegistry

    from edgeplane.site import ModelLoader, SiteAgent, SiteOptions, build_backends

    fleet = _load(ctx, fleet_path)
    registry = CollectorRegistry()
    options = SiteOptions(backend, seed, time_scale, gguf_path, upstream_url)
    try:
        backends = build_backends(fleet, pop, options, registry)
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    agent = SiteAgent(
        pop,
        backends,
        kind=backend,
        registry=registry,
        control_url=None if no_report else ctx.obj["control_url"],
        admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"),
        loader=None if no_report else ModelLoader(fleet, pop, options, registry),
        watch=_unit_watch(fleet, pop, (redfish, dcgm), redfish_emulate, registry, time_scale, seed),
    )
    agent.replicas = dict(fleet.models_at(pop))
    _run(agent.run(host, port, on_ready=lambda url: print(f"site {pop} at {url}", flush=True)))


def _unit_watch(
    fleet: Fleet,
    pop: str,
    given: tuple[tuple[str, ...], tuple[str, ...]],
    emulate: bool,
    registry: Any,
    time_scale: float,
    seed: int,
) -> Any:
    """The PoP's units to watch: those given a Redfish URL (and DCGM exporter), and with ``emulate`` the rest;
    None if neither."""
    from edgeplane.telemetry import UnitWatch

    units = {u.code: u for u in fleet.pop_by_code[pop].units} if pop in fleet.pop_by_code else {}

    def parse(items: tuple[str, ...], option: str) -> dict[str, list[str]]:
        urls: dict[str, list[str]] = {}
        for item in items:
            code, _, url = item.partition("=")
            if code not in units or not url.startswith(("http://", "https://")):
                raise click.BadParameter(f"expected UNIT=URL with a unit of {pop} ({', '.join(units)}), not {item!r}",
                                         param_hint=option)  # fmt: skip
            urls.setdefault(code, []).append(url)
        return urls

    redfish = parse(given[0], "--redfish")
    if twice := sorted(code for code, given_urls in redfish.items() if len(given_urls) > 1):
        raise click.BadParameter(
            f"one Redfish service per unit; given twice: {', '.join(twice)}", param_hint="--redfish"
        )
    urls: dict[str, str | None] = {code: given_urls[0] for code, given_urls in redfish.items()}
    dcgm = parse(given[1], "--dcgm")
    if emulate:
        urls.update({code: None for code in units if code not in urls})
    if not urls:
        return None
    scale = time_scale if time_scale > 0 else 1.0
    power = {code: unit.power_kw for code, unit in units.items()}
    gpus = {code: unit.gpus_by_type() for code, unit in units.items()}
    return UnitWatch(
        urls,
        power,
        registry,
        dcgm=dcgm,
        gpus=gpus,
        interval_seconds=min(1.0, max(0.5, scale * 5)),
        hold_scale=scale,
        seed=seed,
        admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"),
    )


# -- fleet -------------------------------------------------------------------------------------
@cli.group()
def fleet() -> None:
    """Check and show fleet descriptions."""


@fleet.command("check")
@click.argument("path", type=click.Path(path_type=Path))
@click.pass_context
def fleet_check(ctx: click.Context, path: Path) -> None:
    """Validate a fleet file; exit 2 naming file, line and field of each problem."""
    loaded = _load(ctx, path)
    units = sum(1 for _ in loaded.units())
    counts = f"{len(loaded.metros)} metros, {len(loaded.pops)} PoPs, {units} units, {len(loaded.models)} models"
    _console(ctx).print(f"{path}: ok ({counts})", highlight=False)


def fleet_json(loaded: Fleet) -> dict[str, Any]:
    metros = []
    for metro in loaded.metros:
        pops = []
        for pop in loaded.pops_in(metro.code):
            pops.append(
                {
                    "code": pop.code,
                    "id": pop.id,
                    "name": pop.name,
                    "gpus": pop.gpus_by_type(),
                    "power_kw": sum(u.power_kw for u in pop.units),
                    "units": [u.model_dump(mode="json") for u in pop.units],
                    "transits": [t.model_dump(mode="json") for t in pop.transits],
                    "models": loaded.models_at(pop.code),
                }
            )
        metros.append(
            {
                "code": metro.code,
                "id": metro.id,
                "name": metro.name,
                "region": metro.region,
                "continent": loaded.region_of(metro.code).continent,
                "latitude": metro.latitude,
                "longitude": metro.longitude,
                "client_prefixes": list(metro.client_prefixes),
                "pops": pops,
            }
        )
    return {
        "asn": loaded.asn,
        "continents": [c.model_dump(mode="json") for c in loaded.continents],
        "regions": [r.model_dump(mode="json") for r in loaded.regions],
        "metros": metros,
        "links": [link.model_dump(mode="json") for link in loaded.links],
        "models": [m.model_dump(mode="json") for m in loaded.models],
        "placement": [p.model_dump(mode="json") for p in loaded.placement],
    }


@fleet.command("show")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def fleet_show(ctx: click.Context, fleet_path: Path | None, as_json: bool) -> None:
    """Show the fleet: metros, PoPs, GPUs and models."""
    loaded = _load(ctx, fleet_path)
    console = _console(ctx)
    if as_json:
        click.echo(json.dumps(fleet_json(loaded), indent=2))
        return
    table = Table(title=f"fleet (AS{loaded.asn})")
    for column in ("metro", "region", "continent", "PoPs", "GPUs", "client prefixes"):
        table.add_column(column)
    for metro in loaded.metros:
        pops = loaded.pops_in(metro.code)
        gpus: dict[str, int] = {}
        for pop in pops:
            for kind, n in pop.gpus_by_type().items():
                gpus[kind] = gpus.get(kind, 0) + n
        table.add_row(
            f"{metro.code} ({metro.name})",
            metro.region,
            loaded.region_of(metro.code).continent,
            ", ".join(p.code for p in pops),
            ", ".join(f"{n}x{k}" for k, n in sorted(gpus.items())),
            ", ".join(metro.client_prefixes),
        )
    console.print(table)
    models = Table(title="models")
    for column in ("model", "params (B)", "GPUs/replica", "SLO TTFT (ms)", "placed at"):
        models.add_column(column)
    for spec in loaded.models:
        placed = [p.pop for p in loaded.placement if p.model == spec.name]
        models.add_row(
            spec.name,
            f"{spec.parameters_billions:g}",
            str(spec.gpus_per_replica),
            f"{spec.slo_ttft_ms:g}",
            ", ".join(placed),
        )
    console.print(models)


# -- operations against the control plane --------------------------------------------------------
def _api(ctx: click.Context, method: str, path: str, payload: Any = None) -> Any:
    from edgeplane._control_client import ControlClient

    client = ControlClient(ctx.obj["control_url"], admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"))
    try:
        return client.call(method, path, payload)
    except EdgeplaneError as error:
        _console(ctx).print(f"[red]error:[/] {error}", highlight=False)
        ctx.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Every metro and PoP with its state, load and site agent pid."""
    data = _api(ctx, "GET", "/api/status")
    if as_json:
        click.echo(json.dumps(data, indent=2))
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
            pop.get("reason") or "",
        )
    console.print(table)


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
            click.echo(json.dumps(data))
            return
        verb = "drained" if drain else "undrained"
        note = "" if data.get("changed") else f" (it was already {verb})"
        _console(ctx).print(f"{kind} {code} {verb}{note}; snapshot v{data['snapshot_version']}", highlight=False)

    return command


cli.add_command(_drain_command("drain", True))
cli.add_command(_drain_command("undrain", False))


@cli.group()
def bgp() -> None:
    """The network edge: what each PoP announces, with which communities."""


def _admin_client(ctx: click.Context, timeout_seconds: float = 10.0) -> Any:
    from edgeplane._control_client import ControlClient

    return ControlClient(
        ctx.obj["control_url"], admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"), timeout_seconds=timeout_seconds
    )


@bgp.command("run")
@click.option("--pop", "pop_code", required=True, help="Code of the PoP this speaker announces for.")
@click.option(
    "--neighbor",
    "neighbors",
    multiple=True,
    required=True,
    help="A transit's router, ADDRESS[:PORT] ([ADDRESS]:PORT for IPv6); repeat for each transit.",
)
@click.option(
    "--neighbor-as",
    "neighbor_asns",
    multiple=True,
    required=True,
    type=click.IntRange(1, 4294967295),
    help="The AS of each --neighbor, in the same order.",
)
@click.option("--local-address", help="Our address on the sessions (default: chosen by the kernel).")
@click.option("--router-id", help="BGP identifier (default: the PoP's IPv4 next hop).")
@click.option("--control", "control_url", help="Control plane to follow (default: the global --control).")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path), help="Announce from this fleet file alone.")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), help="Where ExaBGP's files go.")
@click.option(
    "--rib-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where the routes received from the transits are written (default: DATA_DIR/bgp-POP/rib-in.json).",
)
@click.option("--status-host", default="127.0.0.1", show_default=True, help="Address of /healthz and /metrics.")
@click.option(
    "--status-port", type=click.IntRange(0, 65535), help="Serve /healthz (JSON) and /metrics here (default: none)."
)
@click.pass_context
def bgp_run(
    ctx: click.Context,
    pop_code: str,
    neighbors: tuple[str, ...],
    neighbor_asns: tuple[int, ...],
    local_address: str | None,
    router_id: str | None,
    control_url: str | None,
    fleet_path: Path | None,
    data_dir: Path | None,
    rib_file: Path | None,
    status_host: str,
    status_port: int | None,
) -> None:
    """Run the PoP's BGP speaker (ExaBGP): announce its intents to its transits and keep them so.

    With --fleet the intents come from the file (everything in the plan announced); otherwise from the
    control plane, so drains, health and balance actions reach the transits as they happen."""
    from edgeplane.bgp import Neighbor
    from edgeplane.speaker import ControlIntents, FleetIntents, IntentSource, Speaker, SpeakerError, status_app

    if len(neighbors) != len(neighbor_asns):
        raise click.UsageError(
            f"{len(neighbors)} --neighbor but {len(neighbor_asns)} --neighbor-as: give one AS per neighbour"
        )
    try:
        peers = [Neighbor.parse(text, asn) for text, asn in zip(neighbors, neighbor_asns, strict=True)]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--neighbor") from None
    source: IntentSource
    if fleet_path is not None and control_url is None:
        fleet = _load(ctx, fleet_path)
        if pop_code not in fleet.pop_by_code:
            raise click.BadParameter(f"unknown PoP {pop_code!r}", param_hint="--pop")
        source = FleetIntents(fleet, pop_code)
    else:
        source = ControlIntents(
            control_url or ctx.obj["control_url"], pop_code, admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN")
        )
    workdir = (data_dir or default_data_dir()) / f"bgp-{pop_code}"
    speaker = Speaker(
        pop_code,
        peers,
        source,
        workdir=workdir,
        local_address=local_address,
        router_id=router_id,
        rib_file=rib_file or workdir / "rib-in.json",
    )

    async def main() -> None:
        import signal

        from edgeplane.web import serve

        stop = asyncio.Event()
        names = ", ".join(f"{p.address} (AS{p.asn})" for p in peers)
        print(f"bgp speaker for {pop_code}: peering with {names}", flush=True)
        if status_port is not None:
            await serve(
                status_app(speaker),
                status_host,
                status_port,
                on_ready=lambda url: print(f"bgp speaker status at {url}/healthz and {url}/metrics", flush=True),
                background=lambda url: [lambda: speaker.run(stop)],
                stop=stop,
            )
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await speaker.run(stop)

    try:
        _run(main())
    except* (SpeakerError, EdgeplaneError) as group:
        raise click.ClickException("; ".join(str(e) for e in group.exceptions)) from None


@bgp.command("intents")
@click.option("--pop", "pop_code", required=True, help="Code of the PoP.")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_intents(ctx: click.Context, pop_code: str, fleet_path: Path | None, as_json: bool) -> None:
    """What POP announces now: from the control plane (drains, health, actions), or the fleet file alone."""
    from edgeplane.bgp import pop_intents
    from edgeplane.speaker import intent_from_json

    loaded = _load(ctx, fleet_path)
    if pop_code not in loaded.pop_by_code:
        raise click.BadParameter(f"unknown PoP {pop_code!r}; expected one of: {', '.join(sorted(loaded.pop_by_code))}")
    client = _admin_client(ctx, timeout_seconds=3)
    state: dict[str, Any] | None = None
    try:
        answer = client.call("GET", f"/api/bgp/intents?pop={pop_code}")
        intents = [intent_from_json(i) for i in answer["intents"]]
        state = answer["state"]
        source = f"control plane {ctx.obj['control_url']}, version {answer['version']}"
    except EdgeplaneError:
        intents, source = pop_intents(loaded, pop_code), "no control plane reachable: the fleet file alone"
    if as_json:
        payload = {"pop": pop_code, "asn": loaded.asn, "source": source, "state": state}
        click.echo(json.dumps({**payload, "intents": [i.to_json() for i in intents]}, indent=2))
        return
    title = f"{pop_code} announces (AS{loaded.asn}; {source})"
    if state and state["state"] != "announced":
        title += f"\nmetro prefixes: {state['state']} ({state['reason']})"
    table = Table(title=title)
    for column in ("prefix", "next hop", "scope", "large communities", "communities", "med"):
        table.add_column(column)
    for intent in intents:
        data = intent.to_json()
        table.add_row(
            data["prefix"],
            data["next_hop"],
            data["scope"],
            " ".join(data["large_communities"]),
            " ".join(data["communities"]),
            "" if data["med"] is None else str(data["med"]),
        )
    _console(ctx).print(table)


@bgp.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_status(ctx: click.Context, as_json: bool) -> None:
    """Each PoP's metro prefixes: announced, in graceful shutdown, or withdrawn, and why."""
    try:
        answer = _admin_client(ctx, timeout_seconds=5).call("GET", "/api/bgp")
    except EdgeplaneError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    table = Table(title=f"metro prefixes per PoP (AS{answer['asn']}, version {answer['version']})")
    for column in ("pop", "metro", "state", "reason"):
        table.add_column(column)
    for pop in answer["pops"]:
        table.add_row(pop["pop"], pop["metro"], pop["state"], pop["reason"])
    _console(ctx).print(table)
    if answer["held"]:
        _console(ctx).print(f"withdrawals held by the blast radius: {', '.join(answer['held'])}")


@bgp.command("explain")
@click.argument("destination")
@click.option("--pop", "pop_code", help="PoP whose speaker's received routes to read (DATA_DIR/bgp-POP/rib-in.json).")
@click.option(
    "--routes", "routes_path", type=click.Path(path_type=Path, dir_okay=False), help="Routes file (JSON) to read."
)
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--always-compare-med/--no-always-compare-med",
    default=True,
    show_default=True,
    help="Compare MED between routes from different transits (egress: MED breaks ties of equal AS paths).",
)
@click.option("--deterministic-med", is_flag=True, help="Best per neighbour AS first, then across them.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_explain(
    ctx: click.Context,
    destination: str,
    pop_code: str | None,
    routes_path: Path | None,
    data_dir: Path | None,
    always_compare_med: bool,
    deterministic_med: bool,
    as_json: bool,
) -> None:
    """Which transit traffic to DESTINATION (an address or prefix) leaves by, and why: the BGP decision process
    over the routes the transits sent."""
    from edgeplane.bgp import best_path, load_routes, longest_match

    if routes_path is None:
        if pop_code is None:
            raise click.UsageError("give --routes FILE, or --pop CODE to read that PoP's speaker's received routes")
        routes_path = (data_dir or default_data_dir()) / f"bgp-{pop_code}" / "rib-in.json"
    try:
        routes = load_routes(routes_path)
        prefix, candidates = longest_match(routes, destination)
    except (ConfigError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    decision = best_path(candidates, always_compare_med=always_compare_med, deterministic_med=deterministic_med)
    if as_json:
        click.echo(json.dumps({"destination": destination, **decision.to_json()}, indent=2))
        return
    console = _console(ctx)
    table = Table(title=f"{destination}: {len(candidates)} routes to {prefix} ({decision.method})")
    for column in ("", "peer", "AS path", "origin", "MED", "local pref", "next hop", "why not"):
        table.add_column(column)
    why = {id(c.loser): f"{c.detail} (vs {c.winner.label()})" for c in decision.reasons}
    for route in candidates:
        best = route is decision.best
        table.add_row(
            "best" if best else "",
            f"{route.peer} AS{route.peer_asn}",
            " ".join(map(str, route.as_path)),
            route.origin,
            "" if route.med is None else str(route.med),
            "" if route.local_pref is None else str(route.local_pref),
            route.next_hop,
            "" if best else why.get(id(route), ""),
        )
    console.print(table)
    if decision.best is not None:
        console.print(f"egress for {destination}: {decision.best.label()}")


@bgp.command("balance")
@click.option(
    "--traffic", "traffic_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
    help="CSV with the header pop,transit_asn,gbps: inbound traffic per PoP and transit.",
)  # fmt: skip
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option("--shift-per-prepend", default=0.3, show_default=True, type=click.FloatRange(0.01, 1.0))
@click.option("--apply", "apply_", is_flag=True, help="Send the suggestions to the control plane as actions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_balance(
    ctx: click.Context,
    traffic_path: Path,
    fleet_path: Path | None,
    shift_per_prepend: float,
    apply_: bool,
    as_json: bool,
) -> None:
    """Suggest prepends or action communities that move inbound traffic toward equal use of each PoP's
    transits, with the predicted effect."""
    from edgeplane.bgp import read_traffic, suggest

    fleet = _load(ctx, fleet_path)
    try:
        traffic = read_traffic(traffic_path, fleet)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    suggestions = [suggest(fleet, pop, per, shift_per_prepend=shift_per_prepend) for pop, per in traffic.items()]
    applied: list[dict[str, Any]] = []
    if apply_:
        client = _admin_client(ctx)
        for s in suggestions:
            if s.transit_asn is None:
                continue
            try:
                body = {"pop": s.pop, "transit_asn": s.transit_asn, "action": s.action}
                applied.append(client.call("POST", "/api/bgp/actions", body))
            except EdgeplaneError as error:
                raise click.ClickException(
                    f"applying {s.action} on {s.pop} toward AS{s.transit_asn}: {error}"
                ) from None
    if as_json:
        click.echo(json.dumps({"suggestions": [s.to_json() for s in suggestions], "applied": applied}, indent=2))
        return
    table = Table(title="inbound balance (utilisation per transit: now -> predicted)")
    for column in ("pop", "suggestion", "utilisation"):
        table.add_column(column)
    for s in suggestions:
        what = "balanced" if s.transit_asn is None else f"{s.action} toward AS{s.transit_asn}"
        shares = ", ".join(f"AS{a} {s.before[a]:.0%} -> {s.after[a]:.0%}" for a in s.before)
        table.add_row(s.pop, what, shares)
    console = _console(ctx)
    console.print(table)
    if applied:
        console.print(f"applied {len(applied)} actions; the speakers announce them now")


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
        click.echo(json.dumps(data))
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
        click.echo(json.dumps(data, indent=2))
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
            console.print(f"  {f['samples']} moved requests, p95 TTFT {f['ttft_ms_p95']} ms", highlight=False)
    if as_json:
        click.echo(json.dumps(drill, indent=2))
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
    if f:
        console.print(
            f"  moved requests: {f['samples']}; TTFT p50 {f['ttft_ms_p50']} ms, p95 {f['ttft_ms_p95']} ms,"
            f" p99 {f['ttft_ms_p99']} ms; over the SLO: {f['over_slo']}",
            highlight=False,
        )
        for where, n in sorted(f["served_at"].items(), key=lambda kv: -kv[1]):
            console.print(f"  served at {where}: {n}", highlight=False)


@cli.group()
def fault() -> None:
    """Inject named faults into sites (emulator behaviours for tests and drills)."""


@fault.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fault_list(ctx: click.Context, as_json: bool) -> None:
    """The catalogue of faults, and which sites show one now."""
    data = _api(ctx, "GET", "/api/faults")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title="faults")
    table.add_column("fault")
    table.add_column("what it does")
    for entry in data["catalogue"]:
        table.add_row(entry["fault"], entry["what"])
    console = _console(ctx)
    console.print(table)
    for pop, active in sorted(data["active"].items()):
        console.print(f"{pop}: {active['fault']} is active", highlight=False)


@fault.command("set")
@click.argument("pop")
@click.argument("name", metavar="FAULT")
@click.option("--tokens", type=int, help="cut-stream: tokens before the cut (default 3).")
@click.option("--factor", type=float, help="slow: how many times slower (default 5).")
@click.option(
    "--seconds", type=float, help="How long it lasts (refuse-connections: default 10; others: until cleared)."
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def fault_set(
    ctx: click.Context,
    pop: str,
    name: str,
    tokens: int | None,
    factor: float | None,
    seconds: float | None,
    as_json: bool,
) -> None:
    """Make the site agent of POP show FAULT (see `edgeplane fault list`)."""
    payload: dict[str, Any] = {"pop": pop, "fault": name}
    for key, value in (("tokens", tokens), ("factor", factor), ("seconds", seconds)):
        if value is not None:
            payload[key] = value
    data = _api(ctx, "POST", "/api/faults", payload)
    if as_json:
        click.echo(json.dumps(data))
        return
    _console(ctx).print(f"{pop}: {data['active']['fault']} injected", highlight=False)


@fault.command("clear")
@click.argument("pop")
@click.pass_context
def fault_clear(ctx: click.Context, pop: str) -> None:
    """Clear the fault of POP's site agent."""
    _api(ctx, "DELETE", f"/api/faults/{pop}")
    _console(ctx).print(f"{pop}: fault cleared", highlight=False)


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
        click.echo(json.dumps(data, indent=2))
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


# -- planning ------------------------------------------------------------------------------------
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
            raise click.ClickException(str(error)) from None
    # Neither given: what the running fleet has served, if there is one to ask.
    try:
        answer = _admin_client(ctx).call("GET", f"/api/demand?window={window}")
    except EdgeplaneError as error:
        hint = "" if observed else "give --demand FILE, or run against a fleet that has served requests; "
        raise click.ClickException(f"{hint}observed demand: {error}") from None
    rows = [
        Demand(
            r["metro"], r["model"], float(r["requests_per_second"]), int(r["prompt_tokens"]), int(r["output_tokens"])
        )
        for r in answer["demand"]
        if r["metro"] in fleet.metro_by_code and r["model"] in fleet.model_by_name
    ]
    if not rows:
        raise click.ClickException(
            f"the control plane at {ctx.obj['control_url']} has seen no requests in the last {window:g} s"
        )
    return rows


_OBSERVED = click.option(
    "--observed", is_flag=True, help="Use the demand the running fleet served (from the control plane)."
)
_WINDOW = click.option("--window", default=600.0, show_default=True, help="Seconds of observed demand to use.")


@plan.command("placement")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option(
    "--demand",
    "demand_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV (metro,model,requests_per_second,prompt_tokens,output_tokens) or YAML with the same fields.",
)
@_OBSERVED
@_WINDOW
@click.option("--scale", "factor", default=1.0, show_default=True, help="Grow the demand by this factor (2, 10).")
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
            click.echo(json.dumps({"error": str(error), "shortfalls": error.shortfalls}, indent=2))
            ctx.exit(1)
        raise click.ClickException(str(error)) from None
    if html_path is not None:
        from edgeplane.reports import placement_report

        placement_report(fleet, result, html_path)
    applied: dict[str, Any] | None = None
    if apply_:
        entries = [{"model": p.model, "pop": p.pop, "replicas": p.replicas} for p in result.placement]
        try:
            applied = _admin_client(ctx).call("POST", "/api/placement", {"placement": entries, "force": force})
        except EdgeplaneError as error:
            raise click.ClickException(f"applying the placement: {error}") from None
    if as_json:
        click.echo(json.dumps({**result.to_json(), **({"applied": applied} if applied else {})}, indent=2))
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


def _read_placement(path: Path) -> list[tuple[str, str, int]]:
    """A placement as `plan placement --json` writes it."""
    try:
        data = json.loads(path.read_text())
        return [(str(p["model"]), str(p["pop"]), int(p["replicas"])) for p in data["placement"]]
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read the placement ({error.strerror})") from None
    except (ValueError, KeyError, TypeError) as error:
        raise click.ClickException(
            f"{path}: not a placement as `edgeplane plan placement --json` writes it ({error!r})"
        ) from None


@plan.command("scenarios")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option("--demand", "demand_path", type=click.Path(path_type=Path, dir_okay=False))
@_OBSERVED
@_WINDOW
@click.option(
    "--placement",
    "placement_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A placement from `plan placement --json` (default: the fleet file's placement).",
)
@click.option("--scale", "factor", default=1.0, show_default=True, help="Grow the demand by this factor.")
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
    as_json: bool,
) -> None:
    """Every single PoP and metro failure: the load each site then carries, predicted p99 time to first token
    per metro and model, SLO breaches and demand nobody can serve, routed by the gateway's own router."""

    def published(rows: list[dict[str, Any]]) -> None:
        if publish:
            title = f"{'observed' if observed else demand_path} x{factor:g}{' (fast)' if fast else ''}"
            _api(ctx, "POST", "/api/plan/scenarios", {"scenarios": rows, "title": title})
            if not as_json:
                _console(ctx).print(f"published {len(rows)} scenarios to the control plane", highlight=False)

    from edgeplane.planning import scale, scenarios, with_placement

    fleet = _load(ctx, fleet_path)
    try:
        demand = scale(_plan_demand(ctx, fleet, demand_path, observed, window), factor)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if placement_path is not None:
        planned = _read_placement(placement_path)
        unknown = sorted({p for _, p, _ in planned} - set(fleet.pop_by_code))
        if unknown:
            raise click.ClickException(f"{placement_path}: PoPs not in the fleet: {', '.join(unknown)}")
        fleet = with_placement(fleet, planned)
    if fast:
        from edgeplane.planning import single_failures, utilisation_matrix

        failures = single_failures(fleet, pairs=pairs)
        pops, load, capacity, unserved = utilisation_matrix(fleet, demand, failures)
        rows: list[dict[str, Any]] = []
        for k, (name, failed) in enumerate(failures):
            use = [float(load[k, i] / capacity[i]) if capacity[i] else 0.0 for i in range(len(pops))]
            top = max(range(len(pops)), key=lambda i: use[i])
            rows.append(
                {"scenario": name, "failed": sorted(failed), "unserved_rps": round(float(unserved[k]), 3),
                 "busiest": {"pop": pops[top], "utilisation": round(use[top], 4)}}
            )  # fmt: skip
        published(rows)
        if as_json:
            click.echo(json.dumps({"scenarios": rows}, indent=2))
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
        return
    results = scenarios(fleet, demand, pairs=pairs)
    if html_path is not None:
        from edgeplane.reports import scenarios_report

        scenarios_report(fleet, results, html_path)
    published([s.to_json() for s in results])
    if as_json:
        click.echo(json.dumps({"scenarios": [s.to_json() for s in results]}, indent=2))
        return
    table = Table(title="failure scenarios (routed by the gateway's router)")
    for column in ("scenario", "busiest site", "utilisation", "worst p99 TTFT", "SLO breaches", "unserved rps"):
        table.add_column(column)
    for s in results:
        busiest = max(s.sites, key=lambda x: x.utilisation, default=None)
        worst = max(s.metros, key=lambda m: m.ttft_p99_ms / m.slo_ms, default=None)
        table.add_row(
            s.name,
            f"{busiest.pop} {busiest.model}" if busiest else "",
            f"{busiest.utilisation:.0%}" if busiest else "",
            f"{worst.ttft_p99_ms:.0f} ms ({worst.metro} {worst.model}, SLO {worst.slo_ms:g})" if worst else "",
            str(sum(1 for m in s.metros if m.breaches)),
            f"{s.unserved_rps:.1f}",
        )
    _console(ctx).print(table)


@plan.command("growth")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option(
    "--demand",
    "demand_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Today's demand (CSV or YAML, as for `plan placement`).",
)
@_OBSERVED
@_WINDOW
@click.option("--factor", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
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
        raise click.ClickException(str(error)) from None
    if html_path is not None:
        from edgeplane.reports import growth_report

        growth_report(result, html_path)
    recorded = _record_orders(ctx, result.orders) if apply_orders else None
    if as_json:
        click.echo(
            json.dumps({**result.to_json(), **({"recorded": recorded} if recorded is not None else {})}, indent=2)
        )
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


@cli.command("load")
@click.option("--fleet", "fleet_path", type=click.Path(path_type=Path))
@click.option("--demand", "demand_path", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--gateway", "gateway_url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds of load.")
@click.option("--scale", "factor", default=1.0, show_default=True, help="Multiply the demand's rates.")
@click.option("--max-tokens", default=16, show_default=True, type=click.IntRange(1))
@click.option("--api-key", envvar="EDGEPLANE_API_KEY", help="Key for a gateway that requires one.")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def load_command(
    ctx: click.Context,
    fleet_path: Path | None,
    demand_path: Path,
    gateway_url: str,
    duration: float,
    factor: float,
    max_tokens: int,
    api_key: str | None,
    seed: int,
    as_json: bool,
) -> None:
    """Replay a demand file against a gateway (Poisson arrivals, each client inside its metro's prefixes)
    and show where each metro's requests were served."""
    from edgeplane.local import replay
    from edgeplane.planning import load_demand, scale

    fleet = _load(ctx, fleet_path)
    try:
        demand = scale(load_demand(demand_path, fleet), factor)
    except (ConfigError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    console = _console(ctx)
    with console.status("sending") as status:
        tallies = asyncio.run(
            replay(
                fleet, demand, gateway_url, duration_seconds=duration, max_tokens=max_tokens, api_key=api_key,
                seed=seed, progress=lambda n: status.update(f"sending: {n} requests"),
            )
        )  # fmt: skip
    if as_json:
        rows = [{"metro": m, "model": n, **t.to_json()} for (m, n), t in tallies.items()]
        click.echo(json.dumps({"duration_seconds": duration, "results": rows}, indent=2))
        return
    table = Table(title=f"{duration:g} s of {demand_path} x{factor:g} against {gateway_url}")
    for column in ("metro", "model", "sent", "ok", "failed", "served in (share)"):
        table.add_column(column)
    for (metro, model), t in tallies.items():
        shares = t.to_json()["shares"]
        table.add_row(
            metro, model, str(t.sent), str(t.ok), str(t.failed), ", ".join(f"{m} {s:.0%}" for m, s in shares.items())
        )
    console.print(table)


@cli.group()
def unit() -> None:
    """Modular units: their lifecycle from order to decommissioning (only units in service carry traffic)."""


def _unit_line(u: dict[str, Any]) -> str:
    due = f", due {time.strftime('%Y-%m-%d', time.gmtime(u['due']))}" if u.get("due") else ""
    return f"{u['code']} at {u['pop']}: {u['state']} since {_when(u['since'])} by {u['by']}{due}"


def _print_unit(ctx: click.Context, u: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(u))
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
    units = [
        u for u in _api(ctx, "GET", "/api/units")["units"]
        if (pop is None or u["pop"] == pop) and (state is None or u["state"] == state)
    ]  # fmt: skip
    if as_json:
        click.echo(json.dumps({"units": units}, indent=2))
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
        click.echo(json.dumps(u, indent=2))
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
        text = Path(acceptance[1:]).read_text() if acceptance.startswith("@") else acceptance
        try:
            payload["acceptance"] = json.loads(text)
        except json.JSONDecodeError as error:
            raise click.BadParameter(f"not JSON: {error}", param_hint="--acceptance") from None
    _print_unit(ctx, _api(ctx, "POST", f"/api/units/{code}/state", payload), as_json)


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
        raise click.ClickException(f"no Redfish service reported for unit {code!r} (`edgeplane unit list` shows units)")

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
        raise click.ClickException(f"unit {code}'s Redfish service at {url}: {error}") from None
    if status != 200:
        raise click.ClickException(f"unit {code}'s Redfish service answered {status}: {answer}")
    if as_json:
        click.echo(json.dumps({**answer, "redfish": url}))
        return
    _console(ctx).print(f"unit {code}: fault {answer.get('fault') or 'cleared'} ({url})", highlight=False)


def main() -> None:
    from edgeplane._extras import MissingExtra

    try:
        cli(prog_name="edgeplane")
    except MissingExtra as missing:  # wherever a command first needed it: one line, what to install
        click.echo(f"error: {missing}", err=True)
        sys.exit(2)
    except EdgeplaneError as error:  # an error of ours a command did not answer itself: said, not a traceback
        click.echo(f"error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # last: `python -m edgeplane.cli` must see every command group defined above
    main()
