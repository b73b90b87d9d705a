"""The fleet description: load, validate (errors name file, line and field), and the default fleet."""

from edgeplane.fleet._geo import great_circle_km
from edgeplane.fleet._json import fleet_json
from edgeplane.fleet._load import (
    FleetError,
    Problem,
    default_fleet_text,
    field_name,
    load_default_fleet,
    load_fleet,
    parse_fleet,
    problem_message,
    validate_references,
)
from edgeplane.fleet._model import (
    Continent,
    Fleet,
    GpuServers,
    Link,
    Metro,
    PlacementEntry,
    Pop,
    Region,
    Transit,
    Unit,
    UnitTemplate,
)

__all__ = [
    "Continent",
    "Fleet",
    "FleetError",
    "GpuServers",
    "Link",
    "Metro",
    "PlacementEntry",
    "Pop",
    "Problem",
    "Region",
    "Transit",
    "Unit",
    "UnitTemplate",
    "default_fleet_text",
    "field_name",
    "fleet_json",
    "great_circle_km",
    "load_default_fleet",
    "load_fleet",
    "parse_fleet",
    "problem_message",
    "validate_references",
]
