"""The libtorrent side of the fabric benchmark (issue 16): broadcast one file from an origin site to target sites
over emulated private links, one libtorrent session per site, each in its own process.

    from _libtorrent_swarm import run_swarm
    result = run_swarm([("a", "b", 10e6), ("b", "c", 10e6)], "a", ["b", "c"], Path("model.bin"), Path(workdir))

How the links are emulated, all on loopback:

- every site listens on its own address, 127.77.0.N, TCP only (no uTP), and binds its outgoing connections to it,
  so each session tells its peers apart by IP;
- no DHT, LSD, UPnP, NAT-PMP, trackers or PEX: peers are connected explicitly with ``connect_peer`` along the
  links only, and each session's IP filter blocks every address but its direct neighbours', so a site without a
  direct link to another can get data only through the sites in between;
- each link end is one libtorrent peer class (``create_peer_class``) whose ``download_limit`` is the link's bytes
  per second: the receiving site caps each direction of the link (TCP flow control holds the sender back), and
  ``limit_upload=True`` caps it at the sender too. The session's peer-class filter maps the neighbour's IP to its
  class and every other address to the global class only, replacing libtorrent's default filter, which puts
  127/8 and private-network peers in the unlimited "local" class (``ignore_limits_on_local_network`` is off too).
  ``rate_limit_ip_overhead`` stays on (libtorrent's default): TCP/IP headers count against the link, as on a real
  one. No latency is added (``rtt_ms`` is not emulated).

How close that is to a real link (measured on a 10 MB/s chain, see bench/fabric_libtorrent_check.py): libtorrent's
limiter is a token bucket that grants quota once per tick (``tick_interval``, 20 ms here, 500 ms by default) to
requests sized from per-second rate statistics, and it holds up to 3 s of unused quota. Over a whole transfer a
link never carries more than its rate; but each connection runs at about half its rate for its first second, then
up to twice it until it has caught up, and a relay's downstream link cannot catch up past what it has received.
A transfer therefore takes about 0.5 s per hop longer than on a strict link, so size the file to run for many
seconds. Capping the sender too (``limit_upload``) makes that first-second ramp slower still.

The torrent is BitTorrent v2 only (SHA-256 merkle tree, piece layers in the .torrent), made with the given piece
size; every piece is checked against it before a site counts it as had, and a site is complete when libtorrent
says the torrent finished. The origin checks its file before the clock starts.

The clock: all sites start, load the torrent and listen; the non-origin sites connect among themselves (they have
nothing, so nothing flows); then the origin connects to its neighbours, and the clock starts when all of its
connections are up ("connect_seconds" is how long that took from the origin's connect call). "seconds" runs to the
last target's finish, as each site's process records it on the machine's monotonic clock.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ADDRESS_PREFIX = "127.77.0."
MAX_RATE = 2**31 - 1  # libtorrent's peer-class limits are ints; 0 means unlimited
STARTUP_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0
TICK_MS = 20  # libtorrent hands out rate-limit quota once a tick (default 500 ms): finer is closer to a real link


def run_swarm(
    links: list[tuple[str, str, float]],
    origin: str,
    targets: list[str],
    path: Path,
    workdir: Path,
    *,
    piece_bytes: int = 1 << 20,
    timeout_seconds: float = 300,
    super_seed: bool = False,
    relays: list[str] | None = None,
    limit_upload: bool = False,
) -> dict:
    """Broadcast ``path`` from ``origin`` to ``targets`` over ``links`` ((pop_a, pop_b, bytes_per_second),
    undirected, each direction capped) with one libtorrent session per site; see the module's doc.

    ``super_seed``: the origin super-seeds (on a chain it is many times slower; off by default).
    ``limit_upload``: cap each direction at the sender as well as at the receiver. ``relays``: the other sites that
    take part (they download the file too, and pass it on); None picks them: for each target not reachable from the
    origin through the origin and targets alone, the sites in between on the widest path (largest bottleneck, then
    fewest hops). ``workdir`` gets the .torrent, one download folder and one log per site (any earlier downloads
    there are removed first). ``timeout_seconds`` bounds the whole run (start-up included); at the end every site
    process is stopped, on success, timeout or error.

    Returns {"engine", "seconds" (clock start to last target finished; None if not all finished), "connect_seconds",
    "connect_spread_seconds" (from the origin's first connection up to its last, when the clock starts: data may
    flow on the first meanwhile; libtorrent makes its connection attempts on a ~1 s timer),
    "origin_egress_bytes" (payload the origin uploaded), "origin_egress_wire_bytes" (with protocol overhead),
    "sites" {target: seconds to finished}, "relays" [...], "relay_sites" {relay: seconds}, "uploaded_bytes"
    {site: payload uploaded}, "hash_failures", "complete" (every target finished and holds every piece, each
    checked against the v2 merkle tree), "timed_out", "super_seed", "piece_bytes", "file_bytes", "startup_seconds"
    (process start to the origin's connect call), "error" when it timed out waiting}.
    """
    import libtorrent as lt

    path = Path(path).resolve()
    workdir = Path(workdir).resolve()
    targets = list(dict.fromkeys(targets))
    if origin in targets:
        raise ValueError(f"origin {origin} is also a target")
    if piece_bytes < 16 * 1024 or piece_bytes & (piece_bytes - 1):
        raise ValueError(f"piece_bytes must be a power of two >= 16 KiB for a v2 torrent, not {piece_bytes}")
    graph = _graph(links)
    for site in [origin, *targets]:
        if site not in graph:
            raise ValueError(f"site {site} has no link")
    for site in relays or []:
        if site not in graph:
            raise ValueError(f"relay {site} has no link")
    chosen_relays = _relays(graph, origin, targets) if relays is None else list(dict.fromkeys(relays))
    sites = [origin, *targets, *[r for r in chosen_relays if r not in targets and r != origin]]
    if len(sites) > 250:
        raise ValueError("at most 250 sites (one loopback address each)")
    address = {site: f"{ADDRESS_PREFIX}{i + 1}" for i, site in enumerate(sites)}
    member = set(sites)
    clamped = sorted(
        f"{a}-{b}" for a in member for b, rate in graph[a].items() if b in member and a < b and rate > MAX_RATE
    )

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(workdir / "sites", ignore_errors=True)  # a download left from an earlier run would start complete
    (workdir / "logs").mkdir(exist_ok=True)
    started = time.monotonic()
    deadline = started + timeout_seconds
    torrent_file = workdir / "swarm.torrent"
    torrent_file.write_bytes(_make_torrent(lt, path, piece_bytes))

    events: queue.Queue[tuple[str, dict]] = queue.Queue()
    procs: dict[str, subprocess.Popen] = {}
    logs = []
    result: dict = {
        "engine": f"libtorrent {lt.__version__}",
        "seconds": None,
        "connect_seconds": None,
        "connect_spread_seconds": None,
        "origin_egress_bytes": 0,
        "origin_egress_wire_bytes": 0,
        "sites": {},
        "relays": [s for s in sites if s != origin and s not in targets],
        "relay_sites": {},
        "uploaded_bytes": {},
        "hash_failures": 0,
        "complete": False,
        "timed_out": False,
        "super_seed": super_seed,
        "limit_upload": limit_upload,
        "piece_bytes": piece_bytes,
        "file_bytes": path.stat().st_size,
        "startup_seconds": None,
    }
    if clamped:
        result["clamped_links"] = clamped
    try:
        for site in sites:
            neighbours = {n: [address[n], _limit(rate)] for n, rate in graph[site].items() if n in member}
            config = {
                "site": site,
                "ip": address[site],
                "torrent": str(torrent_file),
                "save_path": str(path.parent if site == origin else workdir / "sites" / site),
                "seed": site == origin,
                "super_seed": super_seed and site == origin,
                "neighbours": neighbours,
                "limit_upload": limit_upload,
            }
            log = open(workdir / "logs" / f"{site}.log", "wb")  # noqa: SIM115 - closed in finally
            logs.append(log)
            proc = subprocess.Popen(
                [sys.executable, "-u", str(Path(__file__).resolve())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                bufsize=1,
            )
            procs[site] = proc
            proc.stdin.write(json.dumps(config) + "\n")
            proc.stdin.flush()
            threading.Thread(target=_read_events, args=(site, proc, events), daemon=True).start()

        done: dict[str, float] = {}

        def wait_for(kind: str, who: set[str], until: float) -> dict[str, dict]:
            got: dict[str, dict] = {}
            while len(got) < len(who):
                left = until - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"waiting for {kind} from {sorted(who - set(got))}")
                try:
                    site, event = events.get(timeout=min(left, 0.5))
                except queue.Empty:
                    continue
                if event["ev"] == "exit":
                    raise RuntimeError(f"site {site} exited early; see {workdir / 'logs' / (site + '.log')}")
                if event["ev"] == "error":
                    raise RuntimeError(f"site {site}: {event['message']}")
                if event["ev"] == "done":
                    done[site] = event["t"]
                if event["ev"] == kind and site in who:
                    got[site] = event
            return got

        ready = wait_for("ready", set(sites), min(deadline, time.monotonic() + STARTUP_SECONDS))
        ports = {site: event["port"] for site, event in ready.items()}

        def dial(site: str) -> list[list]:
            # each link is dialled from one end: the origin's from the origin, the others' from the smaller name
            return [
                [address[n], ports[n]]
                for n in graph[site]
                if n in member and n != origin and (site == origin or site < n)
            ]

        others = [s for s in sites if s != origin]
        for site in others:
            _send(
                procs[site],
                {"cmd": "connect", "peers": dial(site), "expect": _inner_degree(graph, site, member, origin)},
            )
        wait_for("connected", set(others), deadline)
        result["startup_seconds"] = round(time.monotonic() - started, 3)
        connect_called = time.monotonic()
        _send(
            procs[origin],
            {"cmd": "connect", "peers": dial(origin), "expect": _inner_degree(graph, origin, member, None)},
        )
        connected = wait_for("connected", {origin}, deadline)[origin]
        t0 = connected["t"]
        result["connect_seconds"] = round(t0 - connect_called, 4)
        result["connect_spread_seconds"] = round(t0 - connected["first"], 4)

        try:
            wait_for("done", set(targets) - set(done), deadline)  # relays that finish by then are reported too
        except TimeoutError:
            result["timed_out"] = True
        finish = {site: round(t - t0, 3) for site, t in done.items()}
        result["sites"] = {t: finish[t] for t in targets if t in finish}
        result["relay_sites"] = {r: finish[r] for r in result["relays"] if r in finish}
        if len(result["sites"]) == len(targets):
            result["seconds"] = max(result["sites"].values())

        for site in sites:
            _send(procs[site], {"cmd": "report"})
        reports = wait_for("report", set(sites), time.monotonic() + 10)
        result["origin_egress_bytes"] = reports[origin]["payload_up"]
        result["origin_egress_wire_bytes"] = reports[origin]["up"]
        result["uploaded_bytes"] = {site: reports[site]["payload_up"] for site in sites}
        result["hash_failures"] = sum(r["hash_failures"] for r in reports.values())
        result["complete"] = not result["timed_out"] and all(
            t in result["sites"] and reports[t]["finished"] for t in targets
        )
        return result
    except TimeoutError as exc:
        result["timed_out"] = True
        result["error"] = str(exc)
        return result
    finally:
        for proc in procs.values():
            with contextlib.suppress(OSError, ValueError):
                _send(proc, {"cmd": "quit"})
                proc.stdin.close()
        stop_by = time.monotonic() + STOP_GRACE_SECONDS
        for proc in procs.values():
            try:
                proc.wait(timeout=max(0.1, stop_by - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()


def _graph(links: list[tuple[str, str, float]]) -> dict[str, dict[str, float]]:
    graph: dict[str, dict[str, float]] = {}
    for a, b, rate in links:
        if a == b:
            raise ValueError(f"link {a}-{b} joins a site to itself")
        if rate <= 0:
            raise ValueError(f"link {a}-{b}: rate must be positive, not {rate}")
        if b in graph.get(a, {}):
            raise ValueError(f"link {a}-{b} given twice")
        graph.setdefault(a, {})[b] = float(rate)
        graph.setdefault(b, {})[a] = float(rate)
    return graph


def _relays(graph: dict[str, dict[str, float]], origin: str, targets: list[str]) -> list[str]:
    """The fewest extra sites that connect every target to the origin: for each target still cut off from the
    sites taking part, the intermediate sites of the widest path to it (largest bottleneck, then fewest hops)."""
    member = {origin, *targets}
    relays: list[str] = []
    while True:
        reach = {origin}
        stack = [origin]
        while stack:
            for n in graph[stack.pop()]:
                if n in member and n not in reach:
                    reach.add(n)
                    stack.append(n)
        missing = [t for t in targets if t not in reach]
        if not missing:
            return relays
        goal = missing[0]
        # widest path from the reached set to goal (max-min bottleneck, then fewest hops)
        best: dict[str, tuple[float, int]] = {s: (float("inf"), 0) for s in reach}
        parent: dict[str, str | None] = dict.fromkeys(reach)
        heap = [(-float("inf"), 0, s) for s in reach]
        while heap:
            neg_width, hops, site = heapq.heappop(heap)
            if (-neg_width, hops) != best[site]:
                continue
            for n, rate in graph[site].items():
                cand = (min(-neg_width, rate), hops + 1)
                old = best.get(n)
                if old is None or cand[0] > old[0] or (cand[0] == old[0] and cand[1] < old[1]):
                    best[n] = cand
                    parent[n] = site
                    heapq.heappush(heap, (-cand[0], cand[1], n))
        if goal not in best:
            raise ValueError(f"target {goal} has no path from origin {origin}")
        site = parent[goal]
        while site is not None and site not in reach:
            if site not in member:
                member.add(site)
                relays.append(site)
            site = parent[site]


def _inner_degree(graph: dict[str, dict[str, float]], site: str, member: set[str], skip: str | None) -> int:
    return sum(1 for n in graph[site] if n in member and n != skip)


def _limit(rate: float) -> int:
    return max(1, min(MAX_RATE, round(rate)))


def _make_torrent(lt, path: Path, piece_bytes: int) -> bytes:
    entry = lt.create_file_entry(path.name, path.stat().st_size)
    creator = lt.create_torrent([entry], piece_bytes, lt.create_torrent.v2_only)
    creator.set_creator("edgeplane fabric bench")
    lt.set_piece_hashes(creator, str(path.parent))
    return lt.bencode(creator.generate())


def _send(proc: subprocess.Popen, message: dict) -> None:
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()


def _read_events(site: str, proc: subprocess.Popen, events: queue.Queue) -> None:
    for line in proc.stdout:
        with contextlib.suppress(ValueError):
            events.put((site, json.loads(line)))
    events.put((site, {"ev": "exit"}))


# --- one site's process ---------------------------------------------------------------------------------------


def _site_main() -> None:
    import libtorrent as lt

    config = json.loads(sys.stdin.readline())
    commands: queue.Queue[dict | None] = queue.Queue()

    def read_commands() -> None:
        for line in sys.stdin:
            commands.put(json.loads(line))
        commands.put(None)  # the parent went away

    threading.Thread(target=read_commands, daemon=True).start()

    def emit(event: dict) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    ip = config["ip"]
    session = lt.session(
        {
            "listen_interfaces": f"{ip}:0",
            "outgoing_interfaces": ip,
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "enable_incoming_utp": False,
            "enable_outgoing_utp": False,
            "ignore_limits_on_local_network": False,
            "rate_limit_ip_overhead": True,
            "in_enc_policy": 2,  # pe_disabled: plain TCP on a private link
            "out_enc_policy": 2,
            "unchoke_slots_limit": -1,  # every neighbour unchoked: no tit-for-tat slots on a private fabric
            "min_reconnect_time": 1,
            "connection_speed": 200,
            "tick_interval": TICK_MS,
            "aio_threads": 2,
            "hashing_threads": 1,
            "alert_mask": int(lt.alert_category.status | lt.alert_category.error),
            "user_agent": "edgeplane-fabric-bench",
        }
    )

    # One peer class per neighbour, its download limit = the link's rate in that direction; the neighbour's IP maps to
    # it. Everything else maps to the global class only (this replaces libtorrent's default filter, which gives 127/8
    # and private networks the unlimited local class) and is blocked by the IP filter anyway.
    class_filter = lt.ip_filter()
    class_filter.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    block = lt.ip_filter()
    block.add_rule("0.0.0.0", "255.255.255.255", 1)
    block.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
    for neighbour, (neighbour_ip, rate) in config["neighbours"].items():
        label = f"link {neighbour}->{config['site']}"
        cls = session.create_peer_class(label)
        info = session.get_peer_class(cls)
        info.update(download_limit=rate, upload_limit=rate if config["limit_upload"] else 0, label=label)
        session.set_peer_class(cls, info)
        class_filter.add_rule(neighbour_ip, neighbour_ip, 1 << cls)
        block.add_rule(neighbour_ip, neighbour_ip, 0)
    session.set_peer_class_filter(class_filter)
    session.set_ip_filter(block)

    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(config["torrent"])
    params.save_path = config["save_path"]
    flags = lt.torrent_flags
    params.flags = (
        flags.apply_ip_filter | flags.disable_dht | flags.disable_lsd | flags.disable_pex | flags.update_subscribe
    )
    if config["super_seed"]:
        params.flags |= flags.super_seeding
    handle = session.add_torrent(params)

    hash_failures = 0
    finished = False
    expect: int | None = None
    start = time.monotonic()

    def pump(wait_ms: int) -> None:
        nonlocal hash_failures, finished
        session.wait_for_alert(wait_ms)
        for alert in session.pop_alerts():
            if isinstance(alert, lt.hash_failed_alert):
                hash_failures += 1
            elif isinstance(alert, lt.torrent_finished_alert) and not config["seed"] and not finished:
                finished = True
                emit({"ev": "done", "t": time.monotonic()})
            elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert, lt.listen_failed_alert)):
                emit({"ev": "error", "message": alert.message()})

    while True:  # ready: listening, and the torrent checked (the origin: seeding, the others: downloading)
        pump(50)
        status = handle.status()
        port = session.listen_port()
        wanted = lt.torrent_status.seeding if config["seed"] else lt.torrent_status.downloading
        if port and status.state == wanted:
            break
        if status.errc.value():
            emit({"ev": "error", "message": status.errc.message()})
            return
        if time.monotonic() - start > STARTUP_SECONDS:
            emit({"ev": "error", "message": f"not ready: state {status.state}, port {port}"})
            return
    emit({"ev": "ready", "port": port})

    logged = 0.0
    first_peer: float | None = None
    while True:
        pump(10)
        if time.monotonic() - logged >= 1.0:  # progress, once a second, to the site's log
            logged = time.monotonic()
            st = handle.status()
            print(
                f"{logged:.3f} peers={st.num_peers} pieces={st.num_pieces} down={st.total_payload_download} "
                f"up={st.total_payload_upload} down_rate={st.download_payload_rate} up_rate={st.upload_payload_rate}",
                file=sys.stderr,
                flush=True,
            )
        if expect is not None:
            peers = handle.status().num_peers
            if peers and first_peer is None:
                first_peer = time.monotonic()
            if peers >= expect:
                now = time.monotonic()
                emit({"ev": "connected", "t": now, "first": now if first_peer is None else first_peer})
                expect = None
        try:
            command = commands.get_nowait()
        except queue.Empty:
            continue
        if command is None or command["cmd"] == "quit":
            break
        if command["cmd"] == "connect":
            for peer_ip, peer_port in command["peers"]:
                handle.connect_peer((peer_ip, peer_port))
            expect = command["expect"]
        elif command["cmd"] == "report":
            status = handle.status()
            emit(
                {
                    "ev": "report",
                    "payload_up": status.total_payload_upload,
                    "up": status.total_upload,
                    "payload_down": status.total_payload_download,
                    "finished": bool(status.is_seeding and status.num_pieces == params.ti.num_pieces()),
                    "hash_failures": hash_failures,
                }
            )
    session.pause()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        _site_main()
    os._exit(0)  # skip libtorrent's session teardown; the parent is done with this site
