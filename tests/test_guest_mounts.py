"""The facade's shell mounts and discovery's premount against hostile guest text,
with the host's ``sh``, stub ``mount``/``umount`` keeping a fake mount table (so
a mount stacked on another shows) and a fake sysfs/udev tree (no appliance).
Written by a review of the shell-mount change; each failed before its fix."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from helpers.fake_sysfs import add_disk, in_tree

from guestpool.inspectors import Guest
from guestpool.inspectors._devices import find_filesystems
from guestpool.inspectors._guest import Root
from guestpool.inspectors._layout import Filesystem, Layout
from guestpool.inspectors._mount_scripts import safe_mountpoint

_STUB = """#!/bin/sh
log={log}; tbl={tbl}
{{ echo "{name}"; for a in "$@"; do printf "%s\\n" "$a"; done; echo .; }} >> "$log"
for a in "$@"; do last=$a; done
if [ "{name}" = umount ]; then
  # umount -R <dir>: like util-linux, only the top mount at <dir> and what is under it
  # (one line per mount in $tbl, last = top); a stacked lower mount stays
  [ -s "$tbl" ] || exit 32
  n=$(grep -c "^$last/$" "$tbl"); [ "$n" -gt 0 ] || exit 32
  awk -v t="$last/" -v n="$n" '$0==t{{c++; if(c==n) drop=1}} !(drop && index($0,t)==1)' \
      "$tbl" > "$tbl.new"; mv "$tbl.new" "$tbl"; exit 0
fi
for d in {fails}; do for a in "$@"; do if [ "$a" = "$d" ]; then
  t=${{last%/}}
  printf 'mount: %s: wrong fs type, bad option, bad superblock on %s.\\n' "$t" "$d" >&2
  echo "       dmesg(1) may have more information after failed mount system call." >&2
  exit 32; fi; done; done
