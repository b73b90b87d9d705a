"""What each optional part of edgeplane needs, and one clear error when its extra is not installed.

A gateway-only install (`pip install edgeplane`) has no llama.cpp, ExaBGP, HiGHS or matplotlib; each is
imported where it is first used, through :func:`require`, which names the extra that brings it."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from edgeplane._errors import ConfigError

EXTRAS = {
    "llamacpp": ("xllamacpp", "gguf"),  # the llama.cpp backend and the GGUF files it loads
    "bgp": ("exabgp",),  # the BGP speaker (`bgp run`)
    "plan": ("highspy", "matplotlib"),  # placement, scenarios, growth and their HTML reports
    "lab": ("pyroute2",),  # the network-namespace lab (`lab up`): netlink
    "flows": ("duckdb", "mrtparse", "pyarrow"),  # the flow collector, its store and the peering analysis
    "postgres": ("psycopg",),  # the control plane's store on PostgreSQL (`--store postgresql://...`)
}


class MissingExtra(ConfigError):
    """A command needs a part of edgeplane that this install left out."""

    def __init__(self, extra: str, module: str, what: str) -> None:
        super().__init__(
            f"{what} needs edgeplane's `{extra}` extra ({module} is not installed): "
            f"pip install 'edgeplane[{extra}]' (or 'edgeplane[all]')"
        )
        self.extra, self.module = extra, module


def require(module: str, extra: str, what: str) -> ModuleType:
    """``module``, imported; MissingExtra naming ``extra`` when it is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but something it needs is broken: that is not a missing extra
        raise MissingExtra(extra, module, what) from None


def require_installed(module: str, extra: str, what: str) -> None:
    """Like :func:`require` for a package that runs as a program of its own (ExaBGP), without importing it."""
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a finder that knows it is absent may say so this way
        found = None
    if found is None:
        raise MissingExtra(extra, module, what)
