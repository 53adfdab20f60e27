"""The Guest facade with a fake handle: bounds."""

from __future__ import annotations

import pytest
from helpers.fake_guest import FakeHandle

from guestpool.inspectors import Guest
from guestpool.inspectors._guest import Filesystem, safe_mountpoint


def test_guest_reads_are_bounded() -> None:
    guest = Guest(FakeHandle({"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n" * 10}), "vm", [])
    assert len(guest.read_bytes("/etc/passwd", max_bytes=7)) == 7
    assert len(guest.read_lines("/etc/passwd", max_lines=3)) == 3


@pytest.mark.parametrize("raw, safe", [
    ("/usr", "/usr"), ("//var//log/", "/var/log"), ("/mnt/My\\040Disk", "/mnt/My Disk"),
    ("/../usr/sbin", None), ("/a/../../x", None), ("/a/./b", None), ("relative", None),
    ("", None), ("/x\n/y", None), ("/\\011", None), ("/" + "a" * 5000, None),
])
def test_fstab_mountpoints_that_leave_the_guest_are_refused(raw: str, safe: str | None) -> None:
    assert safe_mountpoint(raw) == safe


class _Mounts:
    """Records mount calls; the typed mount fails when ``typed_fails``."""

    def __init__(self, typed_fails: bool) -> None:
        self.typed_fails = typed_fails
        self.calls: list[tuple[str, ...]] = []

    def mount_vfs(self, options: str, vfstype: str, device: str, mountpoint: str) -> None:
        self.calls.append(("typed", options, vfstype, device, mountpoint))
        if self.typed_fails:
            raise RuntimeError("mount: wrong fs type")

    def mount_options(self, options: str, device: str, mountpoint: str) -> None:
        self.calls.append(("probed", options, device, mountpoint))


@pytest.mark.parametrize("typed_fails", [False, True])
def test_mounts_name_the_type_udev_saw_and_probe_when_it_was_wrong(typed_fails: bool) -> None:
    handle = _Mounts(typed_fails)
    guest = Guest(handle, "vm", ["/dev/sdc"], shell=False)
    guest._mount(Filesystem("/dev/sda2", "btrfs", path="/dev/sdc2"), "/", top=True)
    guest._mount(Filesystem("/dev/sda3", "ntfs", path="/dev/sdc3"), "/win")
    typed = [("typed", "ro,subvolid=5", "btrfs", "/dev/sdc2", "/")]
    probed = [("probed", "ro,subvolid=5", "/dev/sdc2", "/")] if typed_fails else []
    assert handle.calls == typed + probed + [("probed", "ro", "/dev/sdc3", "/win")]
