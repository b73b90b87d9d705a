"""What a running lab leaves for `lab status`, `exec`, `fail` and `down` to read: one JSON file, parsed once."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgeplane.lab._netns import LabError

STATE_DIR = Path("/run/edgeplane-lab")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetroState(_Strict):
    code: str
    client_netns: str
    client_address: str
    service_url: str


class PopState(_Strict):
    code: str
    metro: str
    netns: str
    address: str  # on the management network: its agent and gateway
    next_hop: str  # on its links to the transits


class RouterState(_Strict):
    name: str
    transit: str
    asn: int
    metro: str
    netns: str
    router_id: str
    loopback: str
    socket: str  # birdc -s


class ProcessState(_Strict):
    name: str
    netns: str
    pid: int


class LabState(_Strict):
    pid: int  # `lab up`
    fleet: str | None
    control_url: str
    admin_token: str
    api_key: str
    netem: bool
    namespaces: list[str]
    host_link: str
    metros: list[MetroState]
    pops: list[PopState]
    routers: list[RouterState]
    processes: list[ProcessState]


def state_path(state_dir: Path = STATE_DIR) -> Path:
    return state_dir / "state.json"


def write_state(state: LabState, state_dir: Path = STATE_DIR) -> None:
    """Written whole to a temporary file and renamed, readable by root only (it holds the lab's keys)."""
    path = state_path(state_dir)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(json.dumps(state.model_dump(mode="json"), indent=2))
    temporary.replace(path)


def read_state(state_dir: Path = STATE_DIR) -> LabState:
    path = state_path(state_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LabError(f"no lab is running ({path} does not exist): start one with `edgeplane lab up`") from None
    try:
        return LabState.model_validate_json(text)
    except ValueError as error:
        raise LabError(f"{path} is not a lab's state ({error}); `edgeplane lab down` removes what is left") from None
