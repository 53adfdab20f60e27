"""Windows facts from the registry, read by hivex inside the appliance.

libguestfs's ``inspect_os`` answers these from the SOFTWARE and SYSTEM hives;
here the same keys are read through the daemon's ``hivex_*`` calls (no program
started, the hive never leaves the appliance), so no ``inspect_os`` is needed:
it would also look at every disk of a pooled appliance.
"""

from __future__ import annotations

from typing import Any

from ._files import GuestReadError
from ._guest import Guest
from ._hive import MAX_APPS, MAX_TEXT, Hive, open_hive
from ._osfacts import Facts, parse_version


def _hive_path(guest: Guest, systemroot: str, name: str) -> str | None:
    try:
        path = str(guest.handle.case_sensitive_path(f"{systemroot}/system32/config/{name}"))
    except RuntimeError:
        return None
    return path if guest.is_file(path) else None


def windows_facts(guest: Guest, systemroot: str, device_names: dict[str, str]) -> dict[str, Any]:
    """libguestfs's Windows fields for the system volume mounted at /.

    ``device_names`` maps partition identities to the VM's partition names:
    ``mbr:<disk signature hex>:<byte offset>`` and ``gpt:<partition GUID>``
    (what HKLM\\SYSTEM\\MountedDevices records for each drive letter).
    """
    facts: dict[str, Any] = {
        "type": "windows", "distro": "windows", "product_name": "unknown",
        "product_variant": "unknown", "major_version": 0, "minor_version": 0, "version": "",
        "hostname": "unknown", "arch": _pe_arch(guest, systemroot) or "unknown",
        "package_format": "unknown", "package_management": "unknown",
        "windows_systemroot": systemroot, "windows_current_control_set": "unknown",
        "drive_mappings": {}, "build_id": "",
    }
    software, system = (_hive_path(guest, systemroot, "software"),
                        _hive_path(guest, systemroot, "system"))
    if software is None or system is None:
        return facts
    with open_hive(guest, software) as h:
        node = h.node("Microsoft\\Windows NT\\CurrentVersion")
        values = h.values(node) if node else {}
    if isinstance(values.get("ProductName"), str):
        facts["product_name"] = values["ProductName"]
    major, minor = values.get("CurrentMajorVersionNumber"), values.get("CurrentMinorVersionNumber")
    if isinstance(major, int) and isinstance(minor, int):
        facts["major_version"], facts["minor_version"] = major, minor
    elif isinstance(values.get("CurrentVersion"), str):
        f = Facts()
        parse_version(values["CurrentVersion"], f)
        if f.version:
            facts["major_version"], facts["minor_version"] = f.version
    facts["version"] = f"{facts['major_version']}.{facts['minor_version']}"
    if isinstance(values.get("InstallationType"), str):
        facts["product_variant"] = values["InstallationType"]
    if isinstance(values.get("CurrentBuildNumber"), str):
        facts["build_id"] = values["CurrentBuildNumber"]
    with open_hive(guest, system) as h:
        facts["drive_mappings"] = _drive_mappings(h, device_names)
        select = h.node("Select")
        current = h.values(select).get("Current") if select else None
        if isinstance(current, int):
            ccs = f"ControlSet{current:03d}"
            facts["windows_current_control_set"] = ccs
            params = h.node([ccs, "Services", "Tcpip", "Parameters"])
            hostname = h.values(params).get("Hostname") if params else None
            if isinstance(hostname, str):
                facts["hostname"] = hostname
    return facts


def _drive_mappings(h: Hive, device_names: dict[str, str]) -> dict[str, str]:
    node = h.node("MountedDevices")
    if not node:
        return {}
    out = {}
    for key, blob in h.values(node).items():
        if not (len(key) >= 14 and key[:12].lower() == "\\dosdevices\\" and key[12].isalpha()
                and key[13] == ":" and isinstance(blob, bytes)):
            continue
        if len(blob) >= 24 and blob.startswith(b"DMIO:ID:"):
            ident = "gpt:" + _guid(blob[8:24])
        elif len(blob) == 12:
            ident = f"mbr:{blob[:4][::-1].hex()}:{int.from_bytes(blob[4:12], 'little')}"
        else:
            continue
        if ident in device_names:
            out[key[12]] = device_names[ident]
    return dict(sorted(out.items()))


def _guid(raw: bytes) -> str:
    """A GUID in Microsoft's mixed-endian layout, as lowercase text."""
    return (f"{raw[3::-1].hex()}-{raw[5:3:-1].hex()}-{raw[7:5:-1].hex()}-"
            f"{raw[8:10].hex()}-{raw[10:16].hex()}")


_PE_MACHINES = {0x14C: "i386", 0x8664: "x86_64", 0xAA64: "aarch64", 0x1C4: "arm"}


def _pe_arch(guest: Guest, systemroot: str) -> str | None:
    """The architecture of system32/cmd.exe, from its PE header."""
    try:
        path = str(guest.handle.case_sensitive_path(f"{systemroot}/system32/cmd.exe"))
        head = guest.read_bytes(path, max_bytes=4096)
    except (RuntimeError, GuestReadError):
        return None
    if len(head) < 64 or head[:2] != b"MZ":
        return None
    pe = int.from_bytes(head[0x3C:0x40], "little")
    if pe + 6 > len(head) or head[pe:pe + 4] != b"PE\0\0":
        return None
    return _PE_MACHINES.get(int.from_bytes(head[pe + 4:pe + 6], "little"))


def windows_applications(guest: Guest, systemroot: str) -> list[dict[str, Any]]:
    """Installed applications from the Uninstall keys (64- and 32-bit views), as
    libguestfs lists them: the key name, DisplayName, DisplayVersion, Publisher,
    InstallLocation."""
    software = _hive_path(guest, systemroot, "software")
    if software is None:
        return []
    apps = []
    with open_hive(guest, software) as h:
        for path in ("Microsoft\\Windows\\CurrentVersion\\Uninstall",
                     "WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall"):
            node = h.node(path)
            if not node:
                continue
            for name, child in h.children(node):
                guest.check_deadline()
                v = h.values(child)

                def text(key: str, values: dict[str, Any] = v) -> str:
                    value = values.get(key)
                    return value if isinstance(value, str) else ""

                apps.append({"name": name[:MAX_TEXT], "display_name": text("DisplayName"),
                             "epoch": None, "version": text("DisplayVersion"), "release": "",
                             "arch": "", "publisher": text("Publisher"),
                             "install_path": text("InstallLocation")})
    return apps[:MAX_APPS]
