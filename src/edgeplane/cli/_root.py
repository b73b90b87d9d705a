"""The command group every command hangs from, and what commands share: the console, fleet loading, the one
way to call the control plane (_api), the one way a command fails (_fail, on stderr) and the one way --json
prints."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
import platformdirs
from rich.console import Console
from rich.text import Text

from edgeplane._errors import ConfigError, ControlPlaneError, EdgeplaneError
from edgeplane.fleet import Fleet, FleetError, load_fleet
from edgeplane.local import DirectoryLock, LockHeld

if TYPE_CHECKING:
    from edgeplane.cli._client import ControlClient
    from edgeplane.control import Store

DEFAULT_CONTROL_URL = "http://127.0.0.1:8081"


def default_data_dir() -> Path:
    return Path(os.environ.get("EDGEPLANE_DATA_DIR") or platformdirs.user_data_dir("edgeplane"))


def _console(ctx: click.Context) -> Console:
    console = ctx.obj.get("console") if isinstance(ctx.obj, dict) else None
    return console if isinstance(console, Console) else Console()


def _error_console(ctx: click.Context) -> Console:
    """Where failures are said: stderr (or the one a test injects), so that stdout holds only what a command
    answers and `--json` output stays JSON."""
    console = ctx.obj.get("error_console") if isinstance(ctx.obj, dict) else None
    return console if isinstance(console, Console) else Console(stderr=True)


def _load(ctx: click.Context, path: Path | None) -> Fleet:
    try:
        return load_fleet(path)
    except FleetError as error:
        console = _error_console(ctx)
        console.print(f"[red]fleet file refused[/] ({len(error.problems)} problem(s)):", highlight=False)
        for problem in error.problems:
            console.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)  # whole: it names a file
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
    help="URL of the control plane, or its replicas' comma-separated: a client moves to the next when one fails"
    " (or EDGEPLANE_CONTROL_URL).",
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


def _lock_or_exit(ctx: click.Context, lock: DirectoryLock) -> DirectoryLock:
    try:
        lock.acquire()
    except LockHeld as error:
        _fail(ctx, error)
    return lock


def _open_store_or_exit(ctx: click.Context, data_dir: Path, *, reset: bool, url: str | None = None) -> Store:
    """The control plane's store (``url``, or the data directory's SQLite file), checked: a file that is empty,
    damaged or not ours, or a database that cannot be reached or is not ours, ends the command."""
    from edgeplane.control import SQLiteStore
    from edgeplane.control._stores import default_store_url, open_store, parse_store_url

    try:
        store = open_store(default_store_url(data_dir) if url is None else parse_store_url(url), reset=reset)
    except ConfigError as error:
        _fail(ctx, error)
    if isinstance(store, SQLiteStore) and store.moved_aside is not None:
        _console(ctx).print(f"--reset-store: the old store was moved aside to {store.moved_aside}", soft_wrap=True)
    return store


def _fail(ctx: click.Context, error: EdgeplaneError | str) -> NoReturn:
    """How every command says it failed: `error: ...` on stderr (whole, even if long: it names files and URLs)
    and exit 1, no traceback."""
    _error_console(ctx).print(Text.assemble(("error: ", "red"), str(error)), soft_wrap=True)
    ctx.exit(1)


def _control(ctx: click.Context, *, timeout_seconds: float = 10.0) -> ControlClient:
    """The client of the control plane (--control, EDGEPLANE_ADMIN_TOKEN) for a command that must tell a failure
    apart; every other call goes through _api."""
    from edgeplane.cli._client import ControlClient

    return ControlClient(
        ctx.obj["control_url"], admin_token=os.environ.get("EDGEPLANE_ADMIN_TOKEN"), timeout_seconds=timeout_seconds
    )


def _api(
    ctx: click.Context, method: str, path: str, payload: Any = None, *, timeout_seconds: float = 10.0, doing: str = ""
) -> Any:
    """One call of the control plane: its JSON answer, or (unreachable, refused, an HTTP error with the server's
    message, no JSON) the command ends through _fail, the message prefixed with what it was ``doing``."""
    try:
        return _control(ctx, timeout_seconds=timeout_seconds).call(method, path, payload)
    except ControlPlaneError as error:
        _fail(ctx, f"{doing}: {error}" if doing else error)


def _print_json(data: Any, *, one_line: bool = False) -> None:
    """What every `--json` prints: indented, or ``one_line`` for the single records scripts read line by line
    (a key, a drain, a unit, a fault)."""
    click.echo(json.dumps(data) if one_line else json.dumps(data, indent=2))
