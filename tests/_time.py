"""Time in tests, one way: a virtual clock that pure code reads and tests move, and waiting for a condition of
real processes (never sleeping a guessed while and then asserting)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


class VirtualClock:
    """Monotonic seconds that move only when a test says so: ``clock()`` reads, ``advance()`` or ``await
    clock.sleep()`` move it (sleep lets the event loop turn once, so tasks waiting on it run in virtual time)."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __repr__(self) -> str:
        return f"<VirtualClock {self.now:.3f}>"

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def wait_for(what: str, check: Callable[[], object], timeout_seconds: float = 30.0, every: float = 0.1) -> float:
    """Until ``check()`` is true, polled every ``every`` s; the seconds it took, or AssertionError naming ``what``
    after ``timeout_seconds`` (a bound for a stuck test, not a timing assert: it is far above what is expected)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_seconds:
            raise AssertionError(f"{what}: not within {timeout_seconds:g} s")
        time.sleep(every)
    return time.monotonic() - started


async def wait_for_async(
    what: str, check: Callable[[], object | Awaitable[object]], timeout_seconds: float = 30.0, every: float = 0.05
) -> float:
    """``wait_for`` inside a test's own event loop, which must keep turning while it waits: ``check`` may be a
    coroutine function, and the polls are ``asyncio.sleep(every)`` (``every=0``: once a turn of the loop)."""
    started = time.monotonic()
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_seconds:
            raise AssertionError(f"{what}: not within {timeout_seconds:g} s")
        await asyncio.sleep(every)
