"""Every body the control plane accepts, as a typed model: parsed once where it enters, never a loose dict."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, JsonValue

from edgeplane.web import Body, Code, Count, Name, Positive, Seconds, Text, UnixSeconds

Finite = Annotated[float, Field(ge=-1e12, le=1e12)]
Share = Annotated[float, Field(ge=0, le=1e6)]
Url = Annotated[str, Field(min_length=1, max_length=300)]


# -- what a site agent reports ---------------------------------------------------------------------
class ModelLoad(Body):
    """How busy one model's backend at a site is."""

    running: Count = 0
    waiting: Count = 0
    kv_cache_usage: Share = 0.0
    capacity: Count = 1
    utilisation: Share = 0.0


class GpuXid(Body):
    gpu: Code  # its index on its server, as DCGM labels it: "0"
    hostname: Text = ""
    uuid: Text = ""
    xid: Count


class UnitReading(Body):
    """A unit's last facility and GPU reading, as the agent shows it."""

    unit: Code
    inlet_c: Finite
    coolant_supply_c: Finite
    leak: bool
    pdu_power_w: Finite
    fire: Annotated[str, Field(max_length=32)]
    at: UnixSeconds
    gpus: Count = 0
    gpu_temp_max_c: Finite = 0.0
    gpu_power_w: Finite = 0.0
    gpu_xid: Annotated[list[GpuXid], Field(max_length=1024)] = []


class UnitView(Body):
    """One unit's telemetry as its site agent watches it."""

    redfish: Url | None = None
    dcgm: Annotated[list[Url], Field(max_length=64)] = []
    reading: UnitReading | None = None
    stale: Text | None = None
    alarms: Annotated[list[Code], Field(max_length=64)] = []


class AlarmEvent(Body):
    unit: Code
    rule: Code
    kind: Literal["raised", "cleared"]
    at: UnixSeconds
    value: Finite
    threshold: Finite
    what: Text = ""


class AgentAudit(Body):
    """An admin action a site agent took on its own (a fault set or cleared there), for the audit log."""

    at: UnixSeconds
    who: Text
    action: Code
    outcome: Text
    detail: dict[Code, JsonValue] = {}


class FaultView(Body):
    fault: Code
    tokens: Count = 3
    factor: Annotated[float, Field(gt=0, le=1e6)] = 5.0
    seconds: Seconds | None = None
    spare_probes: bool = False


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Bytes = Annotated[int, Field(ge=0, le=2**62)]


class FabricHeld(Body):
    """One object in a site's fabric store, as the agent reports it."""

    name: Name
    sha256: Sha256
    size_bytes: Bytes
    chunk_count: Count = 0
    chunks_held: Count = 0
    bytes_held: Bytes = 0
    complete: bool = False
    verified_sha256: Sha256 | None = None  # computed from the bytes on disk
    egress_bytes: Bytes = 0  # what this site sent of it to others
    state: Literal["waiting", "fetching", "complete", "failed"] = "waiting"
    source: Code | None = None
    completed_at: UnixSeconds | None = None  # its last chunk held, each verified as it arrived
    verified_at: UnixSeconds | None = None  # then read back whole from disk and hashed right
    error: Text | None = None


class FabricStuck(Body):
    """A site that cannot fetch an object from the source it was given."""

    expected = "{pop, source, error}"

    pop: Code
    source: Code
    error: Text = ""
    sha256: Sha256 | None = None  # the object's, when the site holds it under another name
    url: Url | None = None  # the source's address it failed to reach


class LoadingWeights(Body):
    """The weights a site waits for before it loads a newly placed model."""

    model: Code
    sha256: Sha256
    bytes_held: Bytes = 0
    size_bytes: Bytes | None = None


class AgentReport(Body):
    """What a site agent pushes every half second."""

    expected = "what `edgeplane site run` reports"

    url: Url | None = None
    pid: Count | None = None
    backend: Code  # required, with the models: an empty report would wipe what the agent said last
    models: Annotated[dict[Code, ModelLoad], Field(max_length=256)]
    load: Share = 0.0
    fault: FaultView | None = None
    loading: Code | None = None
    loading_weights: LoadingWeights | None = None
    measured_at: UnixSeconds = 0.0
    units: Annotated[dict[Code, UnitView], Field(max_length=256)] = {}
    alarm_events: Annotated[list[AlarmEvent], Field(max_length=10_000)] = []
    audit_events: Annotated[list[AgentAudit], Field(max_length=1_000)] = []
    fabric: Annotated[list[FabricHeld], Field(max_length=10_000)] = []
    link_scale: Annotated[float, Field(gt=0, le=1e6)] = 1.0  # the fabric's links run at capacity times this


