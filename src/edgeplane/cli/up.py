"""`edgeplane up`: the whole fleet on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeplane._errors import EdgeplaneError
from edgeplane.cli._options import (
    admin_token_option,
    auth_option,
    data_dir_option,
    fleet_option,
    gateway_timeout_options,
    graceful_shutdown_option,
    home_metro_option,
    host_option,
    link_scale_option,
    reset_store_option,
    store_option,
)
from edgeplane.cli._root import (
    _auth_choice,
    _console,
    _fail,
    _load,
    _lock_or_exit,
    _open_store_or_exit,
    cli,
    default_data_dir,
)
from edgeplane.local import DirectoryLock


@cli.command()
@fleet_option
@host_option("Address every service binds.")
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
@data_dir_option
@click.option("--seed", default=0, show_default=True, help="Seed of the emulator.")
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Emulator delays are multiplied by this.",
)
@link_scale_option
@home_metro_option
@admin_token_option
@click.option("--ready-timeout", default=120.0, show_default=True, help="Seconds to wait for the fleet to serve.")
@gateway_timeout_options(passed_on=True)
@auth_option
@graceful_shutdown_option
@reset_store_option
@store_option
@click.option(
    "--control-replicas",
    default=1,
    show_default=True,
    type=click.IntRange(1, 9),
    help="Control plane replicas on one shared store (--store postgresql://...), on --control-port and the ports"
    " after it; every other process is given all of them.",
)
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
    link_scale: float,
    home_metro: str | None,
    admin_token: str | None,
    ready_timeout: float,
    first_token_timeout: float | None,
    read_timeout: float | None,
    auth: str | None,
    graceful_shutdown_seconds: float,
    reset_store: bool,
    store_url: str | None,
    control_replicas: int,
) -> None:
    """Start the control plane, the gateway and one site agent per PoP; Ctrl-C stops them all."""
    require_keys = _auth_choice(host, auth)
    from edgeplane.local import Supervisor, UpOptions, stop_on_sigterm

    console = _console(ctx)
    if control_replicas > 1 and not (store_url or "").lower().startswith(("postgresql://", "postgres://")):
        raise click.UsageError("--control-replicas above 1 needs a store they share: --store postgresql://...")
    fleet = _load(ctx, fleet_path)
    data_dir = data_dir or default_data_dir()
    # Before anything starts: a second `up` on this directory must leave the first one's fleet alone.
    lock = _lock_or_exit(ctx, DirectoryLock(data_dir / "up.lock", "edgeplane up", data_dir))
    if not reset_store:  # refuse a broken store here, once, rather than through a control plane that keeps failing
        _open_store_or_exit(ctx, data_dir, reset=False, url=store_url).close()
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
        link_scale=link_scale,
        home_metro=home_metro,
        log_level=ctx.find_root().params.get("log_level", "warning"),
        admin_token=admin_token,
        ready_timeout_seconds=ready_timeout,
        control_args=[
            "--graceful-shutdown-seconds",
            str(graceful_shutdown_seconds),
            *(["--store", store_url] if store_url else []),
        ],
        reset_store=reset_store,
        control_replicas=control_replicas,
        gateway_args=[
            *(["--first-token-timeout", str(first_token_timeout)] if first_token_timeout else []),
            *(["--read-timeout", str(read_timeout)] if read_timeout else []),
            "--auth",
            "on" if require_keys else "off",
            "--access-log",
            str(data_dir / "access.log"),
            "--snapshot-file",
            str(data_dir / "gateway-snapshot.json"),
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
        for url in supervisor.replica_urls[1:]:
            console.print(f"  control plane replica {url}/")
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
        _fail(ctx, error)
    finally:
        supervisor.stop()
        lock.release()
    console.print("stopped")
