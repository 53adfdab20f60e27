"""The Guest facade with a fake handle: bounds."""

from __future__ import annotations

import pytest
from helpers.fake_guest import FakeHandle

from guestpool.inspectors import Guest
from guestpool.inspectors._guest import safe_mountpoint


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
