"""Built-in inspectors. Each reads small guest files itself instead of calling
``inspect_os`` (10–14 s per VM under TCG, mostly Augeas), and stays bounded."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ._api import Inspector
from ._guest import Filesystem, Guest, GuestReadError

_ELF_MACHINES = {3: "i386", 62: "x86_64", 40: "arm", 183: "aarch64", 243: "riscv64",
                 21: "ppc64", 22: "s390x"}
# os-release IDs to the distro names libguestfs's inspect_os reports, so the cheap
# path and the full inspection give the same answers.
LIBGUESTFS_DISTRO = {
    "alpine": "alpinelinux", "arch": "archlinux", "kali": "kalilinux", "void": "voidlinux",
    "opensuse-leap": "opensuse", "opensuse-tumbleweed": "opensuse", "sled": "sles",
    "ol": "oraclelinux", "almalinux": "redhat-based", "rocky": "rocky", "rhel": "rhel",
}
_PACKAGE_FORMATS = {
    "debian": ("deb", "apt"), "ubuntu": ("deb", "apt"),
    "fedora": ("rpm", "dnf"), "rhel": ("rpm", "dnf"), "centos": ("rpm", "dnf"),
    "rocky": ("rpm", "dnf"), "almalinux": ("rpm", "dnf"), "opensuse-leap": ("rpm", "zypper"),
    "alpine": ("apk", "apk"),
}


class OSInspector(Inspector):
    name = "os"
    version = "1"
    description = "Operating system: type, distro, version, hostname, arch, package manager"
    deadline = 60.0

    @dataclass
    class Options:
        #: Fall back to libguestfs's full inspect_os when the cheap path cannot decide.
        fallback: bool = True
        #: Always use full inspect_os (10–14 s per VM under TCG): for comparison.
        full: bool = False

    def run(self, guest: Guest, options: OSInspector.Options) -> Any:
        if options.full:
            return _full_inspection(guest, "")
        root = guest.mount()
        if root is None:
            return {"type": "none", "roots": 0}
        rel = guest.os_release()
        if not rel:
            if options.fallback:
                return _full_inspection(guest, root.device)
            return {"type": "unknown", "root": root.device}
        distro = rel.get("ID", "unknown")
        fmt, mgr = _PACKAGE_FORMATS.get(distro, ("unknown", "unknown"))
        return {
            "type": "linux",
            "distro": LIBGUESTFS_DISTRO.get(distro, distro),
            "version": rel.get("VERSION_ID", ""),
            "product_name": rel.get("PRETTY_NAME", rel.get("NAME", "")),
            "hostname": _hostname(guest),
            "arch": _arch(guest),
            "package_format": fmt,
            "package_manager": mgr,
            "root": root.device,
            "mountpoints": dict(sorted(root.mounts.items())),
            "method": "cheap",
        } | ({"refused_mountpoints": root.refused} if root.refused else {})


def _hostname(guest: Guest) -> str:
    for path in ("/etc/hostname", "/etc/HOSTNAME"):
        try:
            for line in guest.read_lines(path, max_bytes=4096, max_lines=5):
                if line.strip() and not line.startswith("#"):
                    return line.strip()[:255]
        except GuestReadError:
            continue
    return ""


def _arch(guest: Guest) -> str:
    for path in ("/bin/sh", "/usr/bin/sh", "/bin/ls", "/usr/bin/ls", "/bin/busybox"):
        try:
            head = guest.read_bytes(path, max_bytes=20)
        except GuestReadError:
            continue
        if len(head) == 20 and head[:4] == b"\x7fELF":
            endian = "<" if head[5] == 1 else ">"
            (machine,) = struct.unpack(endian + "H", head[18:20])
            return _ELF_MACHINES.get(machine, f"elf-{machine}")
    return "unknown"


def _full_inspection(guest: Guest, device: str) -> dict[str, Any]:
    g = guest.handle
    guest.filesystems()  # activates the VM's volume groups: inspect_os only sees active LVs
    guest.unmount()
    roots = g.inspect_os()
    if not roots:
        return {"type": "unknown", "root": device, "method": "inspect_os"}
    r = roots[0]
    return {
        "type": g.inspect_get_type(r),
        "distro": g.inspect_get_distro(r),
        "version": f"{g.inspect_get_major_version(r)}.{g.inspect_get_minor_version(r)}",
        "product_name": g.inspect_get_product_name(r),
        "hostname": g.inspect_get_hostname(r),
        "arch": g.inspect_get_arch(r),
        "package_format": g.inspect_get_package_format(r),
        "package_manager": g.inspect_get_package_management(r),
        "root": r,
        "mountpoints": dict(sorted(g.inspect_get_mountpoints(r).items())),
        "method": "inspect_os",
    }


def _filesystem_facts(value: Any) -> dict[str, Any]:
    """Drift facts of the filesystems inspector: used and free move all the time."""
    return {f["device"]: {k: f.get(k) for k in ("type", "uuid", "label", "size")}
            for f in value or []}


class FilesystemsInspector(Inspector):
    name = "filesystems"
    version = "1"
    description = "Filesystems on the VM's disks: device, type, UUID, label, size, used, free"
    drift_noun = "filesystem"
    drift_keys = staticmethod(_filesystem_facts)

    def run(self, guest: Guest, options: Inspector.Options) -> Any:
        # what is mounted already (the OS root and its fstab mounts, or the last
        # root candidate probed) is measured where it is, the rest one at a time
        def unmounted(fs: Filesystem) -> bool:
            return guest.mountpoint_of(fs.device) is None

        out: dict[str, dict[str, Any]] = {}
        for fs in sorted(guest.filesystems(), key=unmounted):
            entry = out[fs.device] = {"device": fs.device, "type": fs.type, "uuid": fs.uuid,
                                      "label": fs.label}
            if fs.type == "swap":
                continue
            try:
                entry.update(guest.filesystem_usage(fs.device))
            except RuntimeError as e:
                entry["error"] = str(e)[:200]
        return [out[fs.device] for fs in guest.filesystems()]


class HostnameInspector(Inspector):
    name = "hostname"
    version = "1"
    description = "The guest's hostname only: the lightest useful inspector"

    def run(self, guest: Guest, options: Inspector.Options) -> Any:
        return _hostname(guest) if guest.mount() else None

