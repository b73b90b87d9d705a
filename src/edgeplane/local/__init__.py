"""Running edgeplane on one machine: `edgeplane up`'s supervisor of every process, `edgeplane pop run`'s of one
PoP's, the lock that keeps one fleet per data directory, and the load generator that replays a demand file
against a gateway."""

from edgeplane.local._children import Child, Children, answers
from edgeplane.local._loadgen import Tally, client_address, replay
from edgeplane.local._lock import DirectoryLock, LockHeld
from edgeplane.local._pop import PopOptions, PopPhase, PopSupervisor
from edgeplane.local._up import Supervisor, UpOptions, get_json, stop_on_sigterm

__all__ = [
    "Child",
    "Children",
    "DirectoryLock",
    "LockHeld",
    "PopOptions",
    "PopPhase",
    "PopSupervisor",
    "Supervisor",
    "Tally",
    "UpOptions",
    "answers",
    "client_address",
    "get_json",
    "replay",
    "stop_on_sigterm",
]
