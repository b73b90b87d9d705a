"""Background work that outlives its own failures: a job that raises is logged and started again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from edgeplane._errors import EdgeplaneError

log = logging.getLogger("edgeplane")

Job = Callable[[], Coroutine[Any, Any, None]]

RESTART_FIRST_SECONDS = 0.1
RESTART_MAX_SECONDS = 5.0
RESET_SECONDS = 60.0


def supervised(name: str, job: Job, *, first_seconds: float = RESTART_FIRST_SECONDS) -> Job:
    """``job`` run for as long as its owner lives: when it raises, the error is logged with its traceback
    and the job starts again after a back-off (doubling up to RESTART_MAX_SECONDS); a bug in one background
    task must not end the process that serves. A job that returns is done; cancellation passes through."""

    async def forever() -> None:
        loop = asyncio.get_running_loop()
        delay = first_seconds
        while True:
            started = loop.time()
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except EdgeplaneError as error:  # a failure we name (a store that cannot be reached): one line
                log.error("%s failed: %s; starting it again in %.1f s", name, error, delay)
            except Exception:
                log.exception("%s failed; starting it again in %.1f s", name, delay)
            if loop.time() - started > RESET_SECONDS:
                delay = first_seconds  # it ran well for a while: this is a new failure, not the same one
            await asyncio.sleep(delay)
            delay = min(RESTART_MAX_SECONDS, delay * 2)

    forever.__name__ = f"supervised {name}"
    return forever
