"""Registry hives read by the daemon's ``hivex_*`` calls inside the appliance:
the hive never leaves it and no program is started. One hive is open on a
handle at a time (the daemon keeps one)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ._files import GuestFiles, GuestReadError

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 1, 2, 3, 4, 7, 11
MAX_HIVE = 512 * 1024 * 1024
MAX_APPS = 5000
MAX_TEXT = 4096


class Hive:
    """One open hive: keys by path, values by name. Only one hive is open on a
    handle at a time (the daemon keeps one)."""

    def __init__(self, guest: GuestFiles) -> None:
        self.guest, self.g = guest, guest.handle

    def node(self, path: str | list[str]) -> int | None:
        """A key below the root, by backslash path or parts (any case); None if absent."""
        parts = path if isinstance(path, list) else [p for p in path.split("\\") if p]
        node: int = self.g.hivex_root()
        for part in parts:
            self.guest.check_deadline()
            node = self.g.hivex_node_get_child(node, part)
            if not node:
                return None
        return node

    def values(self, node: int) -> dict[str, Any]:
        """The values of a key: str for REG_SZ/EXPAND_SZ, int for DWORD/QWORD,
        list of str for MULTI_SZ, bytes otherwise (names as written)."""
        out: dict[str, Any] = {}
        for v in self.g.hivex_node_values(node)[:1000]:
            handle = v["hivex_value_h"]
            out[str(self.g.hivex_value_key(handle))] = self.value(handle)
        return out

    def value(self, handle: int) -> Any:
        kind = self.g.hivex_value_type(handle)
        if kind in (REG_SZ, REG_EXPAND_SZ):
            try:
                return str(self.g.hivex_value_string(handle))[:MAX_TEXT]
            except RuntimeError:
                return ""
        raw = bytes(self.g.hivex_value_value(handle))
        if kind == REG_DWORD and len(raw) >= 4:
            return int.from_bytes(raw[:4], "little")
        if kind == REG_QWORD and len(raw) >= 8:
            return int.from_bytes(raw[:8], "little")
        if kind == REG_MULTI_SZ:
            return [s for s in raw.decode("utf-16-le", "replace").split("\0") if s][:100]
        return raw[:MAX_TEXT]

    def children(self, node: int) -> list[tuple[str, int]]:
        return [(str(self.g.hivex_node_name(c["hivex_node_h"])), c["hivex_node_h"])
                for c in self.g.hivex_node_children(node)[:MAX_APPS]]


@contextlib.contextmanager
def open_hive(guest: GuestFiles, path: str, max_size: int = MAX_HIVE) -> Iterator[Hive]:
    """A hive file of the mounted guest, opened read-only inside the appliance."""
    st = guest.stat(path)
    if (st["mode"] & 0o170000) != 0o100000:
        raise GuestReadError(f"{path}: not a regular file")
    if st["size"] > max_size:
        raise GuestReadError(f"{path}: {st['size']} bytes is over the hive size cap")
    g = guest.handle
    try:
        g.hivex_open(path, write=False)
    except RuntimeError as e:
        raise GuestReadError(f"{path}: not a readable registry hive: {e}") from None
    try:
        yield Hive(guest)
    except RuntimeError as e:
        raise GuestReadError(f"{path}: {e}") from None
    finally:
        g.hivex_close()
