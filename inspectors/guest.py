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

from guestpool.errors import InspectorError

LINUX_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs")
_FSTAB_MAX = 64 * 1024
_PREAD_CHUNK = 1024 * 1024


class DeadlineExceeded(InspectorError):
    """The inspector ran past its own deadline."""


class GuestReadError(InspectorError):
    """A path in the guest could not be read (missing, not a file, refused)."""


@dataclass
class Filesystem:
    device: str
    type: str
    uuid: str = ""
    label: str = ""


@dataclass
class Root:
    """An operating system root found on the VM's disks."""

    device: str
    type: str
    #: mountpoint -> device, as mounted for this job (read-only).
    mounts: dict[str, str] = field(default_factory=dict)


class Guest:
    """Read-only access to one VM's disks inside a booted appliance.

    ``devices`` are the appliance device names of this VM's disks, in the VM's
    order. Mounts are made once per VM and shared by every inspector of the job.
    """

    def __init__(self, handle: Any, vm: str, devices: list[str]) -> None:
        self._g = handle
        self.vm = vm
        self.devices = list(devices)
        self._deadline = float("inf")
        self._filesystems: list[Filesystem] | None = None
        self._roots: list[Root] | None = None
        self._mounted: Root | None = None
        #: a root left mounted alone at / by roots(), without its fstab mounts yet
        self._bare_root: str | None = None
        self._vgs: list[str] = []

    # -- expert escape hatch -------------------------------------------------

    @property
    def handle(self) -> Any:
        """The raw ``guestfs.GuestFS`` handle. For experts: it bypasses every bound,
        sees other VMs' disks when several are attached, and must not be used to
        write (the disks are read-only at the qemu level anyway)."""
        return self._g

    # -- deadlines -----------------------------------------------------------

    def set_deadline(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise DeadlineExceeded("inspector ran past its deadline")

    # -- discovery -----------------------------------------------------------

    def filesystems(self) -> list[Filesystem]:
        """Filesystems on this VM's disks (partitions, whole disks, logical volumes)."""
        if self._filesystems is not None:
            return self._filesystems
        g = self._g
        parts = [p for p in device_listing(g.list_partitions) if self._owns(p)]
        with_parts = {d for d in self.devices for p in parts if _part_of(p, d)}
        candidates = parts + [d for d in self.devices if d not in with_parts]
        found: list[Filesystem] = []
        pv_uuids: set[str] = set()
        for dev in candidates:
            fs = self._probe(dev)
            if fs is not None and fs.type == "LVM2_member":
                pv_uuids.add(_safe(g.pvuuid, dev) or "")
            elif fs is not None:
                found.append(fs)
        if pv_uuids:
            g.lvm_scan(True)
            for vg in g.vgs():
                if set(g.vgpvuuids(vg)) & pv_uuids:
                    self._vgs.append(vg)
                    for lv in g.lvs():
                        if lv.startswith(f"/dev/{vg}/"):
                            fs = self._probe(lv)
                            if fs is not None and fs.type != "swap":
                                found.append(fs)
        self._filesystems = found
        return found

    def _owns(self, part: str) -> bool:
        return any(_part_of(part, d) for d in self.devices)

    def _probe(self, dev: str) -> Filesystem | None:
        """Type, UUID and label in one appliance round trip (blkid), not three."""
        self.check_deadline()
        info = _safe(self._g.blkid, dev)
        if not info or not info.get("TYPE"):
            return None
        return Filesystem(dev, str(info["TYPE"]), str(info.get("UUID", "")),
                          str(info.get("LABEL", "")))

    def roots(self) -> list[Root]:
        """Operating-system roots: Linux filesystems holding /etc with an OS marker."""
        if self._roots is not None:
            return self._roots
        g = self._g
        self.unmount()
        roots = []
        candidates = [fs for fs in self.filesystems() if fs.type in LINUX_FS or fs.type == "ntfs"]
        for i, fs in enumerate(candidates):
            self.check_deadline()
            try:
                g.mount_ro(fs.device, "/")
            except RuntimeError:
                continue
            keep = False
            try:
                linux = g.is_dir("/etc") and (g.is_file("/etc/os-release")
                                              or g.is_dir("/usr/bin") or g.is_file("/etc/fstab"))
                if linux or g.is_dir("/Windows/System32"):
                    roots.append(Root(fs.device, fs.type))
                    # the last candidate and the only root: mount() can use it as it is
                    keep = i == len(candidates) - 1 and len(roots) == 1
            finally:
                if keep:
                    self._bare_root = fs.device
                else:
                    g.umount_all()
        self._roots = roots
        return roots

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
        if self._bare_root != root.device:
            self.unmount()
            g.mount_ro(root.device, "/")
        self._bare_root = None
        root.mounts = {"/": root.device}
        by_uuid = {f.uuid: f.device for f in self.filesystems() if f.uuid}
        by_label = {f.label: f.device for f in self.filesystems() if f.label}
        for spec, mountpoint, fstype in self.fstab():
            skip = fstype in ("swap", "proc", "sysfs", "tmpfs", "devpts")
            if mountpoint == "/" or not mountpoint.startswith("/") or skip:
                continue
            dev = self._resolve(spec, by_uuid, by_label)
            if dev is None or dev == root.device:
                continue
            try:
                if g.is_dir(mountpoint):
                    g.mount_ro(dev, mountpoint)
                    root.mounts[mountpoint] = dev
            except RuntimeError:
                continue
        self._mounted = root
        return root

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
        if self._mounted is not None or self._bare_root is not None:
            self._g.umount_all()
            self._mounted = self._bare_root = None

    def release(self) -> None:
        """Unmount and deactivate this VM's volume groups so its disks can detach."""
        self._g.umount_all()
        self._mounted = self._bare_root = None
        if self._vgs:
            self._g.vg_activate(False, self._vgs)

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


def device_listing(fn: Any, tries: int = 30) -> Any:
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


def _part_of(part: str, device: str) -> bool:
    return part.startswith(device) and part[len(device):].isdigit()


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except RuntimeError:
        return None
