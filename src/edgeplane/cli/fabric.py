"""`edgeplane fabric`: push an object (a model file, a checkpoint directory) from one site to others over the
fabric's links, and show what every site holds."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

from edgeplane.cli._root import _api, _console, _fail, _print_json, cli

if TYPE_CHECKING:
    from edgeplane.fabric import Manifest

UPLOADS_IN_FLIGHT = 4
MAX_CHUNKS = 12_000  # a manifest of more does not fit the control plane's 1 MiB body limit
MAX_CHUNK_BYTES = 64 * 1024 * 1024
POLL_SECONDS = 0.2


@cli.group()
def fabric() -> None:
    """Objects (models, checkpoints) moved between sites over the fabric's links."""


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    )  # fmt: skip


@fabric.command("push")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="The object's name (a model's, say); pushing it again replaces it.")
@click.option("--from", "origin", metavar="POP", help="The site it starts from (default: the plan's best).")
@click.option("--to", "to", default="all", show_default=True, metavar="all|POP,...", help="The sites to hold it.")
@click.option(
    "--chunk-bytes", type=click.IntRange(4096, MAX_CHUNK_BYTES),
    help="Size of the chunks it is cut into (smaller: the pipeline fills sooner; more requests). Default: 4 MiB,"
    f" or more for objects of more than {MAX_CHUNKS:,} chunks of it.",
)  # fmt: skip
@click.option("--no-wait", is_flag=True, help="Start the transfer and return.")
@click.option("--timeout", default=3600.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def push(
    ctx: click.Context,
    path: Path,
    name: str,
    origin: str | None,
    to: str,
    chunk_bytes: int | None,
    no_wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Send PATH to sites over the fabric, planned so that many sites take barely longer than one."""
    from edgeplane.fabric import FabricError, build_manifest

    console = Console(stderr=True) if as_json else _console(ctx)
    targets = None if to.strip() == "all" else [pop.strip() for pop in to.split(",") if pop.strip()]
    if targets == []:
        raise click.BadParameter("name at least one PoP, or all", param_hint="--to")
    size = _size(path)
    if chunk_bytes is None:  # 4 MiB, doubled until the manifest fits
        chunk_bytes = 4 * 1024 * 1024
        while -(-size // chunk_bytes) > MAX_CHUNKS and chunk_bytes < MAX_CHUNK_BYTES:
            chunk_bytes *= 2
    if -(-size // chunk_bytes) > MAX_CHUNKS:
        least = -(-size // MAX_CHUNKS)
        raise click.BadParameter(
            f"{path} is {size:,} bytes: {-(-size // chunk_bytes):,} chunks of {chunk_bytes:,}, more than the"
            f" {MAX_CHUNKS:,} a push carries; use --chunk-bytes {least:,} or more", param_hint="--chunk-bytes",
        )  # fmt: skip
    try:
        with _bar(console) as bar:
            task = bar.add_task(f"hashing {path.name}", total=size)
            manifest = build_manifest(path, name, chunk_bytes, lambda done: bar.update(task, completed=done))
    except (FabricError, OSError) as error:
        _fail(ctx, f"{path}: {error}")
    body = {"manifest": manifest.model_dump(mode="json"), "origin": origin, "targets": targets}
    created = _api(ctx, "POST", "/api/fabric/transfers", body, doing=f"cannot push {name}")
    origin, origin_url = created["origin"], created.get("origin_url")
    if not origin_url:
        _fail(ctx, f"the site agent of {origin} has not reported an address")
    _seed(ctx, console, manifest, path, origin, origin_url)
    quoted = quote(name, safe="")
    started = _api(ctx, "POST", f"/api/fabric/transfers/{quoted}/start", {}, doing=f"cannot start {name}")
    if no_wait:
        _print_json(started) if as_json else console.print(f"{name}: sending from {origin} (fabric status {name})")
        return
    result = _wait(ctx, console, name, manifest.size_bytes, timeout)
    failed = [site for site in result["sites"] if site["pop"] in result["plan"]["targets"] and not site["complete"]]
    if as_json:
        _print_json(_push_json(result))
    else:
        _print_push(console, result)
    if failed:
        missing = ", ".join(f"{site['pop']} ({site['error']})" for site in failed)
        _fail(ctx, f"{len(failed)} site(s) do not hold {name}: {missing}")


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _agent(method: str, url: str, body: bytes | None = None, content_type: str | None = None) -> Any:
    """One call of a site agent (the origin, which is given the object first), its JSON answer."""
    request = urllib.request.Request(url, data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    token = os.environ.get("EDGEPLANE_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = error.reason
        raise click.ClickException(f"the site agent at {url} answered {error.code}: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        raise click.ClickException(f"cannot reach the site agent at {url}: {error}") from None


def _read(manifest: Manifest, path: Path, index: int) -> bytes:
    offset, length = manifest.chunk_range(index)
    parts = []
    for entry, at, size in manifest.spans(offset, length):
        file = path if path.is_file() else path / entry.path
        with open(file, "rb") as f:
            f.seek(at)
            parts.append(f.read(size))
    return b"".join(parts)


def _seed(ctx: click.Context, console: Console, manifest: Manifest, path: Path, origin: str, url: str) -> None:
    """Give the origin site the object, skipping the chunks it holds already (a push again resumes)."""
    payload = json.dumps({"manifest": manifest.model_dump(mode="json"), "sources": []}).encode()
    try:
        _agent("POST", f"{url}/api/fabric/objects", payload, "application/json")
        missing = _agent("GET", f"{url}/api/fabric/objects/{manifest.sha256}")["missing"]
        with _bar(console) as bar, ThreadPoolExecutor(UPLOADS_IN_FLIGHT) as pool:
            task = bar.add_task(f"to {origin}", total=manifest.size_bytes)
            bar.update(task, completed=manifest.size_bytes - sum(manifest.chunk_range(i)[1] for i in missing))

            def upload(index: int) -> None:
                data = _read(manifest, path, index)
                _agent("PUT", f"{url}/fabric/chunks/{manifest.sha256}/{index}", data, "application/octet-stream")
                bar.advance(task, len(data))

            for _ in pool.map(upload, missing):
                pass
    except click.ClickException as error:
        _fail(ctx, f"cannot give {manifest.name} to {origin}: {error.message}")
    except OSError as error:
        _fail(ctx, f"{path}: {error}")


def _wait(ctx: click.Context, console: Console, name: str, size: int, timeout: float) -> dict[str, Any]:
    """Until every target holds the object (or cannot), with the bytes held over all targets as progress."""
    deadline = time.monotonic() + timeout
    quoted = quote(name, safe="")
    with _bar(console) as bar:
        task = None
        while True:
            result: dict[str, Any] = _api(ctx, "GET", f"/api/fabric/transfers/{quoted}", doing=f"cannot follow {name}")
            targets = set(result["plan"]["targets"]) if result.get("plan") else set()
            held = sum(site["bytes_held"] for site in result["sites"] if site["pop"] in targets)
            if task is None:
                task = bar.add_task(f"{name} to {len(targets)} sites", total=max(1, size * len(targets)))
            bar.update(task, completed=held)
            if result["state"] == "done":
                return result
            if time.monotonic() > deadline:
                _fail(ctx, f"{name} is not everywhere after {timeout:g} s (fabric status {name})")
            time.sleep(POLL_SECONDS)


def _push_json(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "sha256", "size_bytes", "seconds", "verified_seconds", "lower_bound_seconds",
            "origin_egress_bytes", "origin")  # fmt: skip
    sites = [
        {k: site[k] for k in ("pop", "seconds", "verified_seconds", "from", "complete", "sha256", "error")}
        for site in result["sites"]
    ]
    return {**{k: result[k] for k in keys}, "replans": result["replans"], "sites": sites}


def _print_push(console: Console, result: dict[str, Any]) -> None:
    seconds, bound = result["seconds"], result["lower_bound_seconds"]
    ratio = f" ({seconds / bound:.2f} x the bound of {bound:.2f} s)" if seconds and bound else ""
    console.print(f"{result['name']} ({result['size_bytes']:,} bytes) from {result['origin']}: "
                  f"{seconds:.2f} s{ratio}" if seconds is not None else f"{result['name']}: not complete")  # fmt: skip
    egress = result["origin_egress_bytes"] / max(1, result["size_bytes"])
    console.print(f"origin sent {egress:.2f} copies; re-planned {result['replans']} times")
    table = Table("site", "from", "seconds", "sha256")
    for site in result["sites"]:
        shown = f"{site['seconds']:.2f}" if site["seconds"] is not None else (site["error"] or "-")
        table.add_row(site["pop"], site["from"] or "-", shown, (site["sha256"] or "-")[:16])
    console.print(table)


@fabric.command("status")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """What every site holds of each object (or of NAME): complete and verified, or how much."""
    query = f"?name={quote(name, safe='')}" if name else ""
    answer = _api(ctx, "GET", f"/api/fabric/objects{query}", doing="cannot read the fabric")
    objects = answer["objects"]
    if name and not objects:
        _fail(ctx, f"no site holds an object named {name!r}")
    if as_json:
        _print_json({"objects": objects})
        return
    console = _console(ctx)
    if not objects:
        console.print("no objects (edgeplane fabric push PATH --name NAME)")
    for row in objects:
        title = f"{row['name']} ({row['size_bytes']:,} bytes)"
        table = Table("site", "held", "complete", "sha256 on disk", title=title)
        for site in row["sites"]:
            share = site["bytes_held"] / row["size_bytes"] if row["size_bytes"] else 1.0
            verified = site["sha256"] or "-"
            if site["sha256"] and site["sha256"] != row["sha256"]:
                verified += " (differs)"
            table.add_row(site["pop"], f"{share:.0%}", "yes" if site["complete"] else site["state"], verified[:24])
        console.print(table)


@fabric.command("rm")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def remove(ctx: click.Context, name: str, as_json: bool) -> None:
    """Forget object NAME and delete it from every site that holds it (a model's weights: its sites load it as
    before, without waiting for them)."""
    answer = _api(ctx, "DELETE", f"/api/fabric/transfers/{quote(name, safe='')}", doing=f"cannot remove {name}")
    if as_json:
        _print_json(answer)
    else:
        sites = ", ".join(answer["removed_from"]) or "no site"
        _console(ctx).print(f"{name} ({answer['sha256'][:16]}) removed from {sites}", highlight=False)
    if answer["failed"]:
        _fail(ctx, "still held at " + ", ".join(f"{pop} ({why})" for pop, why in sorted(answer["failed"].items())))
