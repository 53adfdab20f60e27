"""Bounded, read-only reads of a mounted guest, each under the running
inspector's deadline: the part of the guest view that needs nothing but the
handle. Every read is capped in size, every listing in count, because all
guest data is hostile."""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import re
import shlex
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from guestpool._errors import InspectorError

from ._layout import Finding

_PREAD_CHUNK = 1024 * 1024
#: errors of one path that the guest made (a symlink loop, a mode that refuses
#: even root in the appliance, a name too long): that path's fact is unknown,
#: nothing else is; any other error is the appliance's and fails the inspector
PATH_ERRNOS = frozenset({errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENOENT,
                         errno.ENOTDIR, errno.ENAMETOOLONG})


class DeadlineExceeded(InspectorError):
    """The inspector ran past its own deadline."""


class GuestReadError(InspectorError):
    """A path in the guest could not be read (missing, not a file, refused)."""


class GuestFiles:
    """The file-reading half of :class:`~guestpool.inspectors.Guest` (which adds
    finding the VM's filesystems and roots, and mounting them)."""

    def __init__(self, handle: Any) -> None:
        self._g = handle
        self._deadline = float("inf")
        #: seconds spent per step of the facade itself (discover, probe, mount,
        #: release); what inspectors spend beyond that is their own reading
        self.steps: dict[str, float] = {}
        #: guest paths that exist but could not be read (a loop, a FIFO where a
        #: file was expected), reported as findings on the VM, each once
        self.unreadable: dict[str, Finding] = {}

    def _path_failed(self, path: str, e: RuntimeError) -> bool:
        """Whether ``e`` was this path's own failure (kept as a finding), not the
        appliance's."""
        # the Python bindings give the daemon's message only: it ends with strerror
        message = str(e)
        code = next((c for c in PATH_ERRNOS if message.endswith(os.strerror(c))), None)
        if code is None:
            return False
        if code != errno.ENOENT:  # a missing file is not a finding
            self._unreadable(path, str(e)[-200:])
        return True

    def _unreadable(self, path: str, why: str) -> None:
        self.unreadable.setdefault(path, Finding(path, "unreadable", why))

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.monotonic() - start

    @property
    def handle(self) -> Any:
        """The raw ``guestfs.GuestFS`` handle. For experts: it bypasses every bound,
        uses the appliance's device names (``Filesystem.path``; an appliance
        launched with the VM's disks renames ``/dev/sdX`` in API calls, see
        :func:`~guestpool.inspectors._devices.api_device`), sees other VMs'
        disks when several are attached, and must not be used to write (the disks
        are read-only at the qemu level anyway). The VM's LVM volume groups, md
        arrays and LUKS devices are open only once :meth:`filesystems` has run."""
        return self._g

    def set_deadline(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def time_left(self) -> float:
        """Seconds before the running inspector's deadline."""
        return max(0.0, self._deadline - time.monotonic())

    def check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise DeadlineExceeded("inspector ran past its deadline")

    def kinds(self, paths: Iterable[str], follow: bool = True) -> dict[str, str | None]:
        """What each absolute path is: ``file``, ``dir``, ``link`` (a symlink, when
        not followed or dangling), ``other`` (device, FIFO, socket), or None.

        One ``lstat`` round trip per folder (1 ms under TCG, where each
        ``is_file`` costs 10 ms); only symlinks are followed one by one, inside
        the guest."""
        self.check_deadline()
        g = self._g
        by_dir: dict[str, list[str]] = {}
        for path in paths:
            folder, _, name = path.rpartition("/")
            if name:
                by_dir.setdefault(folder or "/", []).append(name)
        out: dict[str, str | None] = {}
        for folder, names in by_dir.items():
            base = folder.rstrip("/")
            try:
                stats = g.lstatnslist(folder, names)
            except RuntimeError:
                stats = [{"st_ino": -1}] * len(names)
            for name, st in zip(names, stats, strict=False):
                path = f"{base}/{name}"
                if st["st_ino"] < 0:
                    out[path] = None
                    continue
                kind = {0o100000: "file", 0o040000: "dir", 0o120000: "link"}.get(
                    st["st_mode"] & 0o170000, "other")
                if kind == "link" and follow:
                    try:
                        kind = ("file" if g.is_file(path, followsymlinks=True)
                                else "dir" if g.is_dir(path, followsymlinks=True) else "link")
                    except RuntimeError as e:  # a loop: it stays an unresolvable link
                        if not self._path_failed(path, e):
                            raise
                out[path] = kind
        return out

    def read_bytes(self, path: str, max_bytes: int = 1024 * 1024) -> bytes:
        """At most ``max_bytes`` of a regular file (symlinks followed inside the guest)."""
        self.check_deadline()
        g = self._g
        try:
            kind = self.kinds([path]).get(path)
            if kind != "file":
                if kind == "other":  # a FIFO or a device where a file was expected
                    self._unreadable(path, "not a regular file (a FIFO, socket or device)")
                raise GuestReadError(f"{path}: not a regular file")
            out = bytearray()  # grown in place: no copy of all so far per chunk
            while len(out) < max_bytes:
                want = min(_PREAD_CHUNK, max_bytes - len(out))
                chunk = g.pread(path, want, len(out))
                out += chunk
                if len(chunk) < want:  # end of file: no extra round trip to learn it
                    break
                self.check_deadline()
            return bytes(out)
        except RuntimeError as e:
            raise GuestReadError(f"{path}: {e}") from None

    def read_text(self, path: str, max_bytes: int = 1024 * 1024) -> str:
        return self.read_bytes(path, max_bytes).decode("utf-8", errors="replace")

    def read_lines(self, path: str, max_bytes: int = 1024 * 1024, max_lines: int = 100_000
                   ) -> list[str]:
        return self.read_text(path, max_bytes).splitlines()[:max_lines]

    def exists(self, path: str) -> bool:
        """Whether ``path`` names something reachable (False for a symlink loop)."""
        self.check_deadline()
        return self._test(path, lambda: self._g.exists(path))

    def is_file(self, path: str, follow: bool = False) -> bool:
        """Whether ``path`` is a regular file (``follow``: through symlinks, inside
        the guest)."""
        self.check_deadline()
        return self._test(path, lambda: self._g.is_file(path, followsymlinks=follow))

    def is_dir(self, path: str) -> bool:
        self.check_deadline()
        return self._test(path, lambda: self._g.is_dir(path))

    def _test(self, path: str, call: Callable[[], object]) -> bool:
        try:
            return bool(call())
        except RuntimeError as e:
            if not self._path_failed(path, e):
                raise
            return False

    def stat(self, path: str) -> dict[str, int]:
        """lstat of ``path``: mode, size, uid, gid, mtime (symlinks not followed)."""
        self.check_deadline()
        try:
            st = self._g.lstatns(path)
        except RuntimeError as e:
            raise GuestReadError(f"{path}: {e}") from None
        return {"mode": st["st_mode"], "size": st["st_size"], "uid": st["st_uid"],
                "gid": st["st_gid"], "mtime": st["st_mtime_sec"]}

    def listdir(self, path: str, limit: int = 10_000) -> list[str]:
        """Names in a folder. A name that is not UTF-8 comes back with its bad
        bytes escaped (``\\xff``); such a name cannot be opened by later calls."""
        self.check_deadline()
        try:
            names: list[str] = self._g.ls(path)
        except UnicodeDecodeError:
            names = self._raw_names(path)
        except RuntimeError as e:
            raise GuestReadError(f"{path}: {e}") from None
        return names[:limit]

    def _raw_names(self, path: str) -> list[str]:
        with tempfile.NamedTemporaryFile(prefix="gp-ls0-") as tmp:
            try:
                self._g.ls0(path, tmp.name)
            except RuntimeError as e:
                raise GuestReadError(f"{path}: {e}") from None
            data = Path(tmp.name).read_bytes()[: 16 * 1024 * 1024]
        return [n.decode("utf-8", "backslashreplace") for n in data.split(b"\0") if n]

    def glob(self, pattern: str, limit: int = 1000) -> list[str]:
        """Paths matching a shell pattern, at most ``limit``."""
        self.check_deadline()
        try:
            paths: list[str] = self._g.glob_expand(pattern)
        except UnicodeDecodeError:  # a name that is not UTF-8: match folder by folder
            folder, _, leaf = pattern.rpartition("/")
            try:
                names = self.listdir(folder or "/", limit=100_000)
            except GuestReadError:
                return []
            paths = [f"{folder}/{n}" for n in names if fnmatch.fnmatchcase(n, leaf)]
        except RuntimeError:
            return []
        return paths[:limit]

    def checksum(self, path: str, algorithm: str = "sha256", max_size: int = 256 * 1024 * 1024
                 ) -> str:
        """Digest computed inside the appliance; refuses files larger than ``max_size``."""
        st = self.stat(path)
        if (st["mode"] & 0o170000) != 0o100000:
            raise GuestReadError(f"{path}: not a regular file")
        if st["size"] > max_size:
            raise GuestReadError(f"{path}: {st['size']} bytes is over the {max_size}-byte cap")
        try:
            return str(self._g.checksum(algorithm, path))
        except RuntimeError as e:
            raise GuestReadError(f"{path}: {e}") from None

    def usage(self, mountpoint: str) -> dict[str, int]:
        """Size, used and free bytes of the filesystem mounted at ``mountpoint``."""
        self.check_deadline()
        st = self._g.statvfs(mountpoint)
        size = st["blocks"] * st["frsize"]
        free = st["bfree"] * st["frsize"]
        return {"size": size, "used": size - free, "free": st["bavail"] * st["frsize"]}

    def os_release(self) -> dict[str, str]:
        """/etc/os-release (or /usr/lib/os-release) of the mounted root, parsed."""
        for path in ("/etc/os-release", "/usr/lib/os-release"):
            try:
                lines = self.read_lines(path, max_bytes=16 * 1024, max_lines=200)
            except GuestReadError:
                continue
            out = {}
            for line in lines:
                key, sep, value = line.partition("=")
                if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
                    try:
                        out[key] = " ".join(shlex.split(value))
                    except ValueError:
                        out[key] = value.strip("\"'")
            return out
        return {}