printf '%s\\n' "$last" >> "$tbl"
"""


class Shell:
    """``debug sh`` with the host's sh; stub mount/umount keep a fake mount table
    (``table()``); an optional fake sysfs/udev tree under ``root`` for discovery."""

    def __init__(self, root: Path, fail: tuple[str, ...] = ()) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log, self.tbl = root / "calls", root / "table"
        for name in ("mount", "umount"):
            (self.bin / name).write_text(_STUB.format(
                log=shlex.quote(str(self.log)), tbl=shlex.quote(str(self.tbl)), name=name,
                fails=" ".join(shlex.quote(f) for f in fail)))
            (self.bin / name).chmod(0o755)
        for name in ("udevadm", "lvm", "mdadm", "blkid"):
            (self.bin / name).write_text("#!/bin/sh\nexit 0\n")
            (self.bin / name).chmod(0o755)
        self.raise_on: set[int] = set()
        self.n = 0

    def disk(self, name: str, mm: str, record: str | None,
             parts: dict[str, tuple[str, str | None]] | None = None) -> None:
        add_disk(self.root, name, mm, record, parts)

    def debug(self, sub: str, args: list[str]) -> str:
        assert sub == "sh"
        self.n += 1
        if self.n in self.raise_on:
            raise RuntimeError("daemon: timed out")
        script = in_tree(args[0], self.root)
        return subprocess.run(["sh", "-c", script], capture_output=True, check=True,
                              env={"PATH": f"{self.bin}:/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
                              cwd=self.root).stdout.decode("utf-8")  # guestfs: strict UTF-8

    def table(self) -> list[str]:
        return self.tbl.read_text().splitlines() if self.tbl.exists() else []

    # what the probe reads: nothing there (no OS marker)
    def lstatnslist(self, folder: str, names: list[str]) -> list[dict[str, int]]:
        return [{"st_ino": -1, "st_mode": 0}] * len(names)

    def statvfs(self, path: str) -> dict[str, int]:
        return {"blocks": 10, "frsize": 4096, "bfree": 5, "bavail": 5}

    def realpath(self, path: str) -> str:
        return path

    def is_dir(self, path: str, followsymlinks: bool = False) -> bool:
        return True


def _stacked(shell: Shell) -> list[str]:
    t = shell.table()
    return sorted({m for m in t if t.count(m) > 1})


# -- 1. a label / GPT name with a Unicode line break forges discovery's MOUNTED= line -----

@pytest.mark.parametrize("sep", ["\u2028", "\x85", "\u2029"])
@pytest.mark.parametrize("where", ["E:ID_FS_LABEL_ENC", "E:ID_PART_ENTRY_NAME"])
def test_a_guest_label_cannot_hide_discoverys_own_mount(tmp_path: Path, sep: str,
                                                        where: str) -> None:
    """udev's _ENC encoding (and blkid_encode_string) keeps valid UTF-8 as is, so
    U+2028 / U+0085 / U+2029 reach the output unescaped; sh's ``read`` does not
    split there, Python's str.splitlines() does. The forged MOUNTED= line comes
    before the real one and wins: the shell mounted sdc1, Guest thinks nothing is
    mounted, and the probe mounts sdc1 again on top of it (no umount -R)."""
    shell = Shell(tmp_path)
    record = f"{where}=x{sep}MOUNTED=x\nE:ID_FS_TYPE=ext4\nE:ID_FS_UUID_ENC=u1\n"
    shell.disk("sdc", "8:32", "E:ID_PART_TABLE_TYPE=gpt\n", {"sdc1": ("8:33", record)})
    guest = Guest(shell, "vm", ["/dev/sdc"])
    guest.roots()
    assert shell.table() == ["/sysroot/"]                  # premount ran
    assert guest._discovered().mounted == "/dev/sdc1"      # ... and Python knows it
    assert _stacked(shell) == []                           # probe did not stack on it


def test_a_guest_label_cannot_forge_a_partition_record(tmp_path: Path) -> None:
    """Same split, other direction: ``DEV=x`` in sdc1's label moves the rest of its
    record (its TYPE) to a device "x"; the shell still mounts sdc1, Python no longer
    lists it, and an untracked mount sits at /sysroot."""
    shell = Shell(tmp_path)
    record = "E:ID_FS_LABEL_ENC=\u2028DEV=x\nE:ID_FS_TYPE=ext4\nE:ID_FS_UUID_ENC=u1\n"
    shell.disk("sdc", "8:32", "E:ID_PART_TABLE_TYPE=gpt\n", {"sdc1": ("8:33", record)})
    layout = find_filesystems(shell, ["/dev/sdc"], premount=True)
    assert (not shell.table()) or [f.path for f in layout.filesystems] == ["/dev/sdc1"]


# -- 2. an fstab mountpoint with \205 (U+0085) forges E<j>= for a later mount ----------

def test_an_fstab_mountpoint_cannot_forge_another_mounts_result(tmp_path: Path) -> None:
    """safe_mountpoint turns \\205 into U+0085 (not < 32); mount echoes the target in
    its message; splitlines() breaks there and 'E1=...' marks /srv failed although
    it is mounted (root.mounts then lacks it)."""
    mp = safe_mountpoint("/mnt/a\\205E1=x")
    assert mp == "/mnt/a\x85E1=x"                         # accepted from a guest fstab
    shell = Shell(tmp_path, fail=("/dev/sdc2",))
    guest = Guest(shell, "vm", ["/dev/sdc"])
    failed = guest._mount_many([(Filesystem("/dev/sda2", "xfs", path="/dev/sdc2"), mp),
                                (Filesystem("/dev/sda3", "xfs", path="/dev/sdc3"), "/srv")])
    assert "/sysroot/srv/" in shell.table()                # it is mounted ...
    assert "/srv" not in failed                            # ... so it must not be "failed"


# -- 3. LVs from the stable-API fallback (LVM < 2.03.12, or vgchange failing) ----------

def test_a_logical_volume_from_the_api_fallback_mounts_through_the_shell(tmp_path: Path) -> None:
    """_lvm falls back to _activate_with_api, whose LVs are /dev/VG/LV: _DEVICE_PATH
    refuses them, so every LV is 'unreadable' with the shell (the API path took them)."""
    shell = Shell(tmp_path)
    guest = Guest(shell, "vm", ["/dev/sdc"])
    guest._mount(Filesystem("/dev/vg0/root", "xfs"), "/", top=True, fresh=True)
    assert shell.table() == ["/sysroot/"]


def test_one_unmountable_fstab_entry_does_not_fail_the_whole_mount(tmp_path: Path) -> None:
    """Before: each fstab mount was inside try/except RuntimeError: continue. Now
    _mount_pending runs outside it: mount() raises, leaving the root mounted with
    _mounted = _bare = None."""
    shell = Shell(tmp_path)
    guest = Guest(shell, "vm", ["/dev/sdc"])
    root_fs = Filesystem("/dev/sda1", "ext4", "u1", path="/dev/sdc1")
    home = Filesystem("/dev/vg0/home", "xfs", "u2")
    guest._layout = Layout([root_fs, home], ["vg0"], [])
    root = Root("/dev/sda1", "ext4", fs=root_fs)
    guest._roots = [root]
    guest._fstabs[root.device] = [("UUID=u2", "/home", "xfs", "defaults"),
                                  ("UUID=u1", "/", "ext4", "defaults")]
    assert guest.mount(root) is root
    assert guest._mounted is root


# -- 4. fresh=True forgets the mounts before it knows they are gone --------------------

@pytest.mark.parametrize("how", ["bad-path", "daemon-error"])
def test_a_fresh_mount_that_raises_does_not_forget_what_is_mounted(tmp_path: Path,
                                                                   how: str) -> None:
    """_mount_many clears _mounted/_bare/_probed before the path check and before the
    script runs; when either raises, /sysroot keeps the old mount but the next fresh
    mount sees 'nothing mounted', skips umount -R and stacks; release's umount -R
    then leaves the lower one and its integrity check fails the job."""
    shell = Shell(tmp_path)
    guest = Guest(shell, "vm", ["/dev/sdc"])
    a = Filesystem("/dev/sda1", "ext4", path="/dev/sdc1")
    b = Filesystem("/dev/sda2", "xfs", path="/dev/not-ours" if how == "bad-path" else "/dev/sdc2")
    guest._layout = Layout([a, b], [], [])
    guest.filesystem_usage("/dev/sda1")
    if how == "daemon-error":
        shell.raise_on = {shell.n + 1}
    with pytest.raises(RuntimeError):
        guest.filesystem_usage("/dev/sda2")
    shell.raise_on = set()
    guest.filesystem_usage("/dev/sda1")
    assert _stacked(shell) == [], shell.table()
