"""The time of one routing decision (client address to ordered candidates) on the default fleet.

    python bench/routing_decision.py [--decisions 200000]

Prints p50/p99 in microseconds of the pure path the gateway takes for each request (longest-prefix
match, scope ladder, site states, ordering), against the goal of 50 microseconds at p99.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import time

from edgeplane.fleet import load_default_fleet
from edgeplane.routing import Router, SiteState, SiteView


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=200_000)
    args = parser.parse_args()
    fleet = load_default_fleet()
    router = Router(fleet)
    rng = random.Random(7)
    sites = {
        p.code: SiteView(
            p.code, SiteState.SERVING, frozenset(fleet.models_at(p.code)), "http://127.0.0.1:1", rng.random()
        )
        for p in fleet.pops
    }
    sites["nyc1"] = SiteView("nyc1", SiteState.DRAINED, sites["nyc1"].models, None, 0.0, "drill")
    clients = []
    for metro in fleet.metros:
        for prefix in metro.client_prefixes:
            network = ipaddress.ip_network(prefix)
            clients += [str(network.network_address + rng.randrange(1, 4000)) for _ in range(50)]
    clients.append("203.0.113.5")  # matches no prefix: the home metro
    models = [m.name for m in fleet.models]
    samples = []
    perf = time.perf_counter_ns
    for i in range(args.decisions):
        client, model = clients[i % len(clients)], models[i % len(models)]
        started = perf()
        router.decide(client, model, sites, explain=False)
        samples.append(perf() - started)
    samples.sort()
    p50, p99, p999 = (samples[int(len(samples) * q)] / 1000 for q in (0.5, 0.99, 0.999))
    print(
        f"routing decision over {args.decisions} decisions, {len(fleet.pops)} PoPs: "
        f"p50 {p50:.1f} us, p99 {p99:.1f} us, p99.9 {p999:.1f} us (goal: p99 <= 50 us; p99/goal = {p99 / 50:.2f})"
    )


if __name__ == "__main__":
    main()
