"""Windows facts from the registry, read by hivex inside the appliance.

libguestfs's ``inspect_os`` answers these from the SOFTWARE and SYSTEM hives;
here the same keys are read through the daemon's ``hivex_*`` calls (no program
started, the hive never leaves the appliance), so no ``inspect_os`` is needed:
it would also look at every disk of a pooled appliance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ._guest import Guest, GuestReadError

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ, REG_QWORD = 1, 2, 3, 4, 7, 11
MAX_HIVE = 512 * 1024 * 1024
MAX_APPS = 5000
MAX_TEXT = 4096


class Hive:
    """One open hive: keys by path, values by name. Only one hive is open on a
    handle at a time (the daemon keeps one)."""

    def __init__(self, guest: Guest) -> None:
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
def open_hive(guest: Guest, path: str, max_size: int = MAX_HIVE) -> Iterator[Hive]:
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
        from ._osfacts import Facts, parse_version

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
