"""Demand: requests per second per metro and model, with its token mix, from a CSV or YAML file."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeplane._errors import ConfigError
from edgeplane.fleet import Fleet

COLUMNS = ("metro", "model", "requests_per_second", "prompt_tokens", "output_tokens")


@dataclass(frozen=True, slots=True)
class Demand:
    metro: str
    model: str
    requests_per_second: float
    prompt_tokens: int
    output_tokens: int

    def to_json(self) -> dict[str, Any]:
        return {
            "metro": self.metro,
            "model": self.model,
            "requests_per_second": self.requests_per_second,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
        }


def scale(demand: Iterable[Demand], factor: float) -> list[Demand]:
    """Growth: the same mix, ``factor`` times the requests."""
    if factor <= 0:
        raise ValueError(f"a growth factor must be positive, got {factor}")
    return [replace(d, requests_per_second=d.requests_per_second * factor) for d in demand]


def _rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    if path.suffix in (".yaml", ".yml"):
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            data = YAML(typ="rt").load(text)
        except YAMLError as error:
            raise ConfigError(f"{path}: not YAML ({error})") from None
        items = data.get("demand") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ConfigError(f"{path}:1: demand: expected a list of {{{', '.join(COLUMNS)}}}")
        rows = []
        for index, item in enumerate(items):
            line = item.lc.line + 1 if hasattr(item, "lc") else index + 1
            if not isinstance(item, dict):
                raise ConfigError(f"{path}:{line}: demand[{index}]: expected a mapping of {', '.join(COLUMNS)}")
            rows.append((line, dict(item)))
        return rows
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{path}:1: header: missing {', '.join(missing)} (expected {','.join(COLUMNS)})")
    return [(number, row) for number, row in enumerate(reader, start=2)]


def load_demand(path: Path, fleet: Fleet) -> list[Demand]:
    """Read and check a demand file: every error names file, line and field, and says what was expected."""
    try:
        text = path.read_text("utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the demand file ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: the demand file is not UTF-8 (byte {error.start}: {error.reason})") from None
    demand: list[Demand] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in _rows(path, text):
        where = f"{path}:{line}"
        metro = str(row.get("metro") or "").strip()
        model = str(row.get("model") or "").strip()
        if metro not in fleet.metro_by_code:
            raise ConfigError(
                f"{where}: metro: {metro!r} is not a metro of the fleet ({', '.join(fleet.metro_by_code)})"
            )
        if model not in fleet.model_by_name:
            known = ", ".join(fleet.model_by_name)
            raise ConfigError(f"{where}: model: {model!r} is not in the catalog ({known})")
        values: dict[str, float] = {}
        for field in COLUMNS[2:]:
            raw = row.get(field)
            try:
                value = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: {field}: expected a number, got {raw!r}") from None
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{where}: {field}: must be a finite number >= 0, got {raw!r}")
            values[field] = value
        if values["output_tokens"] < 1:
            raise ConfigError(f"{where}: output_tokens: must be at least 1, got {row.get('output_tokens')!r}")
        if (metro, model) in seen:
            raise ConfigError(f"{where}: metro: {metro}/{model} is given twice (first on line {seen[metro, model]})")
        seen[metro, model] = line
        demand.append(
            Demand(
                metro, model, values["requests_per_second"], int(values["prompt_tokens"]), int(values["output_tokens"])
            )
        )
    if not demand:
        raise ConfigError(f"{path}: no demand rows")
    return demand
