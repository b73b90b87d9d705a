"""Broadcast plans checked as properties over random fleets (trees of real links, around excluded sites, the origin
sending one copy) and on hand-built chains, forks and the default fleet."""

from __future__ import annotations

import math

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane.fleet import load_default_fleet
from edgeplane.planning import BroadcastPlan, FabricLink, fabric_links, link_between, plan_broadcast, widest_rate

MB = 1_000_000
SIZE = 64 * MB
CHUNK = MB


@st.composite
def fleets(draw: st.DrawFn) -> list[FabricLink]:
    """A connected graph of 2-12 sites: a random spanning tree plus random extra links, random capacities."""
    n = draw(st.integers(2, 12))
    names = [f"s{i:02d}" for i in range(n)]
    edges = {(names[draw(st.integers(0, i - 1))], names[i]) for i in range(1, n)}
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    edges |= set(draw(st.lists(st.sampled_from(pairs), max_size=2 * n)))
    rates = st.sampled_from([1, 2, 5, 10, 25, 40, 100])
    rtts = st.sampled_from([0.0, 0.001, 0.01])
    return [FabricLink(a, b, draw(rates) * MB, draw(rtts)) for a, b in sorted(edges)]


def graph(links: list[FabricLink], without: set[str] = frozenset()) -> nx.Graph:  # type: ignore[assignment]
    g = nx.Graph()
    for link in links:
        g.add_node(link.a)
        g.add_node(link.b)
        g.add_edge(link.a, link.b)
    g.remove_nodes_from(without)
    return g


def walk(plan: BroadcastPlan, pop: str) -> list[str]:
    """plan.path(pop), bounded: a cycle in ``parents`` fails here instead of looping for ever."""
    path = [pop]
    while path[-1] in plan.parents:
        path.append(plan.parents[path[-1]])
        assert len(path) <= len(plan.parents) + 1, f"cycle in parents: {path}"
    return path[::-1]


def bottleneck(plan: BroadcastPlan) -> float:
    return min(plan.rates.values(), default=math.inf)


def check_tree(links: list[FabricLink], plan: BroadcastPlan, excluded: set[str]) -> None:
    for child, parent in plan.parents.items():
        link = link_between(links, parent, child)
        assert link is not None, f"{parent} -> {child} is no link"
        assert plan.rates[(parent, child)] == link.bytes_per_second
        assert child not in excluded and parent not in excluded
        assert child not in plan.sources
    assert set(plan.sources).isdisjoint(excluded)
    for pop in plan.targets - plan.unreachable:
        path = walk(plan, pop)
        assert path == plan.path(pop)
        assert path[0] in plan.sources and path[-1] == pop
    for pop in plan.unreachable:
        assert pop not in plan.parents
    # Every relay has a target behind it.
    behind = {hop for pop in plan.targets - plan.unreachable for hop in walk(plan, pop)}
    assert set(plan.parents) <= behind


@settings(max_examples=150, deadline=None)
@given(links=fleets(), data=st.data())
def test_plans_are_trees_of_real_links_around_excluded_sites(links: list[FabricLink], data: st.DataObject) -> None:
    sites = sorted(graph(links).nodes)
    origin = data.draw(st.sampled_from(sites))
    targets = set(data.draw(st.lists(st.sampled_from(sites), min_size=1)))
    excluded = set(data.draw(st.lists(st.sampled_from(sites), max_size=3))) - {origin}
    holders = set(data.draw(st.lists(st.sampled_from(sites), max_size=2)))
    plan = plan_broadcast(links, origin, targets, size_bytes=SIZE, chunk_bytes=CHUNK, holders=holders, exclude=excluded)
    sources = {origin} | (holders - excluded)
    assert set(plan.sources) == sources and plan.sources[0] == origin
    assert plan.targets == frozenset(targets - sources - excluded)
    check_tree(links, plan, excluded)

    # Unreachable: exactly the targets no source reaches once the excluded sites are gone.
    g = graph(links, excluded)
    reachable = set().union(*(nx.node_connected_component(g, s) for s in sources))
    assert plan.unreachable == frozenset(plan.targets - reachable)

    fastest = max(link.bytes_per_second for link in links)
    if plan.parents:
        assert plan.lower_bound_seconds >= SIZE / fastest
    else:
        assert plan.lower_bound_seconds == 0.0
    json = plan.to_json()
    assert json["parents"] == dict(sorted(plan.parents.items())) and json["unreachable"] == sorted(plan.unreachable)

    again = plan_broadcast(
        links, origin, targets, size_bytes=SIZE, chunk_bytes=CHUNK, holders=holders, exclude=excluded
    )
    assert again == plan and again.to_json() == plan.to_json()


