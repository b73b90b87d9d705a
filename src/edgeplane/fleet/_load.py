"""Loads a fleet file and refuses bad input, naming file, line, field and what was expected."""

from __future__ import annotations

import importlib.resources
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import radix
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError

from edgeplane._errors import ConfigError
from edgeplane.fleet._model import Fleet

Loc = tuple[str | int, ...]

DEFAULT_FLEET_NAME = "default.yaml"


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class FleetError(ConfigError):
    """A fleet file is invalid; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def default_fleet_text() -> str:
    return importlib.resources.files("edgeplane.fleet").joinpath(DEFAULT_FLEET_NAME).read_text("utf-8")


def load_default_fleet() -> Fleet:
    return parse_fleet(default_fleet_text(), "<default fleet>")


def load_fleet(path: str | Path | None = None) -> Fleet:
    """Load and validate a fleet file; ``None`` means the embedded default fleet."""
    if path is None:
        return load_default_fleet()
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise FleetError([Problem(str(path), 0, "(file)", f"cannot read: {error.strerror}")]) from None
    except UnicodeDecodeError as error:
        raise FleetError([Problem(str(path), 0, "(file)", f"not UTF-8 (byte {error.start}: {error.reason})")]) from None
    return parse_fleet(text, str(path))


def parse_fleet(text: str, filename: str) -> Fleet:
    try:
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else 0
        raise FleetError([Problem(filename, line, "(syntax)", f"invalid YAML: {error.problem}")]) from None
    except ReaderError as error:  # a character YAML does not allow (NUL, most control characters)
        line = text[: error.position].count("\n") + 1
        reason = f"invalid YAML: character #x{error.character:04x} is not allowed ({error.reason})"
        raise FleetError([Problem(filename, line, "(syntax)", reason)]) from None
    if not isinstance(document, dict):
        raise FleetError([Problem(filename, 1, "(document)", "expected a mapping at the top level")])
    try:
        fleet = Fleet.model_validate(document)
    except pydantic.ValidationError as error:
        problems = [
            Problem(filename, _line_of(document, e["loc"]), field_name(e["loc"]), problem_message(e))
            for e in error.errors()
        ]
        raise FleetError(problems) from None
    problems = [
        Problem(filename, _line_of(document, loc), field_name(loc), message)
        for loc, message in validate_references(fleet)
    ]
    if problems:
        raise FleetError(problems)
    return fleet


def problem_message(error: Any) -> str:
    """A pydantic error's message as our errors say it (what a file's reader prints after the field)."""
    message = str(error["msg"])
    if error["type"] == "missing":
        return "missing; this field is required"
    if error["type"] == "extra_forbidden":
        return "unknown field"
    return message.removeprefix("Value error, ")


def field_name(loc: Sequence[int | str]) -> str:
    """A pydantic error's location as a path: ``pops[3].transits[0].asn``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _line_of(document: Any, loc: Loc) -> int:
    """The 1-based line of the deepest part of ``loc`` present in the YAML document."""
    node, line = document, 1
    for part in loc:
        lc = getattr(node, "lc", None)
        if lc is None:
            break
        if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
            line = lc.item(part)[0] + 1
            node = node[part]
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            line = lc.key(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def validate_references(fleet: Fleet) -> list[tuple[Loc, str]]:
    """Checks across the document: duplicates, unknown references, overlapping prefixes, capacity."""
    problems: list[tuple[Loc, str]] = []

    def unique(kind: str, items: Sequence[Any], attr: str) -> None:
        seen: dict[Any, int] = {}
        for i, item in enumerate(items):
            value = getattr(item, attr)
            if value in seen:
                problems.append(((kind, i, attr), f"duplicate {attr} {value!r} (also {kind}[{seen[value]}])"))
            else:
                seen[value] = i

    def known(loc: Loc, kind: str, value: str, choices: dict[str, Any]) -> None:
        if value not in choices:
            expected = ", ".join(sorted(choices)) or "none defined"
            problems.append((loc, f"unknown {kind} {value!r}; expected one of: {expected}"))

    for kind in ("continents", "regions", "metros", "pops"):
        unique(kind, getattr(fleet, kind), "code")
        unique(kind, getattr(fleet, kind), "id")
    unique("models", fleet.models, "name")
    seen_units: dict[Any, str] = {}
    for pi, pop in enumerate(fleet.pops):
        for ui, unit in enumerate(pop.units):
            for attr in ("code", "id"):
                key = (attr, getattr(unit, attr))
                if key in seen_units:
                    problems.append(
                        (
                            ("pops", pi, "units", ui, attr),
                            f"duplicate unit {attr} {key[1]!r} ({seen_units[key]})",
                        )
                    )
                else:
                    seen_units[key] = f"also in PoP {pop.code}"
    exporters: dict[str, str] = {}
    for pi, pop in enumerate(fleet.pops):
        for ei, address in enumerate(pop.flow_exporters):
            if str(address) in exporters:  # its flows would be tagged with one PoP only, the other losing them all
                problems.append(
                    (
                        ("pops", pi, "flow_exporters", ei),
                        f"flow exporter {address} is also in PoP {exporters[str(address)]}",
                    )
                )
            else:
                exporters[str(address)] = pop.code

    for i, region in enumerate(fleet.regions):
        known(("regions", i, "continent"), "continent", region.continent, fleet.continent_by_code)
    for i, metro in enumerate(fleet.metros):
        known(("metros", i, "region"), "region", metro.region, fleet.region_by_code)
    for i, pop in enumerate(fleet.pops):
        known(("pops", i, "metro"), "metro", pop.metro, fleet.metro_by_code)
    for i, link in enumerate(fleet.links):
        known(("links", i, "a"), "PoP", link.a, fleet.pop_by_code)
        known(("links", i, "b"), "PoP", link.b, fleet.pop_by_code)
        if link.a == link.b:
            problems.append((("links", i, "b"), "a link must join two different PoPs"))
    for i, metro in enumerate(fleet.metros):
        if metro.code in fleet.metro_by_code and not fleet.pops_in(metro.code):
            problems.append((("metros", i), f"metro {metro.code!r} has no PoP"))

    problems.extend(_prefix_overlaps(fleet, "client_prefixes"))
    problems.extend(_prefix_overlaps(fleet, "service_prefixes"))
    problems.extend(_prefix_plan(fleet))

    gpus_used: dict[str, int] = {}
    for i, entry in enumerate(fleet.placement):
        known(("placement", i, "model"), "model", entry.model, fleet.model_by_name)
        known(("placement", i, "pop"), "PoP", entry.pop, fleet.pop_by_code)
        if entry.model not in fleet.model_by_name or entry.pop not in fleet.pop_by_code:
            continue
        spec = fleet.model_by_name[entry.model]
        gpu_type = fleet.best_gpu_type(entry.model, entry.pop)
        if gpu_type is None:
            have = ", ".join(sorted(fleet.pop_by_code[entry.pop].gpus_by_type()))
            problems.append(
                (
                    ("placement", i, "model"),
                    f"{entry.model} has no throughput for the GPUs at {entry.pop} ({have})",
                )
            )
            continue
        gpus_used[entry.pop] = gpus_used.get(entry.pop, 0) + entry.replicas * spec.gpus_per_replica
        available = sum(fleet.pop_by_code[entry.pop].gpus_by_type().values())
        if gpus_used[entry.pop] > available:
            problems.append(
                (
                    ("placement", i, "replicas"),
                    f"placement needs {gpus_used[entry.pop]} GPUs at {entry.pop}, which has {available}",
                )
            )
    return problems


def _prefix_overlaps(fleet: Fleet, field: str = "client_prefixes") -> list[tuple[Loc, str]]:
    """Prefixes of one kind (client or service) of different metros must not overlap."""
    tree = radix.Radix()
    problems: list[tuple[Loc, str]] = []
    for i, metro in enumerate(fleet.metros):
        for j, prefix in enumerate(getattr(metro, field)):
            network = str(ipaddress.ip_network(prefix))
            clashes = list(tree.search_covering(network)) + list(tree.search_covered(network))
            others = sorted({f"{n.prefix} of {n.data['metro']}" for n in clashes if n.data["metro"] != metro.code})
            if others:
                problems.append((("metros", i, field, j), f"{prefix} overlaps {'; '.join(others)}"))
            if network not in {n.prefix for n in clashes}:
                tree.add(network).data["metro"] = metro.code
    return problems


def _covered(prefix: str, by: Sequence[str]) -> bool:
    network = ipaddress.ip_network(prefix)
    for other in by:
        wider = ipaddress.ip_network(other)
        if wider.version == network.version and network.subnet_of(wider):  # type: ignore[arg-type]
            return True
    return False


def _prefix_plan(fleet: Fleet) -> list[tuple[Loc, str]]:
    """Every announced prefix has a covering aggregate one scope or more out: withdrawing a metro must
    leave its users caught by an aggregate. (Overlaps between metros are _prefix_overlaps' job.)"""
    problems: list[tuple[Loc, str]] = []
    region_index = {r.code: i for i, r in enumerate(fleet.regions)}
    for i, continent in enumerate(fleet.continents):
        for j, prefix in enumerate(continent.aggregates):
            if fleet.aggregates and not _covered(prefix, fleet.aggregates):
                problems.append(
                    (("continents", i, "aggregates", j), f"{prefix} is not covered by the network's aggregates")
                )
    for i, region in enumerate(fleet.regions):
        its_continent = fleet.continent_by_code.get(region.continent)
        wider = [*(its_continent.aggregates if its_continent else []), *fleet.aggregates]
        for j, prefix in enumerate(region.aggregates):
            if wider and not _covered(prefix, wider):
                problems.append(
                    (
                        ("regions", i, "aggregates", j),
                        f"{prefix} is not covered by an aggregate of {region.continent} or the network",
                    )
                )
    for i, metro in enumerate(fleet.metros):
        metro_region = fleet.regions[region_index[metro.region]] if metro.region in region_index else None
        metro_continent = fleet.continent_by_code.get(metro_region.continent) if metro_region else None
        wider = [
            *(metro_region.aggregates if metro_region else []),
            *(metro_continent.aggregates if metro_continent else []),
            *fleet.aggregates,
        ]
        for j, prefix in enumerate(metro.service_prefixes):
            if not _covered(prefix, wider):
                problems.append(
                    (
                        ("metros", i, "service_prefixes", j),
                        f"{prefix} has no covering aggregate (region {metro.region}, its continent or the network)",
                    )
                )
    return problems
