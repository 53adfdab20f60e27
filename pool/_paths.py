"""Where guestpool keeps state between runs (XDG locations, overridable)."""

from __future__ import annotations

import os
from pathlib import Path


def _dir(override: str, xdg: str, fallback: str, create: bool = True) -> Path:
    if os.environ.get(override):
        path = Path(os.environ[override])
    else:
        base = os.environ.get(xdg)
        path = (Path(base) if base else Path.home() / fallback) / "guestpool"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(create: bool = True) -> Path:
    """Per-host facts worth remembering (accelerator verdict, measured costs);
    ``create=False``: only where it is (a user without a home folder may run a scan)."""
    return _dir("GUESTPOOL_CACHE_DIR", "XDG_CACHE_HOME", ".cache", create)


def data_dir(create: bool = True) -> Path:
    """Default home of the demo fleet and the results store (``create=False``: only
    where it is, for readers that must not create anything)."""
    return _dir("GUESTPOOL_DATA_DIR", "XDG_DATA_HOME", ".local/share", create)


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it can be written to; raises OSError."""
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write-test"
    probe.write_text("")
    probe.unlink()
    return path