def draw_plan(links: list[FabricLink], data: st.DataObject) -> tuple[str, set[str], BroadcastPlan]:
    sites = sorted(graph(links).nodes)
    origin = data.draw(st.sampled_from(sites))
    targets = set(data.draw(st.lists(st.sampled_from(sites), min_size=1))) - {origin}
    excluded = set(data.draw(st.lists(st.sampled_from(sites), max_size=2))) - {origin}
    plan = plan_broadcast(links, origin, targets, size_bytes=SIZE, chunk_bytes=CHUNK, exclude=excluded)
    check_tree(links, plan, excluded)
    return origin, excluded, plan


@settings(max_examples=300, deadline=None, derandomize=True)
@given(links=fleets(), data=st.data())
def test_the_origin_sends_one_copy_when_its_other_links_reach_every_target(
    links: list[FabricLink], data: st.DataObject
) -> None:
    origin, excluded, plan = draw_plan(links, data)
    reached = plan.targets - plan.unreachable
    rest = graph(links, excluded | {origin})
    neighbours = set(graph(links, excluded).neighbors(origin))
    # One component of the fleet without the origin holds every target and one of the origin's neighbours.
    together = any(
        reached <= component and component & neighbours for component in map(set, nx.connected_components(rest))
    )
    if reached and together:
        assert plan.origin_copies == 1, plan.to_json()


@settings(max_examples=150, deadline=None)
@given(links=fleets(), data=st.data())
def test_the_tree_is_no_wider_than_the_widest_paths(links: list[FabricLink], data: st.DataObject) -> None:
    origin, excluded, plan = draw_plan(links, data)
    reached = plan.targets - plan.unreachable
    if not reached:
        return
    links_left = [link for link in links if link.a not in excluded and link.b not in excluded]
    widest = min(widest_rate(links_left, origin, pop) for pop in reached)
    assert bottleneck(plan) <= widest
    if len(graph(links, excluded).adj[origin]) == 1:  # one way out of the origin: as wide as any tree can be
        assert bottleneck(plan) == widest


