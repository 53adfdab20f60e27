"""Built-in inspectors. Each reads small guest files itself instead of calling
``inspect_os`` (10–45 s per VM under TCG, mostly Augeas and probing every
device), derives the same fields the same way (see ``_osfacts``), and stays
bounded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._api import Inspector, _flatten
from ._guest import Guest, Root, windows_systemroot
from ._layout import Filesystem
from ._osfacts import (
    INSPECT_FIELDS,
    WINDOWS_INSPECT_FIELDS,
    arch_linux,
    coreos_facts,
    hostname_linux,
    osinfo,
    package_format,
    package_management,
    release_facts,
)
from ._windows import windows_facts


class OSInspector(Inspector):
    name = "os"
    version = "2"
    description = ("Operating systems: type, distro, version, product, hostname, arch, "
                   "package manager, mountpoints (libguestfs's inspection fields)")
    deadline = 60.0

    @dataclass
    class Options:
        #: Use libguestfs's inspect_os instead (10–45 s per VM under TCG): for
        #: comparison; restricted to this VM's disks in a pooled appliance.
        full: bool = False

    @staticmethod
    def drift_keys(value: Any) -> dict[str, Any]:
        """The first root's facts (the top level, repeated as ``roots[0]``) once;
        every other root's under ``roots[DEVICE]``."""
        if not isinstance(value, dict):
            return _flatten(value)
        facts = _flatten({k: v for k, v in value.items() if k != "roots"})
        roots = value.get("roots")
        for root in roots if isinstance(roots, list) else []:
            if isinstance(root, dict) and root.get("root") != value.get("root"):
                facts |= _flatten(root, f"roots[{root.get('root')}]")
        return facts

    def run(self, guest: Guest, options: OSInspector.Options) -> Any:
        if options.full:
            return _full_inspection(guest)
        roots = [root_facts(guest, root) for root in guest.roots()]
        findings = [f.to_dict() for f in guest.findings()]
        if not roots:
            # "none" only when every disk was read; otherwise say what was not
            return {"type": "unknown" if findings else "none", "roots": [],
                    "findings": findings, "method": "cheap"}
        return {**roots[0], "roots": roots, "findings": findings, "method": "cheap"}


def root_facts(guest: Guest, root: Root) -> dict[str, Any]:
    """libguestfs's inspection fields of one root, with its filesystems mounted."""
    guest.mount(root)
    if root.kind == "windows":
        systemroot = windows_systemroot(guest) or "/Windows"
        out = windows_facts(guest, systemroot, guest.partition_ids())
    else:
        facts = coreos_facts(guest) if root.kind == "coreos" else release_facts(guest)
        distro = facts.distro or "unknown"
        major, minor = facts.version or (0, 0)
        binaries = ("/usr/bin/bash", "/usr/bin/ls", "/usr/bin/echo", "/usr/bin/rm",
                    "/usr/bin/sh") if root.kind == "coreos" else None
        out = {
            "type": "linux", "distro": distro, "product_name": facts.product_name or "unknown",
            "product_variant": "unknown", "major_version": major, "minor_version": minor,
            "version": facts.version_text or (f"{major}.{minor}" if facts.version else ""),
            "hostname": hostname_linux(guest) or "unknown",
            "arch": (arch_linux(guest, binaries) if binaries else arch_linux(guest))
            or "unknown",
            "package_format": package_format(distro),
            "package_management": package_management(guest, distro, major),
        }
    out["osinfo"] = osinfo(out)
    out = {field: out[field] for field in INSPECT_FIELDS} | out  # every field, in one order
    out["root"] = root.device
    out["mountpoints"] = dict(sorted(root.mounts.items()))
    if root.refused:
        out["refused_mountpoints"] = root.refused
    return out


def _full_inspection(guest: Guest) -> dict[str, Any]:
    """libguestfs's own inspection, limited to this VM's disks and named as the VM
    names them (a pooled appliance holds a scratch disk and maybe other VMs)."""
    g = guest.handle
    guest.filesystems()  # opens the VM's layers: inspect_os only sees open devices
    guest.unmount()
    roots = []
    for r in g.inspect_os():
        name = guest.vm_name(r)
        if name is None:
            continue
        out = {field: getattr(g, f"inspect_get_{field}")(r) for field in INSPECT_FIELDS}
        out["root"] = name
        out["mountpoints"] = dict(sorted((mp, guest.vm_name(dev) or dev) for mp, dev
                                         in g.inspect_get_mountpoints(r).items()))
        out["version"] = f"{out['major_version']}.{out['minor_version']}"
        if out["type"] == "windows":
            out |= {field: getattr(g, f"inspect_get_{field}")(r)
                    for field in WINDOWS_INSPECT_FIELDS}
            out["drive_mappings"] = {k: guest.vm_name(v) or v
                                     for k, v in sorted(out["drive_mappings"].items())}
        roots.append(out)
    findings = [f.to_dict() for f in guest.findings()]
    if not roots:
        return {"type": "unknown" if findings else "none", "roots": [], "findings": findings,
                "method": "inspect_os"}
    return {**roots[0], "roots": roots, "findings": findings, "method": "inspect_os"}


def _filesystem_facts(value: Any) -> dict[str, Any]:
    """Drift facts of the filesystems inspector, keyed by stable identity: the
    filesystem UUID (when the VM has it once), else the VM's own device name.
    Used and free move all the time and are left out."""
    fss = [f for f in value or [] if isinstance(f, dict)]
    uuids = [f.get("uuid") for f in fss]
    out = {}
    for f in fss:
        uuid = f.get("uuid")
        key = f"UUID={uuid}" if uuid and uuids.count(uuid) == 1 else str(f.get("device"))
        out[key] = {k: f.get(k) for k in ("device", "type", "uuid", "label", "size")}
    return out


class FilesystemsInspector(Inspector):
    name = "filesystems"
    version = "2"
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
        root = guest.mount()
        if root is None:
            return None
        if root.kind == "windows":
            return root_facts(guest, root)["hostname"]
        return hostname_linux(guest)

