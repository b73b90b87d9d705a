"""`edgeplane pop run`: everything one PoP host runs (its site agent, gateway and BGP speaker), supervised."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from rich.console import Console

from edgeplane._errors import EdgeplaneError
from edgeplane.cli._options import (
    admin_token_option,
    auth_option,
    data_dir_option,
    fleet_option,
    gateway_timeout_options,
    home_metro_option,
    host_option,
    site_backend_options,
)
from edgeplane.cli._root import _auth_choice, _console, _fail, _load, _lock_or_exit, cli, default_data_dir
from edgeplane.local import DirectoryLock

_WILDCARDS = ("", "0.0.0.0", "::")


@cli.group()
def pop() -> None:
    """One PoP host: its gateway, site agent and BGP speaker."""


@pop.command("run")
@click.option("--pop", "pop_code", required=True, help="Code of the PoP this host is.")
@fleet_option
@data_dir_option
@host_option("Address the gateway listens on (0.0.0.0: every address of the host).")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="Gateway port.")
@click.option("--agent-host", help="Address the site agent listens on (default: --host).")
@click.option("--agent-port", default=8090, show_default=True, type=click.IntRange(1, 65535), help="Site agent port.")
@click.option(
    "--advertise-address",
    help="Address the other PoPs' gateways reach this site agent at, reported to the control plane (default:"
    " --agent-host; required when that is a wildcard).",
)
@site_backend_options
@home_metro_option
@click.option(
    "--trusted-proxy", multiple=True, help="Network whose X-Forwarded-For the gateway believes (default: loopback)."
)
@gateway_timeout_options(passed_on=True)
@auth_option
@admin_token_option
@click.option(
    "--neighbor",
    "neighbors",
    multiple=True,
    help="A transit's router, ADDRESS[:PORT]; repeat per transit. None: no BGP speaker.",
)
@click.option(
    "--neighbor-as",
    "neighbor_asns",
    multiple=True,
    type=click.IntRange(1, 4294967295),
    help="The AS of each --neighbor, in the same order.",
)
@click.option("--local-address", help="The speaker's address on its sessions (default: chosen by the kernel).")
@click.option("--router-id", help="BGP identifier (default: the PoP's IPv4 next hop).")
@click.option("--bgp-status-port", type=click.IntRange(0, 65535), help="The speaker's /healthz and /metrics port.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON line per event (started, waiting, listening, ready, exited, restarted, stopped).",
)
@click.pass_context
def pop_run(
    ctx: click.Context,
    pop_code: str,
    fleet_path: Path | None,
    data_dir: Path | None,
    host: str,
    port: int,
    agent_host: str | None,
    agent_port: int,
    advertise_address: str | None,
    backend: str,
    gguf_path: Path | None,
    upstream_url: str | None,
    seed: int,
    time_scale: float,
    redfish: tuple[str, ...],
    dcgm: tuple[str, ...],
    redfish_emulate: bool,
    home_metro: str | None,
    trusted_proxy: tuple[str, ...],
    first_token_timeout: float | None,
    read_timeout: float | None,
    auth: str | None,
    admin_token: str | None,
    neighbors: tuple[str, ...],
    neighbor_asns: tuple[int, ...],
    local_address: str | None,
    router_id: str | None,
    bgp_status_port: int | None,
    as_json: bool,
) -> None:
    """Run one PoP: its site agent, its gateway (its own site first, then the scope ladder over the other
    PoPs' agents) and, with --neighbor, its BGP speaker; each restarted with back-off when it dies. SIGTERM or
    Ctrl-C stops them all. The control plane (--control) runs on hosts of its own."""
    from edgeplane.local import PopOptions, PopSupervisor

    require_keys = _auth_choice(host, auth)
    from edgeplane.control import is_loopback

    beyond = [h for h in dict.fromkeys([host, agent_host or host]) if not is_loopback(h)]
    if beyond and not admin_token:
        raise click.UsageError(
            f"listening on {', '.join(beyond)}, beyond loopback: an admin token is required (--admin-token or"
            " EDGEPLANE_ADMIN_TOKEN), for the agent's faults and the control plane's admin API"
        )
    fleet = _load(ctx, fleet_path)
    site = fleet.pop_by_code.get(pop_code)
    if site is None:
        raise click.BadParameter(
            f"unknown PoP {pop_code!r} (the fleet has {', '.join(fleet.pop_by_code)})", param_hint="--pop"
        )
    agent_host = agent_host or host
    if advertise_address is None:
        if agent_host in _WILDCARDS:
            raise click.UsageError(
                f"the site agent listens on {agent_host or 'every address'}: give --advertise-address, the address"
                " the other PoPs' gateways reach it at"
            )
        advertise_address = agent_host
    _check_ports(ctx.obj["control_url"], host, port, agent_host, agent_port)
    if backend == "llamacpp" and gguf_path is None:
        raise click.UsageError("--backend llamacpp needs --gguf")
    if backend == "upstream" and not upstream_url:
        raise click.UsageError("--backend upstream needs --upstream")
    speaker_args = _speaker_args(neighbors, neighbor_asns, local_address, router_id, bgp_status_port)
    data_dir = data_dir or default_data_dir()
    agent_args = [
        *("--backend", backend, "--seed", str(seed), "--time-scale", str(time_scale)),
        *(["--gguf", str(gguf_path)] if gguf_path else []),
        *(["--upstream", upstream_url] if upstream_url else []),
        *(["--fleet", str(fleet_path)] if fleet_path else []),
        *(["--redfish-emulate"] if redfish_emulate else []),
        *(arg for unit in redfish for arg in ("--redfish", unit)),
        *(arg for unit in dcgm for arg in ("--dcgm", unit)),
    ]
    gateway_args = ["--home-metro", home_metro or site.metro, "--auth", "on" if require_keys else "off"]
    gateway_args += [
        "--access-log",
        str(data_dir / "access.log"),
        "--snapshot-file",
        str(data_dir / "gateway-snapshot.json"),
    ]
    gateway_args += [arg for net in trusted_proxy for arg in ("--trusted-proxy", net)]
    gateway_args += [*(["--first-token-timeout", str(first_token_timeout)] if first_token_timeout else [])]
    gateway_args += [*(["--read-timeout", str(read_timeout)] if read_timeout else [])]
    options = PopOptions(
        pop=pop_code,
        control_url=ctx.obj["control_url"],
        data_dir=data_dir,
        host=host,
        port=port,
        agent_host=agent_host,
        agent_port=agent_port,
        advertise_address=advertise_address,
        log_level=ctx.find_root().params.get("log_level", "warning"),
        admin_token=admin_token,
        gateway_args=gateway_args,
        agent_args=agent_args,
        speaker_args=speaker_args,
    )
    console = _console(ctx)
    report = _json_report if as_json else _TextReport(console)
    if as_json:  # stdout holds the JSON lines alone; what a person reads goes to stderr
        console = Console(stderr=True)
    # One `pop run` of a PoP per data directory: a second would fight the first for its ports and files.
    lock = _lock_or_exit(
        ctx, DirectoryLock(data_dir / f"pop-{pop_code}.lock", f"edgeplane pop run --pop {pop_code}", data_dir)
    )
    supervisor = PopSupervisor(options, console, report)
    _interrupt_once()
    try:
        supervisor.start()
        supervisor.wait()
    except KeyboardInterrupt:
        pass
    except EdgeplaneError as error:
        _fail(ctx, error)  # said at once; the children are still stopped, below
    finally:
        _ignore_interrupts()  # a second SIGTERM (`timeout` signals the whole group, then us) cannot cut the stop
        supervisor.stop()
        lock.release()
    report("stopped", {"pop": pop_code})


def _interrupt_once() -> None:
    """SIGTERM stops `pop run` the way Ctrl-C does, before ready as after; only the first of them interrupts."""

    def interrupt(signum: int, frame: Any) -> None:
        _ignore_interrupts()
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def _ignore_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _check_ports(control_url: str, host: str, port: int, agent_host: str, agent_port: int) -> None:
    """Ports that clash for certain, refused before anything starts (any other taken port: the child that cannot
    bind it ends `pop run` with its error)."""

    def overlap(a: str, b: str) -> bool:
        return a == b or a in _WILDCARDS or b in _WILDCARDS

    if port == agent_port and overlap(host, agent_host):
        raise click.UsageError(
            f"--port and --agent-port are both {port}: the gateway and the site agent need a port each"
        )
    control = urlsplit(control_url)
    with contextlib.suppress(ValueError):
        control_port = control.port or (443 if control.scheme == "https" else 80)
        control_host = control.hostname or ""
        local = control_host in ("localhost", "127.0.0.1", "::1")
        for flag, (listen_host, listen_port) in (("--port", (host, port)), ("--agent-port", (agent_host, agent_port))):
            on_it = overlap(listen_host, control_host) or (local and listen_host in ("localhost", "127.0.0.1"))
            if listen_port == control_port and on_it:
                raise click.UsageError(f"{flag} {listen_port} is the control plane's port ({control_url})")


def _speaker_args(
    neighbors: tuple[str, ...],
    neighbor_asns: tuple[int, ...],
    local_address: str | None,
    router_id: str | None,
    status_port: int | None,
) -> list[str] | None:
    """`bgp run`'s arguments, checked here so that a mistake is refused at once, not after three restarts."""
    if len(neighbors) != len(neighbor_asns):
        raise click.UsageError(
            f"{len(neighbors)} --neighbor but {len(neighbor_asns)} --neighbor-as: give one AS per neighbour"
        )
    if not neighbors:
        for flag, value in (
            ("--local-address", local_address),
            ("--router-id", router_id),
            ("--bgp-status-port", status_port),
        ):
            if value is not None:
                raise click.UsageError(f"{flag} is for the BGP speaker, which runs only with --neighbor")
        return None
    from edgeplane._extras import require_installed
    from edgeplane.bgp import Neighbor

    require_installed("exabgp", "bgp", "the BGP speaker (--neighbor)")
    for text, asn in zip(neighbors, neighbor_asns, strict=True):
        try:
            Neighbor.parse(text, asn)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--neighbor") from None
    args = [
        arg
        for pair in zip(neighbors, neighbor_asns, strict=True)
        for arg in ("--neighbor", pair[0], "--neighbor-as", str(pair[1]))
    ]
    args += [
        *(["--local-address", local_address] if local_address else []),
        *(["--router-id", router_id] if router_id else []),
    ]
    return args + (["--status-port", str(status_port)] if status_port is not None else [])


def _json_report(event: str, fields: dict[str, Any]) -> None:
    click.echo(json.dumps({"event": event, **fields}))


class _TextReport:
    """The events as a person reads them; exits and restarts are already on the console, said by the supervisor."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        say = self.console.print
        pop, children = fields["pop"], fields.get("children", {})
        if event == "started":
            say(f"pop {pop}: control plane {fields['control']}", highlight=False)
            for name in ("site agent", "gateway"):
                say(f"  {name:<12} pid {children[name]['pid']:<8} {children[name]['url']}", highlight=False)
            speaker = children.get("bgp speaker")
            shown = f"once both listen: {' '.join(speaker['args'])}" if speaker else "none (no --neighbor)"
            say(f"  {'bgp speaker':<12} {shown}", highlight=False)
        elif event == "listening" and "bgp speaker" in children:
            speaker = children["bgp speaker"]
            say(f"  {'bgp speaker':<12} pid {speaker['pid']:<8} started", highlight=False)
        elif event == "ready":
            say(
                f"[green]pop {pop} ready[/]: gateway {fields['gateway']}; SIGTERM or Ctrl-C stops it all",
                highlight=False,
                soft_wrap=True,
            )
        elif event == "waiting":
            say(
                f"pop {pop}: waiting for the {fields['for']} at {fields['control']} ({fields['reason']})",
                highlight=False,
                soft_wrap=True,
            )
        elif event == "stopped":
            say(f"pop {pop} stopped", highlight=False)
