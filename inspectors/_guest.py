"""The guest facade inspectors see: read-only, bounded, with a deadline.

It lives inside the appliance worker, next to the ``guestfs`` handle. Every
read is capped in size, every listing in count, and every call checks the
inspector's deadline, because all guest data is hostile.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._devices import deactivate, deactivate_script, find_filesystems
from ._files import DeadlineExceeded, GuestFiles, GuestReadError
from ._hive import open_hive
from ._layout import Filesystem, Finding, Layout, api_device
from ._mount_scripts import (
    _MOUNT_FN,
    _UNMOUNT_ALL,
    UNMOUNT_SYSROOT,
    _appliance_device,
    _mount_call,
    _mount_results,
    _safe_subvolume,
    safe_mountpoint,
)
from ._shell import PRINT_MOUNTS, outside_sysroot, shell_lines
from ._specs import LuksKey

__all__ = ["DeadlineExceeded", "Filesystem", "Finding", "Guest", "GuestReadError", "Root"]

LINUX_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs")
WINDOWS_FS = ("ntfs",)
_NOT_DISKS = ("swap", "proc", "sysfs", "tmpfs", "devpts")
_FSTAB_MAX = 64 * 1024


@dataclass
class Root:
    """An operating system root found on the VM's disks."""

    #: the VM's name for the root filesystem (``btrfsvol:/dev/sda2/root`` for a
    #: btrfs subvolume, libguestfs's convention)
    device: str
    type: str
    #: linux, coreos (no fstab: its /usr is found by probing) or windows
    kind: str = "linux"
    #: mountpoint -> device, as mounted for this job (read-only).
    mounts: dict[str, str] = field(default_factory=dict)
    #: fstab mountpoints refused because they would leave the guest's tree
    #: (``..``, relative, or through a symlink), with the reason
    refused: dict[str, str] = field(default_factory=dict)
    fs: Filesystem | None = field(default=None, repr=False, compare=False)


