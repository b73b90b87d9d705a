"""The peering report as HTML (`peering candidates --html`): every candidate in a table, a chart per metro that has
any, and names from others' files (PeeringDB, routes) written as text, never as markup."""

from __future__ import annotations

import copy
from html.parser import HTMLParser
from typing import Any

from edgeplane.fleet import load_default_fleet
from edgeplane.reports import peering_html

HOSTILE = "<script>alert(1)</script>"


def sample_report(hostile: str = HOSTILE) -> dict[str, Any]:
    """A report as `edgeplane peering candidates --json` prints it: two metros with candidates (one named
    ``hostile``), and one with no traffic in the window (which carries only its code, name, bins and no rows)."""
    return copy.deepcopy(
        {
            "metros": [
                {
                    "code": "nyc", "name": "New York", "bins": 12, "transit_bytes": 9_000_000, "unrouted_bytes": 0,
                    "transits": [
                        {"pop": "nyc1", "asn": 64497, "name": "transit-a", "bytes": 6_000_000, "p95_mbps": 2.0,
                         "price_per_mbps": 0.5},
                        {"pop": "nyc1", "asn": 64498, "name": "transit-b", "bytes": 3_000_000, "p95_mbps": 1.0,
                         "price_per_mbps": None},
                    ],
                    "candidates": [
                        {"asn": 64510, "name": hostile, "p95_mbps": 1.2, "p95_in_mbps": 0.1, "p95_out_mbps": 1.2,
                         "bytes": 4_000_000, "packets": 4000, "via_transits": [64497], "share": 0.444444,
                         "saving_per_month": 0.6, "meet": [{"kind": "ix", "name": "NYIIX & <friends>"}],
                         "policy": "Open",
                         "balance": [{"pop": "nyc1", "transit_asn": 64497, "p95_mbps_before": 2.0,
                                      "p95_mbps_after": 0.8, "utilisation_before": 0.02,
                                      "utilisation_after": 0.008}]},
                        {"asn": 64511, "name": None, "p95_mbps": 0.4, "p95_in_mbps": 0.4, "p95_out_mbps": 0.1,
                         "bytes": 1_000_000, "packets": 900, "via_transits": [64498, 64497], "share": 0.111111,
                         "saving_per_month": None, "meet": [], "policy": None,
                         "balance": [{"pop": "nyc1", "transit_asn": 64498, "p95_mbps_before": 1.0,
                                      "p95_mbps_after": 0.6, "utilisation_before": None,
                                      "utilisation_after": None}]},
                    ],
                },
                {
                    "code": "lon", "name": "London", "bins": 12, "transit_bytes": 500_000, "unrouted_bytes": 1000,
                    "transits": [{"pop": "lon1", "asn": 64499, "name": "transit-c", "bytes": 500_000,
                                  "p95_mbps": 0.3, "price_per_mbps": 1.0}],
                    "candidates": [
                        {"asn": 64520, "name": "Cost $5 $\\frac{a", "p95_mbps": 0.3, "p95_in_mbps": 0.3,
                         "p95_out_mbps": 0.0, "bytes": 500_000, "packets": 400, "via_transits": [64499],
                         "share": 1.0, "saving_per_month": 0.3,
                         "meet": [{"kind": "facility", "name": "Telehouse North"}], "policy": "Selective",
                         "balance": []},
                    ],
                },
                {"code": "ams", "name": "Amsterdam", "bins": 0, "candidates": []},
            ],
            "routes": {"source": "rib.mrt <dump>", "prefixes": 10},
            "bin_seconds": 300,
            "seconds": 0.1,
        }
    )  # fmt: skip


class _Text(HTMLParser):
    """The page as a browser reads it: its text, and the elements it would make."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def read(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    parser.close()
    return parser


def test_the_page_lists_every_candidate_with_a_chart_per_metro_that_has_any() -> None:
    report = sample_report()
    page = peering_html(load_default_fleet(), report)
    seen = read(page)
    text = " ".join(seen.text)
    for metro in report["metros"]:
        assert f"{metro['name']} ({metro['code']})" in text
        for row in metro["candidates"]:
            assert f"AS{row['asn']}" in text
            assert f"{row['p95_mbps']:,.3f}" in text
    assert "44.4%" in text and "0.60" in text  # share and saving of the first
    assert "AS64498 transit-b, AS64497 transit-a" in text  # via, with the fleet's names for its transits
    assert "ix: NYIIX & <friends>" in text and "facility: Telehouse North" in text
    assert "rib.mrt <dump>" in text and "10 prefixes" in text
    assert "No traffic through its transits in this window: no candidates." in text  # Amsterdam: no chart
    with_candidates = sum(1 for m in report["metros"] if m["candidates"])
    assert page.count("<svg") == with_candidates == 2
    assert seen.tags.count("svg") == 2 and seen.tags.count("table") == 2


def test_names_from_others_files_are_text_never_markup() -> None:
    page = peering_html(load_default_fleet(), sample_report())
    assert HOSTILE not in page and "<friends>" not in page and "<dump>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    seen = read(page)
    assert "script" not in seen.tags
    assert HOSTILE in " ".join(seen.text)  # what the reader sees: the name as it is
    # A "$" in a name is a dollar, not TeX: the chart is drawn (the bad formula would have raised).
    assert "Cost $5 $\\frac{a" in " ".join(seen.text)


def test_a_name_that_tries_to_close_an_attribute_or_a_comment_stays_text() -> None:
    for hostile in ("\"' onmouseover=alert(1) x='", "--><img src=x onerror=alert(1)><!--", "]]><svg onload=alert(1)>"):
        page = peering_html(load_default_fleet(), sample_report(hostile))
        seen = read(page)
        assert "img" not in seen.tags and seen.tags.count("svg") == 2, hostile
        assert not [name for name in seen.attributes if name.startswith("on")], hostile
        assert hostile in " ".join(seen.text), hostile
