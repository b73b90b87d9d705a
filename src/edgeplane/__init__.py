"""edgeplane: run AI inference at the edge, nearest healthy metro first."""

from edgeplane._errors import EdgeplaneError

__all__ = ["EdgeplaneError", "__version__"]
__version__ = "0.1.0"
