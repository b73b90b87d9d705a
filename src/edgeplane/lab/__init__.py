"""The network-namespace lab: a PoP per namespace behind transits emulated by BIRD routers, a client namespace
per metro and the control plane on a management network of its own, so that users' connections follow BGP."""

from edgeplane.lab._bird import HOLD_TIME_SECONDS, KEEPALIVE_SECONDS, Session, bird_config, parse_protocols
from edgeplane.lab._netns import LabError, is_root, require_netlink
from edgeplane.lab._ops import exec_in_metro, fail_pop, lab_down, lab_status
from edgeplane.lab._plan import (
    GATEWAY_PORT,
    HOST_LINK,
    NETNS_KINDS,
    ClientPlan,
    LabPlan,
    LabPlanError,
    PopPlan,
    RouterPlan,
    addresses,
    fleet_networks,
    plan_lab,
)
from edgeplane.lab._run import Lab, LabOptions, find_bird, print_json_line
from edgeplane.lab._state import STATE_DIR, LabState, read_state

__all__ = [
    "GATEWAY_PORT",
    "HOLD_TIME_SECONDS",
    "HOST_LINK",
    "KEEPALIVE_SECONDS",
    "NETNS_KINDS",
    "STATE_DIR",
    "ClientPlan",
    "Lab",
    "LabError",
    "LabOptions",
    "LabPlan",
    "LabPlanError",
    "LabState",
    "PopPlan",
    "RouterPlan",
    "Session",
    "addresses",
    "bird_config",
    "exec_in_metro",
    "fail_pop",
    "find_bird",
    "fleet_networks",
    "is_root",
    "lab_down",
    "lab_status",
    "parse_protocols",
    "plan_lab",
    "print_json_line",
    "read_state",
    "require_netlink",
]
