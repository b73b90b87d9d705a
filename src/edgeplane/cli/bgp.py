"""`bgp`: the PoP's speaker, its intents, status, egress decisions and inbound balance."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from edgeplane._errors import ConfigError, ControlPlaneError, EdgeplaneError
from edgeplane.cli._options import fleet_option
from edgeplane.cli._root import _api, _console, _control, _fail, _load, _print_json, _run, cli, default_data_dir


@cli.group()
def bgp() -> None:
    """The network edge: what each PoP announces, with which communities."""


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
    source: IntentSource | None = None
    if fleet_path is not None and control_url is None:
        fleet = _load(ctx, fleet_path)
        if pop_code not in fleet.pop_by_code:
            raise click.BadParameter(f"unknown PoP {pop_code!r}", param_hint="--pop")
        source = FleetIntents(fleet, pop_code)
    workdir = (data_dir or default_data_dir()) / f"bgp-{pop_code}"
    if source is None:
        source = ControlIntents(
            control_url or ctx.obj["control_url"], pop_code, admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"),
            saved=workdir / "intents.json",
        )  # fmt: skip
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
        _fail(ctx, "; ".join(str(e) for e in group.exceptions))


@bgp.command("intents")
@click.option("--pop", "pop_code", required=True, help="Code of the PoP.")
@fleet_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_intents(ctx: click.Context, pop_code: str, fleet_path: Path | None, as_json: bool) -> None:
    """What POP announces now: from the control plane (drains, health, actions), or the fleet file alone."""
    from edgeplane.bgp import pop_intents
    from edgeplane.speaker import intent_from_json

    loaded = _load(ctx, fleet_path)
    if pop_code not in loaded.pop_by_code:
        _fail(ctx, f"unknown PoP {pop_code!r}; expected one of: {', '.join(sorted(loaded.pop_by_code))}")
    state: dict[str, Any] | None = None
    try:  # the only command that goes on without the control plane: the fleet file says what to announce
        answer = _control(ctx, timeout_seconds=3).call("GET", f"/api/bgp/intents?pop={pop_code}")
        intents = [intent_from_json(i) for i in answer["intents"]]
        state = answer["state"]
        source = f"control plane {ctx.obj['control_url']}, version {answer['version']}"
    except ControlPlaneError:
        intents, source = pop_intents(loaded, pop_code), "no control plane reachable: the fleet file alone"
    if as_json:
        payload = {"pop": pop_code, "asn": loaded.asn, "source": source, "state": state}
        _print_json({**payload, "intents": [i.to_json() for i in intents]})
        return
    title = f"{pop_code} announces (AS{loaded.asn}; {source})"
    if state and state["state"] != "announced":
        title += f"\nmetro prefixes: {state['state']} ({state['reason']})"
    table = Table(title=title)
    for column in ("prefix", "next hop", "scope", "large communities", "communities", "med", "prepends"):
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
            str(intent.as_path_prepend) if intent.as_path_prepend else "",
        )
    _console(ctx).print(table)


@bgp.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_status(ctx: click.Context, as_json: bool) -> None:
    """Each PoP's metro prefixes: announced, in graceful shutdown, or withdrawn, and why."""
    answer = _api(ctx, "GET", "/api/bgp", timeout_seconds=5)
    if as_json:
        _print_json(answer)
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
@click.argument("destination", required=False)
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
@click.option(
    "--ingress",
    "ingress_metro",
    metavar="METRO",
    help="Instead: at which PoP METRO's clients enter, as the transits' routers decide (no DESTINATION).",
)
@click.option("--drain", "drains", multiple=True, metavar="METRO", help="With --ingress: this metro drained (repeat).")
@click.option(
    "--shutting-down",
    "shutting",
    multiple=True,
    metavar="METRO",
    help="With --ingress: this metro in its graceful-shutdown period (repeat).",
)
@click.option("--fail", "failures", multiple=True, metavar="POP", help="With --ingress: this PoP failed (repeat).")
@fleet_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_explain(
    ctx: click.Context,
    destination: str | None,
    pop_code: str | None,
    routes_path: Path | None,
    data_dir: Path | None,
    always_compare_med: bool,
    deterministic_med: bool,
    ingress_metro: str | None,
    drains: tuple[str, ...],
    shutting: tuple[str, ...],
    failures: tuple[str, ...],
    fleet_path: Path | None,
    as_json: bool,
) -> None:
    """Which transit traffic to DESTINATION (an address or prefix) leaves by, and why: the BGP decision process
    over the routes the transits sent. With --ingress METRO: where that metro's clients enter the fleet, and why,
    over the routes the PoPs would announce (with --drain, --shutting-down, --fail)."""
    from edgeplane.bgp import best_path, load_routes, longest_match

    if ingress_metro is not None:
        if destination is not None:
            raise click.UsageError("give DESTINATION (egress) or --ingress METRO, not both")
        egress_only = {
            "--pop": pop_code is not None, "--routes": routes_path is not None, "--data-dir": data_dir is not None,
            "--no-always-compare-med": not always_compare_med, "--deterministic-med": deterministic_med,
        }  # fmt: skip
        if given := [name for name, used in egress_only.items() if used]:
            raise click.UsageError(f"{', '.join(given)} explain egress (DESTINATION), not --ingress")
        if both := sorted(set(drains) & set(shutting)):
            raise click.UsageError(f"{', '.join(both)}: drained or shutting down, not both")
        _explain_ingress(ctx, ingress_metro, drains, shutting, failures, fleet_path, as_json)
        return
    if drains or shutting or failures:
        raise click.UsageError("--drain, --shutting-down and --fail go with --ingress METRO")
    if destination is None:
        raise click.UsageError("give DESTINATION (an address or prefix), or --ingress METRO")
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
        _print_json({"destination": destination, **decision.to_json()})
        return
    console = _console(ctx)
    table = Table(title=f"{destination}: {_routes(len(candidates))} to {prefix} ({decision.method})")
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


