"""The guest facade inspectors see: read-only, bounded, with a deadline.

It lives inside the appliance worker, next to the ``guestfs`` handle. Every
read is capped in size, every listing in count, and every call checks the
inspector's deadline, because all guest data is hostile.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool._errors import InspectorError

from ._devices import Filesystem, Layout, deactivate, find_filesystems

__all__ = ["DeadlineExceeded", "Filesystem", "Guest", "GuestReadError", "Root"]

LINUX_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs")
_NOT_DISKS = ("swap", "proc", "sysfs", "tmpfs", "devpts")
_FSTAB_MAX = 64 * 1024
_PREAD_CHUNK = 1024 * 1024


class DeadlineExceeded(InspectorError):
    """The inspector ran past its own deadline."""


class GuestReadError(InspectorError):
    """A path in the guest could not be read (missing, not a file, refused)."""


@dataclass
class Root:
    """An operating system root found on the VM's disks."""

    device: str
    type: str
    #: mountpoint -> device, as mounted for this job (read-only).
    mounts: dict[str, str] = field(default_factory=dict)
    #: fstab mountpoints refused because they would leave the guest's tree
    #: (``..``, relative, or through a symlink), with the reason
    refused: dict[str, str] = field(default_factory=dict)


class Guest:
    """Read-only access to one VM's disks inside a booted appliance.

    ``devices`` are the appliance device names of this VM's disks, in the VM's
    order. Mounts are made once per VM and shared by every inspector of the job:
    every mount costs 0.1–0.5 s under TCG, so a filesystem already mounted by an
    earlier step is reused rather than mounted again.
    """

    def __init__(self, handle: Any, vm: str, devices: list[str], *, shell: bool = True
                 ) -> None:
        self._g = handle
        self.vm = vm
        self.devices = list(devices)
        self._shell = shell
        self._deadline = float("inf")
        self._layout: Layout | None = None
        self._roots: list[Root] | None = None
        #: a root mounted at / with its fstab mounts
        self._mounted: Root | None = None
        #: a filesystem mounted alone at / (a probed root candidate, or one measured)
        self._bare: str | None = None
        self._fstabs: dict[str, list[tuple[str, str, str]]] = {}
        #: per root: fstab mountpoints refused, with the reason
        self._refused: dict[str, dict[str, str]] = {}

    # -- expert escape hatch -------------------------------------------------

    @property
    def handle(self) -> Any:
        """The raw ``guestfs.GuestFS`` handle. For experts: it bypasses every bound,
        sees other VMs' disks when several are attached, and must not be used to
        write (the disks are read-only at the qemu level anyway). The VM's LVM
        volume groups are active only once :meth:`filesystems` has run."""
        return self._g

    # -- deadlines -----------------------------------------------------------

    def set_deadline(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def time_left(self) -> float:
        """Seconds before the running inspector's deadline."""
        return max(0.0, self._deadline - time.monotonic())

    def check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise DeadlineExceeded("inspector ran past its deadline")

    # -- discovery -----------------------------------------------------------

    def filesystems(self) -> list[Filesystem]:
        """Filesystems on this VM's disks (partitions, whole disks, logical volumes)."""
        if self._layout is None:
            self.check_deadline()
            self._layout = find_filesystems(self._g, self.devices, self._shell)
        return self._layout.filesystems

    def roots(self) -> list[Root]:
        """Operating-system roots: Linux filesystems holding /etc with an OS marker,
        and Windows system volumes.

        Likely roots are probed first, and a Linux filesystem that a found root's
        fstab mounts elsewhere (its /boot, /srv, ...) is not probed at all: each
        probe is a mount. (So a second OS that the first mounts at, say,
        /mnt/other is not reported as a root.) The last filesystem probed stays
        mounted for :meth:`mount`.
        """
        if self._roots is not None:
            return self._roots
        g = self._g
        order = {fs.device: i for i, fs in enumerate(self.filesystems())}
        candidates = sorted((fs for fs in self.filesystems()
                             if fs.type in LINUX_FS or fs.type == "ntfs"), key=_root_likelihood)
        roots: list[Root] = []
        not_roots: set[str] = set()
        for fs in candidates:
            if fs.device in not_roots:
                continue
            self.check_deadline()
            self.unmount()
            try:
                g.mount_ro(fs.device, "/")
            except RuntimeError:
                continue
            self._bare = fs.device
            if g.is_dir("/etc") and (g.is_file("/etc/os-release") or g.is_dir("/usr/bin")
                                     or g.is_file("/etc/fstab")):
                roots.append(Root(fs.device, fs.type))
                linux = {f.device for f in self.filesystems() if f.type in LINUX_FS}
                not_roots |= {dev for mountpoint, dev in self._fstab_devices(fs.device)
                              if mountpoint != "/" and dev in linux}
            elif g.is_dir("/Windows/System32"):
                roots.append(Root(fs.device, fs.type))
        self._roots = sorted(roots, key=lambda r: order[r.device])
        return self._roots

    def mount(self, root: Root | None = None) -> Root | None:
        """Mount ``root`` (default: the first) read-only at / with its fstab mounts."""
        roots = self.roots()
        if root is None:
            if not roots:
                return None
            root = roots[0]
        if self._mounted is root:
            return root
        g = self._g
        if self._bare != root.device:
            self.unmount()
            g.mount_ro(root.device, "/")
        self._bare = None
        root.mounts = {"/": root.device}
        fstab = self._fstab_devices(root.device)
        root.refused = dict(self._refused.get(root.device, {}))
        for mountpoint, dev in fstab:
            if mountpoint == "/" or dev == root.device:
                continue
            try:
                # the daemon mounts at /sysroot + mountpoint and the kernel follows
                # symlinks on the way: a guest symlink there would reach the
                # appliance's own folders. Inside the guest's tree (realpath runs
                # chrooted) the path must resolve to itself.
                try:
                    real = g.realpath(mountpoint)
                except RuntimeError:  # a dangling symlink could still lead the kernel out
                    root.refused[mountpoint] = ("does not exist in the guest (or is a "
                                                "dangling symlink)")
                    continue
                if real != mountpoint:
                    root.refused[mountpoint] = "resolves through a symlink"
                    continue
                if g.is_dir(mountpoint):
                    g.mount_ro(dev, mountpoint)
                    root.mounts[mountpoint] = dev
            except RuntimeError:
                continue
        self._mounted = root
        return root

    def mountpoint_of(self, device: str) -> str | None:
        """Where ``device`` is mounted right now, if it is."""
        if self._bare == device:
            return "/"
        if self._mounted is not None:
            for mountpoint, dev in self._mounted.mounts.items():
                if dev == device:
                    return mountpoint
        return None

    def filesystem_usage(self, device: str) -> dict[str, int]:
        """Size, used and free bytes of one of this VM's filesystems; mounts it
        alone at / (read-only) unless it is mounted already."""
        mountpoint = self.mountpoint_of(device)
        if mountpoint is None:
            self.check_deadline()
            self.unmount()
            self._g.mount_ro(device, "/")
            self._bare, mountpoint = device, "/"
        return self.usage(mountpoint)

    def fstab(self) -> list[tuple[str, str, str]]:
        """(spec, mountpoint, fstype) of the mounted root's /etc/fstab, bounded."""
        try:
            lines = self.read_lines("/etc/fstab", max_bytes=_FSTAB_MAX, max_lines=256)
        except GuestReadError:
            return []
        out = []
        for line in lines:
            line = line.split("#", 1)[0].strip()
            fields = line.split()
            if len(fields) >= 3:
                out.append((fields[0], fields[1], fields[2]))
        return out[:64]

    def _fstab_devices(self, root_device: str) -> list[tuple[str, str]]:
        """(mountpoint, device) of a root's fstab entries that name one of this VM's
        filesystems; read once per root, while that root is mounted at /."""
        if root_device not in self._fstabs:
            self._fstabs[root_device] = self.fstab()
        by_uuid = {f.uuid: f.device for f in self.filesystems() if f.uuid}
        by_label = {f.label: f.device for f in self.filesystems() if f.label}
        out = []
        for spec, raw, fstype in self._fstabs[root_device]:
            if fstype in _NOT_DISKS:
                continue
            mountpoint = safe_mountpoint(raw)
            if mountpoint is None:
                self._refused.setdefault(root_device, {})[raw[:200]] = "leaves the guest's tree"
                continue
            dev = self._resolve(spec, by_uuid, by_label)
            if dev is not None:
                out.append((mountpoint, dev))
        return out

    def _resolve(self, spec: str, by_uuid: dict[str, str], by_label: dict[str, str]) -> str | None:
        if spec.startswith("UUID="):
            return by_uuid.get(spec[5:].strip('"'))
        if spec.startswith("LABEL="):
            return by_label.get(spec[6:].strip('"'))
        m = re.fullmatch(r"/dev/mapper/([^-]+)-(.+)", spec)
        if m:
            spec = f"/dev/{m.group(1)}/{m.group(2)}"
        if any(f.device == spec for f in self.filesystems()):
            return spec
        m = re.fullmatch(r"/dev/(?:[svx]|xv)d[a-z](\d+)", spec)
        if m and self.devices:
            return f"{self.devices[0]}{m.group(1)}"
        return None

    def unmount(self) -> None:
        if self._mounted is not None or self._bare is not None:
            self._g.umount_all()
            self._mounted = self._bare = None

    def release(self) -> None:
        """Unmount and deactivate this VM's volume groups so its disks can detach."""
        self._g.umount_all()
        self._mounted = self._bare = None
        if self._layout is not None:
            deactivate(self._g, self._layout)

    # -- bounded reads -------------------------------------------------------

    def read_bytes(self, path: str, max_bytes: int = 1024 * 1024) -> bytes:
        """At most ``max_bytes`` of a regular file (symlinks followed inside the guest)."""
        self.check_deadline()
        g = self._g
        try:
            if not g.is_file(path, followsymlinks=True):
                raise GuestReadError(f"{path}: not a regular file")
            out = b""
            while len(out) < max_bytes:
                want = min(_PREAD_CHUNK, max_bytes - len(out))
                chunk = g.pread(path, want, len(out))
                out += chunk
                if len(chunk) < want:  # end of file: no extra round trip to learn it
                    break
                self.check_deadline()
            return out
        except RuntimeError as e:
            raise GuestReadError(f"{path}: {e}") from None

    def read_text(self, path: str, max_bytes: int = 1024 * 1024) -> str:
        return self.read_bytes(path, max_bytes).decode("utf-8", errors="replace")

    def read_lines(self, path: str, max_bytes: int = 1024 * 1024, max_lines: int = 100_000
                   ) -> list[str]:
        return self.read_text(path, max_bytes).splitlines()[:max_lines]

    def exists(self, path: str) -> bool:
        self.check_deadline()
        return bool(self._g.exists(path))

    def is_file(self, path: str) -> bool:
        self.check_deadline()
        return bool(self._g.is_file(path))

    def is_dir(self, path: str) -> bool:
        self.check_deadline()
        return bool(self._g.is_dir(path))

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

    def registry_value(self, hive: str, key: str, value: str,
                       max_hive_size: int = 512 * 1024 * 1024) -> str | int | bytes:
        """One value from a Windows registry hive file of the mounted guest.

        ``hive`` is a guest path such as ``/Windows/System32/config/SOFTWARE``,
        ``key`` a backslash-separated path below the hive's root (``Microsoft\\
        Windows NT\\CurrentVersion``), ``value`` the value's name. REG_SZ and
        REG_EXPAND_SZ come back as str, REG_DWORD and REG_QWORD as int, others as
        bytes. The hive is opened read-only inside the appliance.
        """
        st = self.stat(hive)
        if (st["mode"] & 0o170000) != 0o100000:
            raise GuestReadError(f"{hive}: not a regular file")
        if st["size"] > max_hive_size:
            raise GuestReadError(f"{hive}: {st['size']} bytes is over the hive size cap")
        g = self._g
        try:
            g.hivex_open(hive, write=False)
        except RuntimeError as e:
            raise GuestReadError(f"{hive}: not a readable registry hive: {e}") from None
        try:
            node = g.hivex_root()
            for part in filter(None, key.split("\\")):
                self.check_deadline()
                node = g.hivex_node_get_child(node, part)
                if not node:
                    raise GuestReadError(f"{hive}: no key {key!r}")
            handle = g.hivex_node_get_value(node, value)
            if not handle:
                raise GuestReadError(f"{hive}: key {key!r} has no value {value!r}")
            kind = g.hivex_value_type(handle)
            if kind in (1, 2):  # REG_SZ, REG_EXPAND_SZ
                return str(g.hivex_value_string(handle))
            raw = bytes(g.hivex_value_value(handle))
            if kind == 4 and len(raw) >= 4:  # REG_DWORD
                return int.from_bytes(raw[:4], "little")
            if kind == 11 and len(raw) >= 8:  # REG_QWORD
                return int.from_bytes(raw[:8], "little")
            return raw
        except RuntimeError as e:
            raise GuestReadError(f"{hive}: {e}") from None
        finally:
            g.hivex_close()

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


def safe_mountpoint(path: str) -> str | None:
    """An fstab mountpoint in canonical form, or None when it could leave the
    guest's tree: relative, ``..`` or ``.`` components, control characters, or
    longer than a path may be. (Symlinks are checked at mount time.)"""
    path = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8) & 0xFF), path)  # \040
    if not path.startswith("/") or len(path) > 4096 \
            or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    return "/" + "/".join(parts)


def _root_likelihood(fs: Filesystem) -> tuple[bool, bool, bool, int]:
    """Sort key putting likely OS roots first: not named boot/EFI, named root,
    logical volumes, later partitions (a separate /boot usually comes first)."""
    name = f"{fs.label} {fs.device.rsplit('/', 1)[-1]}".lower()
    m = re.fullmatch(r"/dev/[sv]d[a-z]+(\d*)", fs.device)
    return ("boot" in name or "efi" in name, "root" not in name, m is not None,
            -int(m.group(1) or 0) if m else 0)
