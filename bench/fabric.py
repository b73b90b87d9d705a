"""The fabric (issue 16): broadcast time against the plan's lower bound, and the origin's egress over the object's
size, for 1 to 9 target sites and two object sizes, side by side in one run with a naive one-by-one copy from the
origin and with libtorrent (the engine not chosen) over the same links held to the same capacities.

    .venv/bin/python bench/fabric.py [--link-scale 0.0004] [--sizes-mb 50,200] [--targets 1,3,6,9] [--no-libtorrent]

Starts `edgeplane up` on the default fleet (emulator, 10 PoPs) with its links scaled (0.0004: 400 Gbit/s runs at
20 MB/s), pushes a fresh random object per cell from nyc1 with `fabric push --json`, 1 MiB chunks. The naive copy
fetches every chunk from the origin, target after target, each at its widest path's bottleneck (the origin's agent
shapes it as it shapes the fabric); it is run for the smallest and the largest target count. libtorrent (if the
`libtorrent` wheel imports): one session per site on its own loopback address, peers only along links, each
direction of a link capped by a peer class (bench/_libtorrent_swarm.py). Runs under /tmp/edgeplane-fleet.lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_fleet, stop_fleet  # noqa: E402

from edgeplane.fabric import build_manifest  # noqa: E402
from edgeplane.fleet import load_default_fleet  # noqa: E402
from edgeplane.planning import fabric_links, widest_rate  # noqa: E402

LOCK = "/tmp/edgeplane-fleet.lock"
ORIGIN = "nyc1"
ORDER = ["iad1", "sea1", "lon1", "dfw1", "ams1", "ord1", "fra1", "sjc1", "nyc2"]  # targets, first N of these
CHUNK = 1 << 20


def random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        for _ in range(size // CHUNK):
            f.write(os.urandom(CHUNK))


def push(control_url: str, path: Path, name: str, targets: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "edgeplane", "--control", control_url, "fabric", "push", str(path), "--name", name,
         "--from", ORIGIN, "--to", ",".join(targets), "--chunk-bytes", str(CHUNK), "--json"],
        capture_output=True, text=True, check=True, timeout=1800,
    )  # fmt: skip
    return dict(json.loads(out.stdout))


def agent_urls(control_url: str) -> dict[str, str]:
    with urllib.request.urlopen(f"{control_url}/api/status", timeout=10) as response:
        status = json.loads(response.read())
    return {pop["code"]: pop["url"] for pop in status["pops"]}


def naive(origin_url: str, sha: str, chunks: int, targets: list[str]) -> float:
    """Each target in turn takes every chunk from the origin (as scp from the origin would, one copy each)."""
    started = time.monotonic()
    for target in targets:
        for index in range(chunks):
            request = urllib.request.Request(
                f"{origin_url}/fabric/chunks/{sha}/{index}", headers={"X-Edgeplane-Fabric-Pop": target}
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--link-scale", type=float, default=0.0004)
    parser.add_argument("--sizes-mb", default="50,200")
    parser.add_argument("--targets", default="1,3,6,9")
    parser.add_argument("--no-libtorrent", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) * CHUNK for s in args.sizes_mb.split(",")]
    counts = [int(n) for n in args.targets.split(",")]
    links = fabric_links(load_default_fleet(), args.link_scale)
    swarm = None
    if not args.no_libtorrent:
        try:
            from bench._libtorrent_swarm import run_swarm

            swarm = run_swarm
        except ImportError as error:
            print(f"libtorrent: not measured ({error})")
    rows = []
    with open(LOCK, "w") as lock, tempfile.TemporaryDirectory(prefix="bench-fabric-") as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        argv = [sys.executable, "-m", "edgeplane", "up", "--time-scale", "0.05", "--link-scale", str(args.link_scale)]
        fleet = start_fleet(argv, Path(tmp), fleet_path=None, backend="emulator")
        try:
            urls = agent_urls(fleet.control_url)
            for size in sizes:
                for n in counts:
                    targets = ORDER[:n]
                    source = Path(tmp) / f"object-{size}-{n}.bin"
                    random_file(source, size)
                    result = push(fleet.control_url, source, f"bench-{size // CHUNK}m-{n}", targets)
                    row = {
                        "size_mb": size // CHUNK, "targets": n, "seconds": result["seconds"],
                        "bound": result["lower_bound_seconds"],
                        "egress": result["origin_egress_bytes"] / size,
                    }  # fmt: skip
                    if n in (min(counts), max(counts)):
                        manifest = build_manifest(source, "naive", CHUNK)
                        row["naive"] = naive(urls[ORIGIN], manifest.sha256, manifest.chunk_count, targets)
                        row["naive_bound"] = sum(size / widest_rate(links, ORIGIN, t) for t in targets)
                    if swarm is not None:
                        pairs = [(link.a, link.b, link.bytes_per_second) for link in links]
                        work = Path(tmp) / f"lt-{size}-{n}"
                        work.mkdir()
                        lt = swarm(pairs, ORIGIN, targets, source, work, piece_bytes=CHUNK, timeout_seconds=900)
                        row["libtorrent"] = lt["seconds"] if lt.get("complete") else None
                        row["libtorrent_egress"] = lt["origin_egress_bytes"] / size
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    source.unlink()
        finally:
            stop_fleet(fleet)
    print()
    print(
        "size   sites  ours s  bound s  ours/bound  origin copies | naive s  naive/bound "
        "| libtorrent s  lt/bound  lt copies"
    )
    for r in rows:
        naive_s = f"{r['naive']:7.2f}  {r['naive'] / r['bound']:10.2f}" if "naive" in r else f"{'-':>7}  {'-':>10}"
        if r.get("libtorrent"):
            lt = f"{r['libtorrent']:12.2f}  {r['libtorrent'] / r['bound']:8.2f}  {r['libtorrent_egress']:9.2f}"
        else:
            lt = f"{'-':>12}  {'-':>8}  {'-':>9}"
        print(
            f"{r['size_mb']:4d}MB  {r['targets']:5d}  {r['seconds']:6.2f}  {r['bound']:7.2f}"
            f"  {r['seconds'] / r['bound']:10.3f}"
            f"  {r['egress']:13.2f} | {naive_s} | {lt}"
        )


if __name__ == "__main__":
    main()
