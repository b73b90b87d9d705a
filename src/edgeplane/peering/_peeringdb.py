"""Where we could meet a network: its exchanges and facilities in a metro, its name and policy, from PeeringDB."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import orjson
import pydantic
from pydantic import ConfigDict, Field

from edgeplane._errors import ConfigError
from edgeplane.fleet import Metro, field_name, great_circle_km, problem_message

MEET_RADIUS_KM = 50.0  # a facility this close to a metro's centre is in it, whatever city PeeringDB gives
OBJECTS = ("net", "ix", "netixlan", "fac", "netfac")  # required; "ixlan" is read where present

Id = Annotated[int, Field(ge=0)]
Asn = Annotated[int, Field(ge=1, le=2**32 - 1)]
Policy = Literal["Open", "Selective", "Restrictive", "No"]


class PeeringDbError(ConfigError):
    """A PeeringDB file is unreadable or not PeeringDB's shape; the message names the file and the object."""


@dataclass(frozen=True, slots=True)
class Meet:
    """A place to meet a network: an exchange ("ix") or a facility ("facility") where a session can be set up."""

    kind: str
    name: str


class _Object(pydantic.BaseModel):
    # PeeringDB's numbers are numbers: "3" is no id. Fields we do not read are ignored (PeeringDB has dozens).
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, allow_inf_nan=False)

    status: str = "ok"  # dumps keep "deleted" and "pending" objects; only "ok" ones exist


class _Net(_Object):
    id: Id
    asn: Asn
    name: str
    policy_general: Policy | None = None
    info_type: str | None = None


class _Ix(_Object):
    id: Id
    name: str
    city: str = ""
    country: str = ""


class _Ixlan(_Object):
    id: Id
    ix_id: Id


class _Netixlan(_Object):
    net_id: Id
    asn: Asn
    ix_id: Id | None = None
    ixlan_id: Id | None = None

    @pydantic.model_validator(mode="after")
    def _placed(self) -> _Netixlan:
        if self.ix_id is None and self.ixlan_id is None:
            raise ValueError("neither ix_id nor ixlan_id: which exchange is this?")
        return self


class _Fac(_Object):
    id: Id
    name: str
    city: str = ""
    country: str = ""
    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None


class _Netfac(_Object):
    net_id: Id
    fac_id: Id


ObjectT = TypeVar("ObjectT", bound=_Object)


