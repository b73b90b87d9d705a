"""The peering report, as `peering candidates --publish` sends it: the latest one, kept in the store with the time
it was received, for the dashboard and for anyone who asks."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from edgeplane.control._store import AuditRecord, StoredReport
from edgeplane.control.api._resource import Resource
from edgeplane.web import Body, Code, Count, Seconds, Text, actor, admin, json_response, parse, read_body

REPORT_NAME = "peering-candidates"  # its name in the store's reports
# A report is a few hundred bytes per candidate: 8 MiB holds --top 100 in a hundred metros, well past the
# API's 1 MiB for every other body.
MAX_REPORT_BYTES = 8 * 1024 * 1024

Asn = Annotated[int, Field(ge=0, le=2**32 - 1)]
Mbps = Annotated[float, Field(ge=0, le=1e12)]
Amount = Annotated[float, Field(ge=-1e15, le=1e15)]  # money per month, in the transit price's currency
Fraction = Annotated[float, Field(ge=0, le=1e6)]  # a share or a utilisation; above 1 is possible, not negative
Bytes = Annotated[int, Field(ge=0, le=2**63 - 1)]


class Meet(Body):
    kind: Literal["ix", "facility"]
    name: Text


class Balance(Body):
    """One transit of the metro before and after the candidate's traffic left it."""

    pop: Code
    transit_asn: Asn
    p95_mbps_before: Mbps
    p95_mbps_after: Mbps
    utilisation_before: Fraction | None  # null where the transit has no capacity to divide by
    utilisation_after: Fraction | None


class Candidate(Body):
    asn: Asn
    name: Text | None
    p95_mbps: Mbps
    p95_in_mbps: Mbps
    p95_out_mbps: Mbps
    bytes: Bytes
    packets: Bytes
    via_transits: Annotated[list[Asn], Field(max_length=10_000)]
    share: Fraction
    saving_per_month: Amount | None  # null where a transit it crosses has no price
    meet: Annotated[list[Meet], Field(max_length=10_000)]
    policy: Text | None
    balance: Annotated[list[Balance], Field(max_length=10_000)]


class TransitRow(Body):
    pop: Code
    asn: Asn
    name: Text | None
    bytes: Bytes
    p95_mbps: Mbps
    price_per_mbps: Annotated[float, Field(ge=0, le=1e12)] | None


class MetroRow(Body):
    """A metro's candidates; a metro with no traffic in the window has its code, name and no rows."""

    code: Code
    name: Text
    bins: Count
    transit_bytes: Bytes = 0
    unrouted_bytes: Bytes = 0
    transits: Annotated[list[TransitRow], Field(max_length=10_000)] = Field(default_factory=list)
    candidates: Annotated[list[Candidate], Field(max_length=100_000)]


class Routes(Body):
    source: Text
    prefixes: Count


class PeeringReport(Body):
    expected = "the JSON of `edgeplane peering candidates --json`"

    metros: Annotated[list[MetroRow], Field(max_length=10_000)]
    routes: Routes
    bin_seconds: Seconds
    seconds: Annotated[float, Field(ge=0, le=1e9)] | None = None  # how long the analysis took


class PeeringApi(Resource):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/peering/candidates", self.latest),
            web.put("/api/peering/candidates", self.publish),
        ]

    async def latest(self, request: web.Request) -> web.Response:
        kept = self.state.store.report(REPORT_NAME)
        if kept is None:
            return json_response({"report": None, "received_at": None})
        return json_response({"report": kept.record, "received_at": kept.received_at})

    @admin
    async def publish(self, request: web.Request) -> web.Response:
        """Keep a report in place of the last one: parsed whole first (a wrong field is a 400 naming it, and
        nothing is kept), then stored as parsed, without the keys it does not know."""
        report = parse(PeeringReport, await read_body(request.clone(client_max_size=MAX_REPORT_BYTES)))
        now = self.state.wall_clock()
        self.state.store.put_report(REPORT_NAME, StoredReport(now, report.model_dump(mode="json")))
        metros, candidates = len(report.metros), sum(len(m.candidates) for m in report.metros)
        detail = {"metros": metros, "candidates": candidates, "routes": report.routes.source}
        self.state.store.audit(AuditRecord(now, actor(request), "publish-peering", "peering", "ok", detail))
        return json_response({"received_at": now, "metros": metros, "candidates": candidates})
