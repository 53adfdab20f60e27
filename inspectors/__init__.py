"""Inspector API: write an :class:`Inspector`, read the guest through :class:`Guest`."""

from .api import Inspector
from .guest import DeadlineExceeded, Filesystem, Guest, GuestReadError, Root
from .registry import DEFAULT_INSPECTORS, available, resolve

__all__ = [
    "DEFAULT_INSPECTORS",
    "DeadlineExceeded",
    "Filesystem",
    "Guest",
    "GuestReadError",
    "Inspector",
    "Root",
    "available",
    "resolve",
]