def test_a_chain_of_equal_links_costs_the_size_and_one_chunk_per_extra_hop() -> None:
    rate = 10 * MB
    links = [FabricLink("a", "b", rate, 0.002), FabricLink("b", "c", rate, 0.003)]
    plan = plan_broadcast(links, "a", ["b", "c"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert plan.parents == {"b": "a", "c": "b"} and plan.relays == frozenset() and plan.origin_copies == 1
    assert plan.site_bound_seconds("b") == pytest.approx(SIZE / rate + 0.002)
    assert plan.lower_bound_seconds == pytest.approx(SIZE / rate + CHUNK / rate + 0.005)
    # c alone: b relays it.
    alone = plan_broadcast(links, "a", ["c"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert alone.relays == frozenset({"b"}) and alone.path("c") == ["a", "b", "c"]
    # An object smaller than a chunk fills the pipeline with itself.
    small = plan_broadcast(links, "a", ["c"], size_bytes=1000, chunk_bytes=CHUNK)
    assert small.lower_bound_seconds == pytest.approx(1000 / rate * 2 + 0.005)


def test_a_chain_with_one_slow_link_is_bounded_by_it() -> None:
    links = [FabricLink("a", "b", 100 * MB), FabricLink("b", "c", 10 * MB)]
    plan = plan_broadcast(links, "a", ["c"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert plan.lower_bound_seconds == pytest.approx(SIZE / (10 * MB) + CHUNK / (100 * MB))
    assert plan.to_json()["bottleneck_bytes_per_second"] == 10 * MB
    assert widest_rate(links, "a", "c") == 10 * MB and widest_rate(links, "a", "a") == 0.0


def test_a_fork_takes_the_fat_path() -> None:
    links = [
        FabricLink("o", "thin", 1 * MB),
        FabricLink("thin", "t", 100 * MB),
        FabricLink("o", "fat1", 50 * MB),
        FabricLink("fat1", "fat2", 50 * MB),
        FabricLink("fat2", "t", 50 * MB),
    ]
    plan = plan_broadcast(links, "o", ["t"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert plan.path("t") == ["o", "fat1", "fat2", "t"] and plan.relays == {"fat1", "fat2"}
    # With the fat path excluded, the thin one it is; excluded on both, t cannot be reached.
    around = plan_broadcast(links, "o", ["t"], size_bytes=SIZE, chunk_bytes=CHUNK, exclude=["fat2"])
    assert around.path("t") == ["o", "thin", "t"]
    cut = plan_broadcast(links, "o", ["t"], size_bytes=SIZE, chunk_bytes=CHUNK, exclude=["fat2", "thin"])
    assert cut.unreachable == {"t"} and cut.parents == {} and cut.lower_bound_seconds == 0.0


def test_two_parallel_links_use_the_wider() -> None:
    links = [FabricLink("a", "b", 1 * MB), FabricLink("b", "a", 7 * MB)]
    assert link_between(links, "a", "b") == links[1]
    assert link_between(links, "a", "z") is None
    plan = plan_broadcast(links, "a", ["b"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert plan.rates == {("a", "b"): 7 * MB}


def test_a_star_sends_a_copy_per_arm_only_because_it_must() -> None:
    links = [FabricLink("o", arm, 10 * MB) for arm in ("x", "y", "z")]
    plan = plan_broadcast(links, "o", ["x", "y", "z"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert plan.origin_copies == 3 and plan.children("o") == ["x", "y", "z"]
    # Tie the arms together and the origin sends one copy.
    ring = [*links, FabricLink("x", "y", 10 * MB), FabricLink("y", "z", 10 * MB)]
    plan = plan_broadcast(ring, "o", ["x", "y", "z"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert plan.origin_copies == 1


def test_the_origin_sends_one_copy_even_beside_a_dead_end_neighbour() -> None:
    """A neighbour of the origin with nothing behind it is no reason to send two copies."""
    links = [
        FabricLink("o", "a", 50 * MB),
        FabricLink("o", "b", 50 * MB),
        FabricLink("a", "b", 5 * MB),
        FabricLink("o", "dead", 100 * MB),
    ]
    plan = plan_broadcast(links, "o", ["a", "b"], size_bytes=SIZE, chunk_bytes=CHUNK)
    assert plan.origin_copies == 1, plan.to_json()


def test_holders_serve_as_further_roots() -> None:
    links = [FabricLink("o", "a", 10 * MB), FabricLink("a", "b", 10 * MB), FabricLink("b", "c", 10 * MB)]
    plan = plan_broadcast(links, "o", ["a", "b", "c"], size_bytes=SIZE, chunk_bytes=CHUNK, holders=["c"])
    assert plan.sources == ("o", "c") and plan.targets == {"a", "b"}
    assert all(walk(plan, pop)[0] in plan.sources for pop in plan.targets)
    # Far from the origin, only the holder reaches the target.
    far = [*links, FabricLink("c", "d", 10 * MB)]
    plan = plan_broadcast(far, "o", ["d"], size_bytes=SIZE, chunk_bytes=CHUNK, holders=["c"])
    assert plan.path("d") == ["c", "d"] and plan.origin_copies == 0
    # An excluded holder is no source, and an excluded target is no target.
    plan = plan_broadcast(links, "o", ["a", "b", "c"], size_bytes=SIZE, chunk_bytes=CHUNK, holders=["c"], exclude=["c"])
    assert plan.sources == ("o",) and plan.targets == {"a", "b"} and plan.path("b") == ["o", "a", "b"]


def test_a_holder_next_to_a_target_beats_two_hops_from_the_origin() -> None:
    links = [FabricLink("o", "a", 10 * MB), FabricLink("a", "b", 10 * MB), FabricLink("b", "c", 10 * MB)]
    plan = plan_broadcast(links, "o", ["a", "b"], size_bytes=SIZE, chunk_bytes=CHUNK, holders=["c"])
    assert plan.path("b") == ["c", "b"]
    assert plan.lower_bound_seconds == pytest.approx(SIZE / (10 * MB))


def test_every_pop_of_the_default_fleet_reaches_all_others_with_one_copy() -> None:
    fleet = load_default_fleet()
    links = fabric_links(fleet, 0.001)
    pops = [pop.code for pop in fleet.pops]
    assert len(pops) == 10
    for origin in pops:
        plan = plan_broadcast(links, origin, pops, size_bytes=SIZE, chunk_bytes=CHUNK)
        check_tree(links, plan, set())
        assert plan.targets == frozenset(pops) - {origin}
        assert plan.unreachable == frozenset(), origin
        assert plan.origin_copies == 1, (origin, plan.to_json())
        assert plan.relays == frozenset(), origin
        assert plan.lower_bound_seconds > 0
