"""`lab`: the network-namespace lab (up, status, exec, fail, down); Linux and root only."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from edgeplane.cli._options import fleet_option, graceful_shutdown_option
from edgeplane.cli._root import _console, _fail, _load, _print_json, cli


def _require_linux_root(ctx: click.Context) -> None:
    from edgeplane.lab import is_root

    if not sys.platform.startswith("linux"):
        _fail(ctx, "the lab needs Linux (network namespaces)")
    if not is_root():
        _fail(ctx, "the lab needs root (it makes network namespaces and links): run it with sudo")


def _pop_run_options() -> frozenset[str] | None:
    """The options of `pop run` when this install has it (the lab then runs it in each PoP's namespace)."""
    group = cli.commands.get("pop")
    command = group.commands.get("run") if isinstance(group, click.Group) else None
    if command is None:
        return None
    return frozenset(option for param in command.params for option in getattr(param, "opts", ()))


@cli.group()
def lab() -> None:
    """A PoP per network namespace behind BIRD transits, a client per metro (Linux, root)."""


@lab.command("up")
@fleet_option
@graceful_shutdown_option
@click.option("--ready-timeout", default=120.0, show_default=True, help="Seconds to wait for every BGP session.")
@click.option(
    "--json-ready", is_flag=True, help="When ready, print `lab status --json` as one line on stdout (the rest: stderr)."
)
@click.pass_context
def lab_up(
    ctx: click.Context,
    fleet_path: Path | None,
    graceful_shutdown_seconds: float,
    ready_timeout: float,
    json_ready: bool,
) -> None:
    """Build the lab and run it in the foreground; Ctrl-C or SIGTERM removes everything it made."""
    _require_linux_root(ctx)
    from edgeplane.lab import (
        Lab,
        LabError,
        LabOptions,
        LabPlanError,
        find_bird,
        lab_status,
        plan_lab,
        print_json_line,
        require_netlink,
    )

    fleet = _load(ctx, fleet_path)
    console = Console(stderr=True) if json_ready else _console(ctx)
    try:
        plan = plan_lab(fleet)
        find_bird()
        require_netlink()
    except (LabPlanError, LabError) as error:
        _fail(ctx, str(error))
    options = LabOptions(
        fleet_path=fleet_path.resolve() if fleet_path else None,
        graceful_shutdown_seconds=graceful_shutdown_seconds,
        ready_timeout_seconds=ready_timeout,
        log_level=ctx.find_root().params.get("log_level") or "info",
        pop_run_options=_pop_run_options(),
    )
    lab_ = Lab(plan, options, say=lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
    try:
        lab_.refuse_if_running()
    except LabError as error:
        _fail(ctx, error)
    _interrupt_on_signals()
    failure: LabError | None = None
    try:
        lab_.say(
            f"building the lab: {len(plan.pops)} PoPs, {len(plan.routers)} transit routers, {len(plan.clients)} client"
            f" metros; management {plan.mgmt_network} (host {plan.host_address} on {options.state_dir}), links"
            f" {plan.infra_network}"
        )
        lab_.build()
        lab_.start()
        lab_.say(f"control plane at {plan.control_url}; waiting for every BGP session and gateway")
        lab_.wait_ready()
        lab_.write_state()
        _print_ready(console, lab_)
        if json_ready:
            print_json_line(lab_status(options.state_dir), sys.stdout)
        lab_.watch()
    except KeyboardInterrupt:
        pass
    except LabError as error:
        failure = error
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # cleanup runs to its end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lab_.say("removing the lab")
        lab_.teardown()
    if failure is not None:
        _fail(ctx, failure)


def _interrupt_on_signals() -> None:
    """SIGTERM and SIGINT stop `lab up` as Ctrl-C does, so cleanup runs; in a forked child that has not exec'd
    yet they end the child instead (else it would run the parent's cleanup)."""
    parent = os.getpid()

    def interrupt(signum: int, frame: Any) -> None:
        if os.getpid() != parent:
            os._exit(128 + signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def _print_ready(console: Console, lab_: Any) -> None:
    plan = lab_.plan
    table = Table(title="lab ready: each metro's clients", title_justify="left")
    for column in ("metro", "client namespace", "client", "service URL", "enters at"):
        table.add_column(column)
    for client in plan.clients:
        table.add_row(client.metro, client.netns, client.address, plan.service_url(client.metro), client.router)
    console.print(table)
    console.print(
        f'try: edgeplane lab exec {plan.clients[0].metro if plan.clients else "METRO"} -- python -c "import openai;'
        ' print(openai.OpenAI().models.list())"   ·   edgeplane lab status   ·   Ctrl-C removes it all',
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (with the lab's admin token and key).")
@click.pass_context
def lab_status_command(ctx: click.Context, as_json: bool) -> None:
    """The running lab: each metro's client namespace and service URL, PoPs, routers and BGP sessions."""
    _require_linux_root(ctx)
    from edgeplane.lab import LabError, lab_status

    try:
        status = lab_status()
    except LabError as error:
        _fail(ctx, error)
    if as_json:
        _print_json(status)
        return
    console = _console(ctx)
    console.print(
        f"lab up (pid {status['pid']}): {'running' if status['running'] else 'NOT running (lab down cleans up)'};"
        f" control plane {status['control_url']}; links {'with' if status['netem'] else 'without'} the fleet's RTTs",
        highlight=False,
    )
    metros = Table(title="metros", title_justify="left")
    for column in ("metro", "client namespace", "service URL"):
        metros.add_column(column)
    for metro in status["metros"]:
        metros.add_row(metro["code"], metro["client_netns"], metro["service_url"])
    pops = Table(title="PoPs", title_justify="left")
    for column in ("PoP", "namespace", "management address", "next hop", "BGP sessions up"):
        pops.add_column(column)
    for pop in status["pops"]:
        mine = [s for s in status["sessions"] if s["kind"] == "pop" and s["peer"] == pop["code"]]
        pops.add_row(
            pop["code"], pop["netns"], pop["address"], pop["next_hop"], f"{sum(s['up'] for s in mine)}/{len(mine)}"
        )
    sessions = Table(title="BGP sessions", title_justify="left")
    for column in ("router", "peer", "kind", "state", "info"):
        sessions.add_column(column)
    for session in status["sessions"]:
        state = "[green]up[/]" if session["up"] else f"[red]{session['state']}[/]"
        sessions.add_row(session["router"], session["peer"], session["kind"], state, session["info"])
    for table in (metros, pops, sessions):
        console.print(table)


@lab.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("metro")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def lab_exec(ctx: click.Context, metro: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in METRO's client namespace (OPENAI_BASE_URL and OPENAI_API_KEY set); its exit status is ours."""
    _require_linux_root(ctx)
    from edgeplane.lab import LabError, exec_in_metro

    argv = list(command[1:] if command and command[0] == "--" else command)
    try:
        exec_in_metro(metro, argv)
    except LabError as error:
        _fail(ctx, error)


@lab.command("fail")
@click.argument("pop")
@click.pass_context
def lab_fail(ctx: click.Context, pop: str) -> None:
    """kill -9 every process in POP's namespace: a failure, as a power cut would be."""
    _require_linux_root(ctx)
    from edgeplane.lab import LabError, fail_pop

    try:
        pids = fail_pop(pop)
    except LabError as error:
        _fail(ctx, error)
    _console(ctx).print(f"killed {len(pids)} process(es) of {pop}: {' '.join(map(str, pids)) or '-'}", highlight=False)


@lab.command("down")
@click.pass_context
def lab_down_command(ctx: click.Context) -> None:
    """Remove whatever a lab left (processes, namespaces, the host's link, state), also after a crash."""
    _require_linux_root(ctx)
    from edgeplane.lab import LabError, lab_down

    try:
        removed = lab_down()
    except LabError as error:
        _fail(ctx, error)
    console = _console(ctx)
    if not removed:
        console.print("no lab to remove", highlight=False)
    for line in removed:
        console.print(f"removed {line}", highlight=False, markup=False)
