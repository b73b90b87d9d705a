"""Self-check of the libtorrent side of the fabric benchmark (issue 16): a 20 MB random file over a 3-site chain
a-b-c with 10 MB/s links, origin a, targets b and c (b relays to c).

    .venv/bin/python bench/fabric_libtorrent_check.py [--super-seed]

Prints the result and seconds / (size / 10 MB/s), the time the file needs on one 10 MB/s link, and checks that
both targets hold the exact bytes. A ratio well under 1 would mean the link limits are not applied (unlimited,
loopback moves 20 MB in about 0.1 s). It is above 1: TCP/IP headers count against the links, c gets each piece
only after b has it, and libtorrent's limiter runs each connection at about half rate for its first second (see
_libtorrent_swarm's doc). --super-seed runs it once more with the origin super-seeding. Exit 1 if a run failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _libtorrent_swarm import run_swarm

SIZE = 20_000_000
RATE = 10_000_000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--super-seed", action="store_true", help="also run with the origin super-seeding")
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="fabric-lt-") as tmp:
        model = Path(tmp) / "model.bin"
        data = random.Random(16).randbytes(SIZE)
        model.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        links = [("a", "b", RATE), ("b", "c", RATE)]
        for super_seed in (False, True) if args.super_seed else (False,):
            work = Path(tmp) / ("super" if super_seed else "plain")
            result = run_swarm(links, "a", ["b", "c"], model, work, timeout_seconds=120, super_seed=super_seed)
            print(json.dumps(result, indent=2))
            copies = [work / "sites" / site / model.name for site in ("b", "c")]
            identical = all(c.exists() and hashlib.sha256(c.read_bytes()).hexdigest() == digest for c in copies)
            ratio = result["seconds"] / (SIZE / RATE) if result["seconds"] is not None else None
            shown = f"{ratio:.3f}" if ratio is not None else "none"
            print(f"super_seed={super_seed}: complete={result['complete']} identical={identical} ratio={shown}")
            failed |= not (result["complete"] and identical and ratio is not None and ratio >= 0.95)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
