"""An installable guestpool inspector: files anyone can change, and set-id binaries.

World-writable files under /etc let any local user change the system's
configuration; SUID/SGID executables are the classic privilege-escalation
foothold. Both are on every hardening checklist.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from typing import Any

from guestpool.inspectors import Guest, GuestReadError, Inspector


class WorldWritable(Inspector):
    name = "world-writable"
    version = "1.0"
    description = "World-writable files under /etc and SUID/SGID executables"

    @dataclass
    class Options:
        roots: list[str] = field(default_factory=lambda: ["/etc"])
        setid_roots: list[str] = field(default_factory=lambda: ["/usr/bin", "/usr/sbin",
                                                                "/usr/local/bin"])
        max_entries: int = 20_000
        max_depth: int = 8

    def run(self, guest: Guest, options: WorldWritable.Options) -> Any:
        if guest.mount() is None:
            return None
        writable: list[str] = []
        setid: list[dict[str, Any]] = []
        budget = [options.max_entries]
        for root in options.roots:
            for path, mode in _walk(guest, root, options.max_depth, budget):
                if stat.S_ISREG(mode) and mode & stat.S_IWOTH:
                    writable.append(path)
        for root in options.setid_roots:
            for path, mode in _walk(guest, root, options.max_depth, budget):
                if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                    setid.append({"path": path, "mode": oct(mode & 0o7777)})
        return {"world_writable": sorted(writable), "setid": sorted(setid, key=lambda e: e["path"]),
                "truncated": budget[0] <= 0}


def _walk(guest: Guest, top: str, depth: int, budget: list[int]) -> list[tuple[str, int]]:
    """(path, mode) below ``top`` without following symlinks, bounded in count and depth."""
    out: list[tuple[str, int]] = []
    stack = [(top, 0)]
    while stack and budget[0] > 0:
        path, level = stack.pop()
        try:
            names = guest.listdir(path, limit=budget[0])
        except GuestReadError:
            continue
        for name in names:
            budget[0] -= 1
            child = f"{path.rstrip('/')}/{name}"
            try:
                mode = guest.stat(child)["mode"]
            except GuestReadError:
                continue
            out.append((child, mode))
            if stat.S_ISDIR(mode) and level + 1 < depth:
                stack.append((child, level + 1))
    return out
