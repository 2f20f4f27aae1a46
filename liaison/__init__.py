"""Liaison: an event-driven information-exchange bus for international police cooperation."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("liaison")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