class Guest(GuestFiles):
    """Read-only access to one VM's disks inside a booted appliance.

    ``devices`` are the appliance device names of this VM's disks, in the VM's
    order; every name an inspector sees is the VM's own (``/dev/sda1``), never
    the appliance's. Mounts are made once per VM and shared by every inspector
    of the job: every mount costs 0.1–0.5 s under TCG, so a filesystem already
    mounted by an earlier step is reused rather than mounted again.
    """

    def __init__(self, handle: Any, vm: str, devices: list[str], *, shell: bool = True,
                 keys: Sequence[LuksKey] = (), api_names: Mapping[str, str] | None = None
                 ) -> None:
        super().__init__(handle)
        self.vm = vm
        self.devices = list(devices)
        #: kernel disk -> libguestfs API disk, for an appliance launched with the
        #: VM's disks (see :func:`api_device`); empty for hot-plugged disks
        self._api_names = dict(api_names or {})
        self._shell = shell
        self._keys = tuple(keys)
        self._layout: Layout | None = None
        self._roots: list[Root] | None = None
        #: filesystems that look like a separate /usr (CoreOS keeps its OS there)
        self._usr: list[Filesystem] = []
        #: a root mounted at / with its fstab mounts
        self._mounted: Root | None = None
        #: a filesystem mounted alone at / (a probed root candidate, or one measured)
        self._bare: str | None = None
        #: the one mounted as a root probe mounts it (a btrfs at its top level)
        self._probed: str | None = None
        #: /sysroot may hold a mount not tracked above (a shell round trip that
        #: failed midway): the next fresh mount unmounts everything first
        self._unsure = False
        self._fstabs: dict[str, list[tuple[str, str, str, str]]] = {}
        #: per root: fstab mountpoints refused, with the reason
        self._refused: dict[str, dict[str, str]] = {}
        self._findings: list[Finding] = []
        #: the appliance's mount table outside /sysroot, read by :meth:`release`
        #: (None: not read)
        self.appliance_mounts: frozenset[str] | None = None

    # -- deadlines -----------------------------------------------------------

    # -- discovery -----------------------------------------------------------

    def filesystems(self) -> list[Filesystem]:
        """Filesystems on this VM's disks (partitions, whole disks, md arrays, opened
        LUKS devices, logical volumes), named as the VM names them."""
        return self._discovered().filesystems

    def _discovered(self) -> Layout:
        if self._layout is None:
            self.check_deadline()
            with self._step("discover"):
                unsure, self._unsure = self._unsure, self._unsure or self._shell  # may mount
                self._layout = find_filesystems(self._g, self.devices, self._shell, self._keys,
                                                self._api_names, premount=self._shell)
            mounted = self._layout.mounted
            premounted = [fs for fs in self._layout.filesystems if mounted and fs.path == mounted]
            if premounted:  # mounted as the first root probe would mount it
                self._bare = self._probed = premounted[0].device
            self._unsure = unsure or (bool(mounted) and not premounted)
        return self._layout

    def findings(self) -> list[Finding]:
        """What could not be read on the VM's disks, and why (a LUKS device without
        its key, an md member without its partner, an unsupported filesystem)."""
        self.roots()
        return [*self._discovered().findings, *self._findings, *self.unreadable.values()]

    def partition_ids(self) -> dict[str, str]:
        """Partition identities (``mbr:<signature>:<offset>``, ``gpt:<GUID>``) to
        the VM's partition names: how Windows's registry names its drives."""
        return self._discovered().partition_ids

    def vm_name(self, appliance_device: str) -> str | None:
        """The VM's name for an appliance device of this VM (None: not this VM's)."""
        layout = self._discovered()
        if appliance_device in layout.names:
            return layout.names[appliance_device]
        m = re.fullmatch(r"btrfsvol:(/dev/[^/]+)/(.+)", appliance_device)
        if m and m.group(1) in layout.names:
            return f"btrfsvol:{layout.names[m.group(1)]}/{m.group(2)}"
        return None

    def _filesystem(self, device: str) -> Filesystem | None:
        """One of this VM's filesystems by its VM name (a btrfs subvolume too)."""
        for fs in self.filesystems():
            if fs.device == device:
                return fs
        for root in self._roots or []:
            if root.device == device:
                return root.fs
        return None

    def roots(self) -> list[Root]:
        """Operating-system roots: Linux filesystems (or btrfs subvolumes) holding
        /etc with an OS marker, CoreOS roots, and Windows system volumes.

        Likely roots are probed first, and a Linux filesystem that a found root's
        fstab mounts elsewhere (its /boot, /srv, ...) is not probed at all: each
        probe is a mount. (So a second OS that the first mounts at, say,
        /mnt/other is not reported as a root.) The last filesystem probed stays
        mounted for :meth:`mount`.
        """
        if self._roots is not None:
            return self._roots
        self._discovered()
        with self._step("probe"):
            return self._find_roots()

    def _find_roots(self) -> list[Root]:
        order = {fs.path: i for i, fs in enumerate(self.filesystems())}
        candidates = sorted((fs for fs in self.filesystems()
                             if fs.type in LINUX_FS or fs.type in WINDOWS_FS),
                            key=_root_likelihood)
        roots: list[Root] = []
        not_roots: set[str] = set()
        for fs in candidates:
            if fs.device in not_roots:
                continue
            self.check_deadline()
            if self._probed != fs.device or self._bare != fs.device:
                try:
                    self._mount(fs, "/", top=True, fresh=True)
                except RuntimeError as e:
                    self._findings.append(Finding(fs.device, "unreadable",
                                                  f"{fs.type} does not mount: {_short(e)}"))
                    continue
            self._bare = self._probed = fs.device
            found = self._probe(fs)
            roots += found
            for root in found:
                if root.kind != "windows" and root.fs is not None:
                    linux = {f.device for f in self.filesystems() if f.type in LINUX_FS}
                    prefix = f"/{root.fs.subvol}" if root.fs.subvol else ""
                    not_roots |= {f.device for mountpoint, f in self._fstab_devices(root, prefix)
                                  if mountpoint != "/" and f.device in linux}
        self._roots = sorted(roots, key=lambda r: (order.get(r.fs.path if r.fs else "", 0),
                                                   r.device))
        return self._roots

    def _probe(self, fs: Filesystem) -> list[Root]:
        """The roots on ``fs``, mounted alone at / (a btrfs one at its top level)."""
        g = self._g
        if fs.type in WINDOWS_FS:
            return [Root(fs.device, fs.type, "windows", fs=fs)] if windows_systemroot(self) \
                else []
        kind = self._linux_kind("")
        if kind == "usr":
            self._usr.append(fs)
        elif kind is not None:
            return [Root(fs.device, fs.type, kind, fs=fs)]
        if fs.type != "btrfs":
            return []
        try:
            subvolumes = g.btrfs_subvolume_list("/")
        except RuntimeError:
            return []
        roots = []
        for sv in subvolumes[:256]:
            path = str(sv.get("btrfssubvolume_path", "")).strip("/")
            if not _safe_subvolume(path):
                continue
            kind = self._linux_kind("/" + path)
            if kind in ("linux", "coreos"):
                sub = Filesystem(f"btrfsvol:{fs.device}/{path}", fs.type, fs.uuid, fs.label,
                                 fs.path, path)
                roots.append(Root(sub.device, sub.type, kind, fs=sub))
        return roots

    def _linux_kind(self, prefix: str) -> str | None:
        """What the folder ``prefix`` (of the filesystem mounted at /) looks like:
        a Linux root, a CoreOS root, a separate /usr, or nothing (libguestfs's tests,
        plus an os-release or /usr/bin for roots without /etc/hosts and fstab)."""
        p = prefix
        k = self.kinds([f"{p}/etc", f"{p}/bin", f"{p}/usr", f"{p}/share", f"{p}/local"],
                       follow=False)
        if k[f"{p}/etc"] == "dir":
            e = self.kinds([f"{p}/etc/fstab", f"{p}/etc/hosts", f"{p}/etc/os-release",
                            f"{p}/etc/coreos/update.conf", f"{p}/usr/bin"])
            bin_ok = k[f"{p}/bin"] == "dir" or (k[f"{p}/bin"] == "link"
                                                 and _symlink_to(self._g, f"{p}/bin", "usr/bin"))
            if bin_ok and "file" in (e[f"{p}/etc/fstab"], e[f"{p}/etc/hosts"]):
                return "linux"
            if e[f"{p}/etc/coreos/update.conf"] == "file" and k[f"{p}/usr"] == "dir":
                return "coreos"
            if e[f"{p}/etc/os-release"] == "file" or e[f"{p}/usr/bin"] == "dir":
                return "linux"
        if k[f"{p}/bin"] == "dir" and k[f"{p}/share"] == "dir" and k[f"{p}/local"] == "dir":
            return "usr"
        return None

    def mount(self, root: Root | None = None) -> Root | None:
        """Mount ``root`` (default: the first) read-only at / with its fstab mounts
        (a CoreOS root, which has no fstab, with the VM's /usr filesystem)."""
        roots = self.roots()
        if root is None:
            if not roots:
                return None
            root = roots[0]
        if self._mounted is root:
            return root
        with self._step("mount"):
            return self._mount_root(root)

    def _mount_root(self, root: Root) -> Root:
        assert root.fs is not None
        if self._bare != root.device or root.fs.subvol:
            self._mount(root.fs, "/", fresh=True)
        self._bare = self._probed = None
        root.mounts = {"/": root.device}
        fstab = self._fstab_devices(root)
        if root.kind == "coreos" and self._usr:
            fstab.append(("/usr", self._usr[0]))
        root.refused = dict(self._refused.get(root.device, {}))
        # checked one by one, mounted together (one round trip) until a mountpoint
        # lies inside one not mounted yet: its check must see that filesystem
        pending: list[tuple[Filesystem, str]] = []
        for mountpoint, fs in fstab:
            if mountpoint == "/" or fs.device == root.device or mountpoint in root.mounts \
                    or any(mp == mountpoint for _, mp in pending):
                continue
            if any(mountpoint.startswith(mp + "/") for _, mp in pending):
                self._mount_pending(root, pending)
            try:
                # the daemon mounts at /sysroot + mountpoint and the kernel follows
                # symlinks on the way: a guest symlink there would reach the
                # appliance's own folders. Inside the guest's tree (realpath runs
                # chrooted) the path must resolve to itself.
                try:
                    real = self._g.realpath(mountpoint)
                except RuntimeError:  # a dangling symlink could still lead the kernel out
                    root.refused[mountpoint] = ("does not exist in the guest (or is a "
                                                "dangling symlink)")
                    continue
                if real != mountpoint:
                    root.refused[mountpoint] = "resolves through a symlink"
                    continue
                if self._g.is_dir(mountpoint):
                    pending.append((fs, mountpoint))
            except RuntimeError:
                continue
        self._mount_pending(root, pending)
        self._mounted = root
        return root

    def _mount_pending(self, root: Root, pending: list[tuple[Filesystem, str]]) -> None:
        """Mount the checked fstab entries; those that do not mount are left out."""
        try:
            failed = self._mount_many(pending)
        except RuntimeError as e:  # the round trip failed: none of them counts
            failed = {mountpoint: str(e) for _, mountpoint in pending}
        for fs, mountpoint in pending:
            if mountpoint not in failed:
                root.mounts[mountpoint] = fs.device
        pending.clear()

    def _mount(self, fs: Filesystem, mountpoint: str, top: bool = False,
               fresh: bool = False) -> None:
        """Mount one filesystem read-only (``fresh``: after unmounting everything);
        RuntimeError with mount's message if it does not mount."""
        failed = self._mount_many([(fs, mountpoint)], top, fresh)
        if failed:
            raise RuntimeError(failed[mountpoint])

    def _mount_many(self, entries: Sequence[tuple[Filesystem, str]], top: bool = False,
                    fresh: bool = False) -> dict[str, str]:
        """Mount each (filesystem, mountpoint) read-only, in order (``fresh``: after
        unmounting everything); mount's message for each mountpoint that failed.

        A btrfs subvolume is mounted by its path, a whole btrfs at its top level
        when probing (``top``), so every subvolume is in view. The type udev saw is
        named, so ``mount`` does not probe the device (~50 ms under TCG); NTFS, and
        anything whose named type fails, go through the probing mount.

        With the shell, all of them are one round trip: a mount through the API
        first runs ``udevadm settle`` (the daemon's check that the device is not
        its own root), a program as costly as ``mount`` itself under TCG; our
        devices are the VM's, found by discovery, so that check cannot matter.
        """
        if not self._shell:
            if fresh:
                self.unmount()
            return self._api_mounts([_mount_call(fs, mp, top) for fs, mp in entries])
        failed = {mp: f"not an appliance device: {fs.path!r}" for fs, mp in entries
                  if not _appliance_device(fs.path)}
        calls = [_mount_call(fs, mp, top) for fs, mp in entries if mp not in failed]
        busy = self._mounted is not None or self._bare is not None or self._unsure
        unmounting = fresh and busy
        if not calls and not unmounting:
            return failed
        lines = [_MOUNT_FN, _UNMOUNT_ALL if unmounting else ""]
        for i, (vfstype, options, fs, mountpoint) in enumerate(calls):
            lines.append("m " + " ".join(shlex.quote(a) for a in (
                str(i), vfstype, options, fs.path, "/sysroot" + mountpoint.rstrip("/") + "/"))
                + "\n")
        self._unsure = True  # until the script has answered
        out = str(self._g.debug("sh", ["".join(lines) + "exit 0\n"]))
        if "BUSY=1" in shell_lines(out):
            raise RuntimeError(f"{self.vm}'s filesystems could not be unmounted from /sysroot")
        if fresh:
            self._mounted = self._bare = self._probed = None
        self._unsure = False
        return failed | _mount_results(out, [mountpoint for _, _, _, mountpoint in calls])

    def _api_mounts(self, calls: list[tuple[str, str, Filesystem, str]]) -> dict[str, str]:
        failed = {}
        for vfstype, options, fs, mountpoint in calls:
            path = api_device(fs.path, self._api_names)
            try:
                if vfstype:
                    try:
                        self._g.mount_vfs(options, vfstype, path, mountpoint)
                        continue
                    except RuntimeError:  # the type udev saw was not the whole story
                        pass
                self._g.mount_options(options, path, mountpoint)
            except RuntimeError as e:
                failed[mountpoint] = str(e)
        return failed

    def mountpoint_of(self, device: str) -> str | None:
        """Where ``device`` (the VM's name) is mounted right now, if it is."""
        if self._bare == device:
            return "/"
        if self._mounted is not None:
            for mountpoint, dev in self._mounted.mounts.items():
                if dev == device:
                    return mountpoint
        return None

    def filesystem_usage(self, device: str) -> dict[str, int]:
        """Size, used and free bytes of one of this VM's filesystems (by the VM's
        name); mounts it alone at / (read-only) unless it is mounted already."""
        mountpoint = self.mountpoint_of(device)
        if mountpoint is None:
            fs = self._filesystem(device)
            if fs is None:
                raise GuestReadError(f"{device}: not a filesystem of {self.vm}")
            self.check_deadline()
            self._mount(fs, "/", fresh=True)
            self._bare, mountpoint = device, "/"
        return self.usage(mountpoint)

    def fstab(self) -> list[tuple[str, str, str]]:
        """(spec, mountpoint, fstype) of the mounted root's /etc/fstab, bounded."""
        return [entry[:3] for entry in self._fstab_entries()]

    def _fstab_entries(self, prefix: str = "") -> list[tuple[str, str, str, str]]:
        try:
            lines = self.read_lines(f"{prefix}/etc/fstab", max_bytes=_FSTAB_MAX, max_lines=256)
        except GuestReadError:
            return []
        out = []
        for line in lines:
            line = line.split("#", 1)[0].strip()
            fields = line.split()
            if len(fields) >= 3:
                out.append((fields[0], fields[1], fields[2],
                            fields[3] if len(fields) > 3 else ""))
        return out[:64]

    def _fstab_devices(self, root: Root, prefix: str = "") -> list[tuple[str, Filesystem]]:
        """(mountpoint, filesystem) of a root's fstab entries that name one of this
        VM's filesystems; read once per root, while that root is mounted at /
        (a btrfs subvolume root: while its filesystem's top level is, at ``prefix``)."""
        if root.device not in self._fstabs:
            self._fstabs[root.device] = self._fstab_entries(prefix)
        out = []
        for spec, raw, fstype, options in self._fstabs[root.device]:
            if fstype in _NOT_DISKS:
                continue
            mountpoint = safe_mountpoint(raw)
            if mountpoint is None:
                self._refused.setdefault(root.device, {})[raw[:200]] = "leaves the guest's tree"
                continue
            fs = self._resolve(spec)
            if fs is None:
                continue
            subvol = next((o[7:].strip("/") for o in options.split(",")
                           if o.startswith("subvol=")), "")
            if subvol and fs.type == "btrfs":
                if not _safe_subvolume(subvol):
                    self._refused.setdefault(root.device, {})[mountpoint] = \
                        "names a btrfs subvolume that is not a plain path"
                    continue
                fs = Filesystem(f"btrfsvol:{fs.device}/{subvol}", fs.type, fs.uuid, fs.label,
                                fs.path, subvol)
            out.append((mountpoint, fs))
        return out

    def _resolve(self, spec: str) -> Filesystem | None:
        """The filesystem an fstab spec names: UUID=, LABEL=, /dev/disk/by-*,
        /dev/mapper/VG-LV, or a device name (/dev/vdb1 is the VM's /dev/sdb1)."""
        fss = self.filesystems()
        for prefix, attr in (("UUID=", "uuid"), ("LABEL=", "label"),
                             ("/dev/disk/by-uuid/", "uuid"), ("/dev/disk/by-label/", "label")):
            if spec.startswith(prefix):
                want = spec[len(prefix):].strip('"')
                return next((f for f in fss if getattr(f, attr) == want), None)
        m = re.fullmatch(r"/dev/mapper/([^-]+)-(.+)", spec)
        if m and not spec.startswith("/dev/mapper/luks-"):
            spec = f"/dev/{m.group(1)}/{m.group(2)}".replace("--", "-")
        m = re.fullmatch(r"/dev/(?:[svh]|xv)d([a-z]+\d*)", spec)
        if m:
            spec = f"/dev/sd{m.group(1)}"
        return next((f for f in fss if f.device == spec), None)

    def unmount(self) -> None:
        if self._mounted is not None or self._bare is not None or self._unsure:
            self._g.umount_all()
            self._mounted = self._bare = self._probed = None
            self._unsure = False

    def release(self) -> None:
        """Unmount and close what was opened on this VM's disks (volume groups, LUKS
        devices, md arrays) so they can detach. With the shell this is one round
        trip, which also reads back the appliance's mount table for the worker's
        integrity check (:attr:`appliance_mounts`)."""
        with self._step("release"):
            self._mounted = self._bare = self._probed = None
            self._unsure = False
            layout = self._layout
            closing = deactivate_script(layout) if layout is not None else ""
            if not self._shell or (layout is not None and layout.volume_groups
                                   and not layout.lvm_devices):  # stable API's LVM
                self._g.umount_all()
                if layout is not None:
                    deactivate(self._g, layout)
                if not self._shell:
                    return
                closing = ""
            script = UNMOUNT_SYSROOT + closing + PRINT_MOUNTS
            table = str(self._g.debug("sh", [script]))
            if any(f[1] == "/sysroot" or f[1].startswith("/sysroot/")
                   for f in (line.split() for line in shell_lines(table)) if len(f) >= 2):
                raise Unreleasable(f"{self.vm}'s filesystems are still mounted after "
                                   "release")
            self.appliance_mounts = outside_sysroot(table)

    # -- bounded reads -------------------------------------------------------

    def registry_value(self, hive: str, key: str, value: str,
                       max_hive_size: int = 512 * 1024 * 1024) -> Any:
        """One value from a Windows registry hive file of the mounted guest.

        ``hive`` is a guest path such as ``/Windows/System32/config/SOFTWARE``,
        ``key`` a backslash-separated path below the hive's root (``Microsoft\\
        Windows NT\\CurrentVersion``), ``value`` the value's name. REG_SZ and
        REG_EXPAND_SZ come back as str, REG_DWORD and REG_QWORD as int, REG_MULTI_SZ
        as a list of str, others as bytes. The hive is opened read-only inside the
        appliance.
        """
        with open_hive(self, hive, max_hive_size) as h:
            node = h.node(key)
            if not node:
                raise GuestReadError(f"{hive}: no key {key!r}")
            handle = self._g.hivex_node_get_value(node, value)
            if not handle:
                raise GuestReadError(f"{hive}: key {key!r} has no value {value!r}")
            return h.value(handle)