class PeeringDb:
    """PeeringDB's networks, exchanges and facilities, indexed by ASN: who a network is, and where it can be met."""

    def __init__(
        self,
        nets: Sequence[_Net],
        ixes: Sequence[_Ix],
        netixlans: Sequence[_Netixlan],
        facs: Sequence[_Fac],
        netfacs: Sequence[_Netfac],
        ixlans: Sequence[_Ixlan] = (),
    ) -> None:
        self._nets = {n.asn: n for n in nets}
        asn_of_net = {n.id: n.asn for n in nets}
        self._ixes = {ix.id: ix for ix in ixes}
        self._facs = {fac.id: fac for fac in facs}
        # PeeringDB gives each exchange one LAN of the same id; an ixlan object says so where it differs.
        ix_of_lan = {lan.id: lan.ix_id for lan in ixlans}
        self._ixes_of: dict[int, set[int]] = {}
        for port in netixlans:
            if port.ix_id is not None:
                self._ixes_of.setdefault(port.asn, set()).add(port.ix_id)
            elif port.ixlan_id is not None:
                self._ixes_of.setdefault(port.asn, set()).add(ix_of_lan.get(port.ixlan_id, port.ixlan_id))
        self._facs_of: dict[int, set[int]] = {}
        for presence in netfacs:
            if presence.net_id in asn_of_net:
                self._facs_of.setdefault(asn_of_net[presence.net_id], set()).add(presence.fac_id)
        self._metros: dict[tuple[str, float, float], tuple[set[int], set[int]]] = {}

    def __repr__(self) -> str:
        return f"<PeeringDb [Networks: {len(self._nets)}, Exchanges: {len(self._ixes)}, Facilities: {len(self._facs)}]>"

    @classmethod
    def load(cls, path: Path) -> PeeringDb:
        """A PeeringDB dump or API answer saved to ``path``: ``{"net": {"data": [...]}, "ix": ..., ...}``, each
        object either ``{"data": [...]}`` or a plain list."""
        try:
            data = orjson.loads(path.read_bytes())
        except OSError as error:
            raise PeeringDbError(f"{path}: cannot read: {error.strerror or error}") from None
        except orjson.JSONDecodeError as error:
            raise PeeringDbError(f"{path}: not JSON ({error})") from None
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: object, *, source: str) -> PeeringDb:
        """What ``load`` reads, already decoded; PeeringDbError "source: net[3].asn: …" on a wrong shape."""
        if not isinstance(data, dict):
            raise PeeringDbError(f"{source}: expected an object with {', '.join(OBJECTS)}, not {_kind(data)}")
        for name in OBJECTS:
            if name not in data:
                raise PeeringDbError(f'{source}: {name}: missing; expected a list or {{"data": [...]}}')
        nets = _parse(data, "net", _Net, source)
        seen: dict[int, int] = {}
        for index, net in enumerate(nets):
            if net.status == "ok" and seen.setdefault(net.asn, index) != index:
                raise PeeringDbError(f"{source}: net[{index}].asn: AS{net.asn} again (first at net[{seen[net.asn]}])")
        return cls(
            _live(nets),
            _live(_parse(data, "ix", _Ix, source)),
            _live(_parse(data, "netixlan", _Netixlan, source)),
            _live(_parse(data, "fac", _Fac, source)),
            _live(_parse(data, "netfac", _Netfac, source)),
            _live(_parse(data, "ixlan", _Ixlan, source)) if "ixlan" in data else (),
        )

    def name(self, asn: int) -> str | None:
        net = self._nets.get(asn)
        return None if net is None else net.name

    def policy(self, asn: int) -> str | None:
        """The network's general peering policy: "Open", "Selective", "Restrictive" or "No"."""
        net = self._nets.get(asn)
        return None if net is None else net.policy_general

    def info_type(self, asn: int) -> str | None:
        """What PeeringDB says the network is ("Content", "NSP", "Cable/DSL/ISP", …)."""
        net = self._nets.get(asn)
        return None if net is None else net.info_type

    def meet(self, asn: int, our_asn: int, metro: Metro) -> list[Meet]:
        """The exchanges and facilities in ``metro`` where both ``asn`` and ``our_asn`` are present (exchanges
        first, then by name). If ``our_asn`` is not in the file at all, the candidate's own exchanges and
        facilities in the metro: places we could join to meet it. An exchange is in the metro when its city is the
        metro's name (case and spaces aside); a facility too, or when it lies within MEET_RADIUS_KM of the
        metro's centre."""
        ixes, facs = self._in_metro(metro)
        at_ix = self._ixes_of.get(asn, set()) & ixes
        at_fac = self._facs_of.get(asn, set()) & facs
        if our_asn in self._nets or our_asn in self._ixes_of or our_asn in self._facs_of:
            at_ix &= self._ixes_of.get(our_asn, set())
            at_fac &= self._facs_of.get(our_asn, set())
        found = {Meet("ix", self._ixes[i].name) for i in at_ix} | {Meet("facility", self._facs[f].name) for f in at_fac}
        return sorted(found, key=lambda m: (m.kind != "ix", m.name.casefold(), m.name))

    def _in_metro(self, metro: Metro) -> tuple[set[int], set[int]]:
        key = (metro.name, metro.latitude, metro.longitude)
        if key not in self._metros:
            city = _city(metro.name)
            ixes = {i for i, ix in self._ixes.items() if _city(ix.city) == city}
            facs = {
                f
                for f, fac in self._facs.items()
                if _city(fac.city) == city
                or (
                    fac.latitude is not None
                    and fac.longitude is not None
                    and great_circle_km(fac.latitude, fac.longitude, metro.latitude, metro.longitude) <= MEET_RADIUS_KM
                )
            }
            self._metros[key] = (ixes, facs)
        return self._metros[key]


def _parse(data: Mapping[str, Any], name: str, model: type[ObjectT], source: str) -> list[ObjectT]:
    value = data[name]
    if isinstance(value, dict) and "data" in value:
        value = value["data"]  # the API's and the dumps' envelope
    if not isinstance(value, list):
        raise PeeringDbError(f'{source}: {name}: expected a list or {{"data": [...]}}, not {_kind(value)}')
    try:
        return pydantic.TypeAdapter(list[model]).validate_python(value)  # type: ignore[valid-type]
    except pydantic.ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PeeringDbError(f"{source}: {field_name((name, *first['loc']))}: {problem_message(first)}{more}") from None


def _live(objects: list[ObjectT]) -> list[ObjectT]:
    return [o for o in objects if o.status == "ok"]


def _city(text: str) -> str:
    return " ".join(text.split()).casefold()


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