# -- what a gateway reports ------------------------------------------------------------------------
class TtftSample(Body):
    client_metro: Code
    model: Code
    ttft_ms: Annotated[float, Field(ge=0, le=1e9)] | None = None  # streams only
    metro: Code
    scope: Code


class DemandRow(Body):
    client_metro: Code
    model: Code
    requests: Count
    prompt_tokens: Annotated[int, Field(ge=0, le=2**53)] = 0
    output_tokens: Annotated[int, Field(ge=0, le=2**53)] = 0


class GatewayReport(Body):
    expected = '{"samples": [...], "demand": [...]}'

    samples: Annotated[list[TtftSample], Field(max_length=20_000)]
    demand: Annotated[list[DemandRow], Field(max_length=20_000)] = []


# -- admin actions ---------------------------------------------------------------------------------
class DrainBody(Body):
    expected = '{"kind": "metro"|"pop"|"unit", "code": ...}'

    kind: Literal["metro", "pop", "unit"]
    code: Code
    reason: Text = ""
    force: bool = False


class KeyBody(Body):
    expected = '{"tenant": NAME, "continent": CODE, "region": CODE, "rpm": N, "tpm": N, "models": [NAME, ...]}'

    tenant: Name
    continent: Code | None = None
    region: Code | None = None
    rpm: Positive | None = None
    tpm: Positive | None = None
    models: Annotated[list[Code], Field(max_length=1000)] | None = None


class LeaseBody(Body):
    expected = '{"key_id": ...}'

    key_id: Code


class DrillBody(Body):
    expected = '{"metro": CODE, "duration_seconds": N, "slo_ttft_ms": N}'

    metro: Code
    duration_seconds: Seconds = 60.0
    slo_ttft_ms: Annotated[float, Field(gt=0, le=1e9)] | None = None
    force: bool = False


class FaultBody(Body):
    """A fault to inject at a PoP's agent; the agent checks the fault's own fields."""

    expected = '{"pop": CODE, "fault": NAME, "tokens": N, "factor": X, "seconds": S, "spare_probes": false}'

    pop: Code
    fault: Code
    tokens: Count | None = None
    factor: Annotated[float, Field(gt=0, le=1e6)] | None = None
    seconds: Seconds | None = None
    spare_probes: bool | None = None

    def for_agent(self) -> dict[str, Any]:
        return self.model_dump(exclude={"pop"}, exclude_none=True)


class PlacementRow(Body):
    model: Code
    pop: Code
    replicas: Annotated[int, Field(ge=1, le=100_000)]


class PlacementBody(Body):
    expected = '{"placement": [{"model": ..., "pop": ..., "replicas": N}, ...], "force": false}'

    placement: Annotated[list[PlacementRow], Field(max_length=100_000)]
    force: bool = False


class BgpActionBody(Body):
    expected = '{"pop": CODE, "transit_asn": N, "action": "prepend-1".."prepend-3"|"no-export"|"none"}'

    pop: Code
    transit_asn: Annotated[int, Field(ge=1, le=2**32 - 1)]
    action: Code


class UnitStateBody(Body):
    expected = '{"state": STATE, "note": TEXT, "acceptance": {"passed": true, ...}}'

    state: Code
    note: Text = ""
    acceptance: dict[Code, JsonValue] | None = None


class UnitOrderBody(Body):
    expected = '{"pop": CODE, "note": TEXT, "due": UNIX_SECONDS}'

    pop: Code
    note: Text = ""
    due: UnixSeconds | None = None


class Busiest(Body):
    pop: Code
    utilisation: Finite


class ScenarioRow(Body):
    """One scenario of `plan scenarios --json`: the row every scenario shares (scenario, failed, unserved_rps,
    busiest) is typed; the rest of the row is kept as it came."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, frozen=True)

    scenario: Annotated[str, Field(min_length=1, max_length=300)]
    unserved_rps: Annotated[float, Field(ge=0, le=1e12)] = 0.0
    busiest: Busiest | None  # null when no site carries load
    breaches: Annotated[list[dict[str, JsonValue]], Field(max_length=1_000_000)] = []


class ScenariosBody(Body):
    expected = '{"scenarios": [...]} as `plan scenarios --json` prints'

    scenarios: Annotated[list[ScenarioRow], Field(max_length=100_000)]
    title: Text = ""