def _explain_ingress(
    ctx: click.Context,
    metro: str,
    drains: tuple[str, ...],
    shutting: tuple[str, ...],
    failures: tuple[str, ...],
    fleet_path: Path | None,
    as_json: bool,
) -> None:
    from edgeplane.bgp import predict_ingress

    fleet = _load(ctx, fleet_path)
    metros, pops = set(fleet.metro_by_code), set(fleet.pop_by_code)
    given = [(metro, metros, "--ingress")]
    given += [(m, metros, "--drain") for m in drains] + [(m, metros, "--shutting-down") for m in shutting]
    for code, known, hint in given + [(p, pops, "--fail") for p in failures]:
        if code not in known:
            raise click.BadParameter(f"unknown {code!r}; expected one of: {', '.join(sorted(known))}", param_hint=hint)
    predicted = predict_ingress(fleet, withdrawn_metros=drains, shutting_down_metros=shutting, failed_pops=failures)
    if metro not in predicted:
        raise click.ClickException(f"metro {metro} has no client router (no PoP with a transit) or no IPv4 service")
    ingress = predicted[metro]
    state = {"drained": sorted(drains), "shutting_down": sorted(shutting), "failed": sorted(failures)}
    if as_json:
        _print_json({**state, **ingress.to_json()})
        return
    console = _console(ctx)
    router = ingress.router
    title = (
        f"{metro}'s clients to {ingress.address}: at {router.name} ({router.router_id}, AS{router.asn}),"
        f" {_routes(len(ingress.candidates))} to {ingress.prefix or 'nothing'}"
    )
    table = Table(title=title)
    for column in ("", "PoP", "exit router", "learned", "AS path", "local pref", "MED", "IGP cost", "why not"):
        table.add_column(column)
    for candidate in ingress.candidates:
        route, best = candidate.route, candidate is ingress.winner
        table.add_row(
            "best" if best else "",
            candidate.pop,
            candidate.exit.name,
            "iBGP" if route.ibgp else "eBGP",
            " ".join(map(str, route.as_path)),
            str(route.local_pref),
            "" if route.med is None else str(route.med),
            str(route.igp_cost),
            "" if best else ingress.why_not(candidate),
        )
    console.print(table)
    shown = (
        ", ".join(f"{k.replace('_', ' ')} {' '.join(v)}" for k, v in state.items() if v) or "nothing drained or failed"
    )
    if ingress.winner is None:
        console.print(f"{metro}'s clients have no route ({shown})")
    else:
        console.print(f"ingress for {metro}: {ingress.winner.pop} via {ingress.winner.exit.name} ({shown})")


@bgp.command("balance")
@click.option(
    "--traffic", "traffic_path", type=click.Path(path_type=Path, dir_okay=False),
    help="CSV with the header pop,transit_asn,gbps: inbound traffic per PoP and transit.",
)  # fmt: skip
@click.option(
    "--flows", "from_flows", is_flag=True,
    help="Read the inbound traffic from the flow store instead (95th percentile per PoP and transit, as billed).",
)  # fmt: skip
@click.option(
    "--rib", "rib_path", type=click.Path(path_type=Path, dir_okay=False),
    help="With --flows: routes from a file (MRT or a birdc dump) instead of the speakers' received routes.",
)  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), help="With --flows: where they are.")
@fleet_option
@click.option("--shift-per-prepend", default=0.3, show_default=True, type=click.FloatRange(0.01, 1.0))
@click.option("--apply", "apply_", is_flag=True, help="Send the suggestions to the control plane as actions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def bgp_balance(
    ctx: click.Context,
    traffic_path: Path | None,
    from_flows: bool,
    rib_path: Path | None,
    data_dir: Path | None,
    fleet_path: Path | None,
    shift_per_prepend: float,
    apply_: bool,
    as_json: bool,
) -> None:
    """Suggest prepends or action communities that move inbound traffic toward equal use of each PoP's
    transits, with the predicted effect."""
    from edgeplane.bgp import read_traffic, suggest

    if (traffic_path is None) == (not from_flows):
        raise click.UsageError("give --traffic CSV or --flows (the flow store), one of them")
    if not from_flows and (rib_path is not None or data_dir is not None):
        raise click.UsageError("--rib and --data-dir go with --flows")
    fleet = _load(ctx, fleet_path)
    try:
        if traffic_path is not None:
            traffic = read_traffic(traffic_path, fleet)
        else:
            from edgeplane.peering import FlowStore, inbound_gbps, rib_routes, speaker_routes

            where = data_dir or default_data_dir()
            routes = rib_routes(fleet, rib_path) if rib_path is not None else speaker_routes(fleet, where)
            traffic = inbound_gbps(fleet, FlowStore(where), routes)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    suggestions = [suggest(fleet, pop, per, shift_per_prepend=shift_per_prepend) for pop, per in traffic.items()]
    applied: list[dict[str, Any]] = []
    if apply_:
        for s in suggestions:
            if s.transit_asn is None:
                continue
            body = {"pop": s.pop, "transit_asn": s.transit_asn, "action": s.action}
            doing = f"applying {s.action} on {s.pop} toward AS{s.transit_asn}"
            applied.append(_api(ctx, "POST", "/api/bgp/actions", body, doing=doing))
    if as_json:
        _print_json({"suggestions": [s.to_json() for s in suggestions], "applied": applied})
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


def _routes(count: int) -> str:
    return f"{count} route" if count == 1 else f"{count} routes"
