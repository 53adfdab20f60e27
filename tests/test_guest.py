"""The Guest facade with a fake handle: bounds."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.fake_guest import FakeHandle

from guestpool.inspectors import Guest
from guestpool.inspectors._layout import Filesystem
from guestpool.inspectors._mount_scripts import safe_mountpoint


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


class _ShellMounts:
    """Runs the facade's ``debug sh`` scripts with the host's ``sh``; ``mount`` and
    ``umount`` are stubs that log their arguments (one per line) and fail for the
    devices in ``fail`` (typed mounts only when ``typed_only``)."""

    def __init__(self, tmp: Path, fail: tuple[str, ...] = (), typed_only: bool = False) -> None:
        self.log = tmp / "calls"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        fails = " ".join(shlex.quote(f) for f in fail)
        typed = "1" if typed_only else ""
        for name in ("mount", "umount"):
            stub = self.bin / name
            stub.write_text(
                "#!/bin/sh\n"
                f'{{ echo "{name}"; for a in "$@"; do printf "%s\\n" "$a"; done; echo .; }}'
                f' >> {shlex.quote(str(self.log))}\n'
                f"typed=; for a in \"$@\"; do [ \"$a\" = -t ] && typed=1; done\n"
                f"for d in {fails}; do for a in \"$@\"; do\n"
                f'  if [ "$a" = "$d" ] && {{ [ -z "{typed}" ] || [ -n "$typed" ]; }}; then\n'
                f'    echo "mount: $d: wrong fs type"; echo "       dmesg(1) may have more" >&2;'
                f" exit 32; fi; done; done\n"
                # what is mounted, one line each: umount fails once nothing is
                + (f"echo m >> {shlex.quote(str(tmp / 'mounted'))}\n" if name == "mount" else
                   f"[ -s {shlex.quote(str(tmp / 'mounted'))} ] || exit 32\n"
                   f"sed -i '$d' {shlex.quote(str(tmp / 'mounted'))}\n"))
            stub.chmod(0o755)
        self.scripts: list[str] = []

    def debug(self, cmd: str, args: list[str]) -> str:
        assert cmd == "sh"
        self.scripts.append(args[0])
        env = {"PATH": f"{self.bin}:/usr/bin:/bin"}
        return subprocess.run(["sh", "-c", args[0]], capture_output=True, text=True,
                              env=env, check=True).stdout

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        out, cur = [], []
        for line in self.log.read_text().splitlines():
            if line == ".":
                out.append(cur)
                cur = []
            else:
                cur.append(line)
        return out


def test_shell_mounts_name_the_type_then_probe(tmp_path: Path) -> None:
    handle = _ShellMounts(tmp_path, fail=("/dev/sdc2",), typed_only=True)
    guest = Guest(handle, "vm", ["/dev/sdc"])
    guest._mount(Filesystem("/dev/sda2", "btrfs", path="/dev/sdc2"), "/", top=True)
    guest._mount(Filesystem("/dev/sda3", "ntfs", path="/dev/sdc3"), "/win")
    assert handle.calls() == [
        ["mount", "-o", "ro,subvolid=5", "-t", "btrfs", "--", "/dev/sdc2", "/sysroot/"],
        ["mount", "-o", "ro,subvolid=5", "--", "/dev/sdc2", "/sysroot/"],
        ["mount", "-o", "ro", "--", "/dev/sdc3", "/sysroot/win/"]]


def test_a_shell_mount_that_fails_raises_with_mounts_message(tmp_path: Path) -> None:
    handle = _ShellMounts(tmp_path, fail=("/dev/sdc1",))
    guest = Guest(handle, "vm", ["/dev/sdc"])
    with pytest.raises(RuntimeError, match=r"mount: /dev/sdc1: wrong fs type$"):
        guest._mount(Filesystem("/dev/sda1", "ext4", path="/dev/sdc1"), "/")


@pytest.mark.parametrize("mountpoint", [
    "/mnt/a b", "/mnt/$(touch PWNED)", "/mnt/`touch PWNED`", "/mnt/x'; touch PWNED; '",
    '/mnt/"q"', "/mnt/-o", "/mnt/*", "/mnt/a\\b", "/mnt/;touch PWNED"])
def test_hostile_fstab_mountpoints_reach_mount_as_one_argument(tmp_path: Path,
                                                                mountpoint: str) -> None:
    """A guest's fstab names the mountpoints; the shell must hand each to mount as
    exactly the path it is, never run any of it."""
    handle = _ShellMounts(tmp_path)
    guest = Guest(handle, "vm", ["/dev/sdc"])
    failed = guest._mount_many([(Filesystem("/dev/sda1", "ext4", path="/dev/sdc1"), "/"),
                                (Filesystem("/dev/sda2", "xfs", path="/dev/sdc2"), mountpoint)])
    assert failed == {}
    assert handle.calls()[1] == ["mount", "-o", "ro", "-t", "xfs", "--", "/dev/sdc2",
                                 f"/sysroot{mountpoint}/"]
    assert not (tmp_path / "PWNED").exists() and not Path("PWNED").exists()
    assert len(handle.scripts) == 1  # both in one round trip


def test_a_device_name_that_is_not_the_appliances_never_reaches_the_shell(
        tmp_path: Path) -> None:
    handle = _ShellMounts(tmp_path)
    guest = Guest(handle, "vm", ["/dev/sdc"])
    for path in ("/dev/sdc1; touch PWNED", "/etc/passwd", "/dev/mapper/../sda", "-o"):
        with pytest.raises(RuntimeError, match="not an appliance device"):
            guest._mount(Filesystem("/dev/sda1", "ext4", path=path), "/")
    assert handle.scripts == []


def test_a_fresh_mount_unmounts_only_what_is_mounted(tmp_path: Path) -> None:
    handle = _ShellMounts(tmp_path)
    guest = Guest(handle, "vm", ["/dev/sdc"])
    fs = Filesystem("/dev/sda1", "ext4", path="/dev/sdc1")
    guest._mount(fs, "/", fresh=True)  # nothing mounted yet: no umount
    guest._bare = fs.device
    guest._mount(Filesystem("/dev/sda2", "ext4", path="/dev/sdc2"), "/", fresh=True)
    # detached (never unmounted by a path below /sysroot) until nothing is left
    assert [c[0] for c in handle.calls()] == ["mount", "umount", "umount", "mount"]
    assert handle.calls()[1] == handle.calls()[2] == ["umount", "-l", "/sysroot"]
    assert len(handle.scripts) == 2


def test_a_worker_s_memory_is_bounded() -> None:
    """Issue 29, item 5: past the appliance's memory and a headroom, a worker's
    allocation fails (MemoryError: that inspector's error), never the host's swap."""
    code = ("from guestpool.appliance._worker import limit_memory\n"
            "limit = limit_memory(64)\n"
            "keep = bytearray(256 * 2**20)  # well within\n"
            "try:\n"
            "    bytearray(limit)\n"
            "except MemoryError:\n"
            "    print('refused', limit)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused", str((64 + 768) * 2**20)]
