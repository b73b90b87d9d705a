"""Our own address space: which flows come in and which go out. The vectorised membership test against a plain
one, over IPv4 prefixes that overlap, IPv6 ones, and IPv6 ones reaching into the IPv4-mapped block."""

from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeplane.peering._store import OurPrefixes

IPV4_MAPPED = 0xFFFF << 32


def _v4_prefix(value: int, length: int) -> str:
    return str(ipaddress.IPv4Network((value >> (32 - length) << (32 - length), length)))


def _v6_prefix(value: int, length: int) -> str:
    return str(ipaddress.IPv6Network((value >> (128 - length) << (128 - length), length)))


prefixes = st.one_of(
    st.builds(_v4_prefix, st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(_v6_prefix, st.integers(0, 2**128 - 1), st.integers(0, 128)),
    st.builds(_v6_prefix, st.integers(IPV4_MAPPED - 2**40, IPV4_MAPPED + 2**40), st.integers(80, 128)),
)
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: IPV4_MAPPED | v),
    st.integers(0, 2**128 - 1),
    st.integers(IPV4_MAPPED - 2**34, IPV4_MAPPED + 2**34),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(prefixes, max_size=12), st.lists(addresses, min_size=1, max_size=60))
def test_membership_is_what_a_plain_comparison_says(given_prefixes: list[str], given_addresses: list[int]) -> None:
    ours = OurPrefixes.of(given_prefixes)
    hi = np.array([a >> 64 for a in given_addresses], dtype=np.uint64)
    lo = np.array([a & (2**64 - 1) for a in given_addresses], dtype=np.uint64)
    want = [any(low <= a <= high for low, high in ours.ranges) for a in given_addresses]
    assert ours.contains(hi, lo).tolist() == want


def test_addresses_next_to_a_prefix_are_outside_it() -> None:
    ours = OurPrefixes.of(["198.51.100.0/24", "198.51.100.128/25", "203.0.113.0/25", "2001:db8::/32"])
    inside = ["198.51.100.0", "198.51.100.255", "203.0.113.127", "2001:db8::1", "2001:db8:ffff:ffff::"]
    outside = ["198.51.99.255", "198.51.101.0", "203.0.113.128", "2001:db9::", "::c633:6400"]  # last: no ::ffff:
    values = [int(ipaddress.IPv6Address(f"::ffff:{a}" if "." in a else a)) for a in inside + outside]
    hi = np.array([v >> 64 for v in values], dtype=np.uint64)
    lo = np.array([v & (2**64 - 1) for v in values], dtype=np.uint64)
    assert ours.contains(hi, lo).tolist() == [True] * len(inside) + [False] * len(outside)
