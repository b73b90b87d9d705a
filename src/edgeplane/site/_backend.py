"""The one interface every model backend implements: emulator, llama.cpp, any OpenAI-compatible URL."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from edgeplane.web import InferenceRequest


@dataclass(frozen=True, slots=True)
class Load:
    """How busy a backend is, read from its own metrics."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    capacity: int = 1

    @property
    def utilisation(self) -> float:
        return min(1.0, (self.running + self.waiting) / max(1, self.capacity))


def _nothing() -> None:
    return None


@dataclass(slots=True)
class Answer:
    """An answer whose body is produced as it is read; ``release`` frees what it holds."""

    status: int
    content_type: str
    chunks: AsyncIterator[bytes]
    release: Callable[[], None] = field(default=_nothing)
    unit: str | None = None  # the unit whose GPUs answer, where the backend knows


class Backend(abc.ABC):
    """Serves one model at one site."""

    kind: str = "?"

    def __init__(self, model: str) -> None:
        self.model = model
        self.units_out: frozenset[str] = frozenset()  # the PoP's units that carry no traffic now

    def serves(self) -> bool:
        """Whether some of the model's replicas sit on units carrying traffic (a backend that does not
        know its units always serves)."""
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.model}>"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load the model; return once it answers."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release what the backend holds."""

    @abc.abstractmethod
    async def generate(self, request: InferenceRequest, raw: bytes) -> Answer:
        """Answer one request; ``raw`` is the body as the client sent it."""

    @abc.abstractmethod
    async def load(self) -> Load:
        """The backend's load as its metrics tell it."""
