"""A guest filesystem in a dict, behind the handle calls the guest facade makes:
for fast unit tests of what inspectors derive from guest files."""

from __future__ import annotations

import posixpath
from typing import Any

from guestpool.inspectors._guest import Guest, Root

DIR = object()


class Link(str):
    """A symlink's target."""


class FakeHandle:
    """``files``: path -> bytes (a file), :data:`DIR`, or :class:`Link`; parent
    folders are implied."""

    def __init__(self, files: dict[str, Any]) -> None:
        self.files = dict(files)
        for path in list(self.files):
            while path not in ("/", ""):
                path = posixpath.dirname(path)
                self.files.setdefault(path, DIR)

    def _resolve(self, path: str, depth: int = 0) -> str:
        node = self.files.get(path)
        if isinstance(node, Link) and depth < 8:
            target = node if node.startswith("/") else posixpath.normpath(
                posixpath.join(posixpath.dirname(path), node))
            return self._resolve(target, depth + 1)
        return path

    def is_file(self, path: str, followsymlinks: bool = False) -> bool:
        path = self._resolve(path) if followsymlinks else path
        return isinstance(self.files.get(path), bytes)

    def is_dir(self, path: str, followsymlinks: bool = False) -> bool:
        path = self._resolve(path) if followsymlinks else path
        return self.files.get(path) is DIR

    def is_symlink(self, path: str) -> bool:
        return isinstance(self.files.get(path), Link)

    def readlink(self, path: str) -> str:
        return str(self.files[path])

    def lstatnslist(self, folder: str, names: list[str]) -> list[dict[str, int]]:
        out = []
        for name in names:
            node = self.files.get(posixpath.join(folder, name))
            mode = (0o120000 if isinstance(node, Link) else 0o100000 if isinstance(node, bytes)
                    else 0o040000 if node is DIR else 0)
            out.append({"st_ino": 1 if mode else -1, "st_mode": mode})
        return out

    def pread(self, path: str, count: int, offset: int) -> bytes:
        data = self.files[self._resolve(path)]
        assert isinstance(data, bytes)
        return data[offset: offset + count]

    def ls(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self.files
                       if p.startswith(prefix) and p != prefix})


def mounted_guest(files: dict[str, Any]) -> Guest:
    """A guest whose root is 'mounted' (the files are its tree)."""
    guest = Guest(FakeHandle(files), "vm", [])
    root = Root("/dev/sda1", "ext4", mounts={"/": "/dev/sda1"})
    guest._roots = [root]
    guest._mounted = root
    return guest
