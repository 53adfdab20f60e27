"""Reading the appliance's ``debug sh`` answers safely: split lines the way the
shell wrote them, tell the appliance's own mounts from a guest's, retry device
listings while udev settles. Used by the guest view and by the worker's
hot-plug code, which imports them from here."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


#: /proc/mounts through shell builtins (printf: dash's echo would read escapes)
PRINT_MOUNTS = "while IFS= read -r l; do printf '%s\\n' \"$l\"; done < /proc/mounts\nexit 0\n"


def shell_lines(out: str) -> list[str]:
    """The lines of a ``debug sh`` output, split where the shell split them: at
    ``\n`` only. Guest text in it (udev keeps a label's UTF-8 as is; mount echoes
    a guest's mountpoint) may hold U+2028, U+0085 or other characters Python's
    ``splitlines`` also breaks at, which would forge a line."""
    return out.split("\n")


def outside_sysroot(table: str) -> frozenset[str]:
    """The lines of a /proc/mounts text that are the appliance's own, not under
    /sysroot (where guests are mounted)."""
    return frozenset(line for line in shell_lines(table)
                     if len(f := line.split()) >= 2 and f[1] != "/sysroot"
                     and not f[1].startswith("/sysroot/"))


def device_listing(fn: Callable[[], T], tries: int = 30) -> T:
    """A device listing; retried while udev is still adding or removing the links of
    disks just hot-plugged (the daemon then fails to resolve one of them)."""
    for _ in range(tries - 1):
        try:
            return fn()
        except RuntimeError as e:
            if "No such file or directory" not in str(e):
                raise
            time.sleep(0.1)
    return fn()
