"""Running edgeplane on one machine: `edgeplane up`'s supervisor of every process, the lock that keeps one
fleet per data directory, and the load generator that replays a demand file against a gateway."""

from edgeplane.local._loadgen import Tally, client_address, replay
from edgeplane.local._lock import DirectoryLock, LockHeld
from edgeplane.local._up import Child, Supervisor, UpOptions, get_json, stop_on_sigterm

__all__ = [
    "Child",
    "DirectoryLock",
    "LockHeld",
    "Supervisor",
    "Tally",
    "UpOptions",
    "client_address",
    "get_json",
    "replay",
    "stop_on_sigterm",
]
