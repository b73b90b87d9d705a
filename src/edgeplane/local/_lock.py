"""Exclusive locks on a data directory, held by a running process and released by the kernel when it dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from edgeplane._errors import EdgeplaneError

# A holder writes its pid right after it takes the lock; a reader that finds the file still empty
# waits this long for it before saying the pid is unknown.
_PID_WAIT_SECONDS = 1.0


class LockHeld(EdgeplaneError):
    """Another process holds the lock: it names what that process is and its pid."""

    def __init__(self, holder: str, pid: int | None, using: Path) -> None:
        self.pid = pid
        shown = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"another {holder} ({shown}) is using {using}")


class DirectoryLock:
    """An flock(2) on ``path``, which holds the holder's pid for whoever is refused.

    The lock belongs to the open file, so it dies with the process, even by SIGKILL: nothing stale
    is left to clean up. The file itself stays (removing it would let a second process lock a fresh
    file while a third still holds the old one). Its descriptor is not inherited by child processes.
    """

    def __init__(self, path: Path, holder: str, using: Path) -> None:
        self.path, self.holder, self.using = path, holder, using
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<DirectoryLock {self.path} {'held' if self._fd is not None else 'free'}>"

    def acquire(self) -> None:
        """Take the lock at once or raise `LockHeld`; never waits for the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.holder, self._holder_pid(), self.using) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the only descriptor releases the flock
        self._fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def _holder_pid(self) -> int | None:
        deadline = time.monotonic() + _PID_WAIT_SECONDS
        while True:
            with contextlib.suppress(OSError, ValueError):
                return int(self.path.read_text().strip())
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
