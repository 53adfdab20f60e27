"""Inspectors used only by tests: slow, broken, unserialisable, and probing ones."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from guestpool.inspectors import Guest, GuestReadError, Inspector
from guestpool.inspectors._devices import find_filesystems


class Slow(Inspector):
    name = "test-slow"
    version = "1"
    deadline = 120.0

    def run(self, guest: Guest, options: Any) -> Any:
        time.sleep(8)
        return "slept"


class Boom(Inspector):
    name = "test-boom"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        raise ValueError("boom")


class Unserialisable(Inspector):
    name = "test-unserialisable"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        return {"x": object()}


class Registry(Inspector):
    """Reads registry values through the facade (a Windows-like test guest)."""

    name = "test-registry"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        guest.mount()
        hive = "/Windows/System32/config/SOFTWARE"
        key = "Microsoft\\Windows NT\\CurrentVersion"
        out: dict[str, Any] = {}
        for value in ("ProductName", "CurrentMajorVersionNumber", "Missing"):
            try:
                out[value] = guest.registry_value(hive, key, value)
            except GuestReadError as e:
                out[value] = f"error: {e}"
        try:
            guest.registry_value("/Windows/System32/config/SYSTEM", "Select", "Current")
        except GuestReadError as e:
            out["garbage"] = f"error: {e}"
        return out


class Layouts(Inspector):
    """The VM's layout as the job's guest found it (the appliance-shell fast path)
    and as the stable API finds it, with the roots each way, for comparison."""

    name = "test-layouts"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        fast = guest.filesystems()
        fast_roots = [r.device for r in guest.roots()]
        stable = find_filesystems(guest.handle, guest.devices, shell=False)
        guest.unmount()
        slow_guest = Guest(guest.handle, guest.vm, guest.devices, shell=False)
        stable_roots = [r.device for r in slow_guest.roots()]
        slow_guest.unmount()
        def named(f: Any) -> dict[str, Any]:  # the appliance's path differs (dm vs LVM link)
            return {k: v for k, v in dataclasses.asdict(f).items() if k != "path"}

        return {"fast": [named(f) for f in fast], "fast_roots": fast_roots,
                "stable": [named(f) for f in stable.filesystems],
                "stable_roots": stable_roots}


def appliance_mounts(guest: Guest) -> list[str]:
    """The appliance's own mount table (outside /sysroot), as the worker checks it."""
    from guestpool.appliance._worker import appliance_mounts as table

    return sorted(table(guest.handle))


class ApplianceMounts(Inspector):
    """Reports the appliance's mount table outside /sysroot (tests only)."""

    name = "test-appliance-mounts"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        return appliance_mounts(guest)


class Tamper(Inspector):
    """Does what a guest that owns the appliance would: mounts one of the VM's
    filesystems over an appliance folder, outside /sysroot."""

    name = "test-tamper"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        device = guest.filesystems()[0].path  # the appliance's name: raw handle calls
        guest.handle.debug("sh", [f"mkdir -p /run/gp-tamper && mount -o ro {device} "
                                  "/run/gp-tamper; exit 0"])
        return appliance_mounts(guest)


class Busy(Inspector):
    """Reads the guest in a loop until its deadline stops it."""

    name = "test-busy"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        guest.mount()
        while True:
            guest.exists("/etc")


class WriteAttempt(Inspector):
    """Tries to write to the VM's disk through the expert escape hatch."""

    name = "test-write-attempt"
    version = "1"

    def run(self, guest: Guest, options: Any) -> Any:
        g, disk = guest.handle, guest.devices[0]
        out = {}
        for what, call in (("mount_ro", lambda: g.mount_ro(disk, "/")),
                           ("mount", lambda: g.mount(disk, "/")),
                           ("pwrite_device", lambda: g.pwrite_device(disk, b"owned", 4096))):
            try:
                call()
                out[what] = "succeeded"
            except RuntimeError as e:
                out[what] = str(e)[:300]
            guest.unmount()
            g.umount_all()
        return out


class UdevRecords(Inspector):
    """When udev last wrote the records of the VM's first disk and of its
    partitions (tests only): it rewrites a record each time it re-probes. And
    whether it ran ``scsi_id`` for the disk (whose output sets ``ID_SCSI=1``), and
    whether systemd's rules (masked in a prepared appliance) tagged it."""

    name = "test-udev-records"
    version = "3"

    def run(self, guest: Guest, options: Any) -> Any:
        disk = guest.devices[0].rsplit("/", 1)[-1]
        out = guest.handle.debug("sh", [
            f"udevadm settle; for s in /sys/block/{disk} /sys/block/{disk}/{disk}*; do "
            "read -r mm < $s/dev; echo \"${s##*/} $(stat -c %y /run/udev/data/b$mm)\"; "
            f"done; read -r mm < /sys/block/{disk}/dev; "
            "grep -q '^E:ID_SCSI=1$' /run/udev/data/b$mm && echo scsi_id; "
            "grep -q '^G:systemd$' /run/udev/data/b$mm && echo systemd; exit 0"])
        lines = str(out).split("\n")
        written = dict(line.split(" ", 1) for line in lines if " " in line)
        return {"disk": written.pop(disk, ""), "partitions": sorted(written.values()),
                "scsi_id": "scsi_id" in lines, "systemd_tag": "systemd" in lines}