class Unreleasable(RuntimeError):
    """A VM's mounts outlived its release: whatever the guest did, the appliance is
    no longer known clean (the worker reports it ``hostile``)."""


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def _symlink_to(g: Any, path: str, target: str) -> bool:
    """Whether ``path`` (known to be a symlink) points at ``target``."""
    try:
        return bool(g.readlink(path) == target)
    except RuntimeError:
        return False


def windows_systemroot(guest: Guest) -> str | None:
    """The Windows system folder of the filesystem mounted at / (``/Windows``,
    in its real case), as libguestfs finds it: system32 with config and cmd.exe."""
    g = guest.handle
    for name in ("/windows", "/winnt", "/win32", "/win"):
        guest.check_deadline()
        try:
            root = str(g.case_sensitive_path(name))
            if not g.is_dir(root):
                continue
            s32 = str(g.case_sensitive_path(root + "/system32"))
            if g.is_dir(s32) and g.is_dir(str(g.case_sensitive_path(s32 + "/config"))) \
                    and g.is_file(str(g.case_sensitive_path(s32 + "/cmd.exe"))):
                return root
        except RuntimeError:
            continue
    return None


def _root_likelihood(fs: Filesystem) -> tuple[bool, bool, bool, int]:
    """Sort key putting likely OS roots first: not named boot/EFI, named root,
    logical volumes, later partitions (a separate /boot usually comes first)."""
    name = f"{fs.label} {fs.device.rsplit('/', 1)[-1]}".lower()
    m = re.fullmatch(r"/dev/[sv]d[a-z]+(\d*)", fs.device)
    return ("boot" in name or "efi" in name, "root" not in name, m is not None,
            -int(m.group(1) or 0) if m else 0)
