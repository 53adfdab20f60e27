"""Finding a VM's filesystems from udev records, with a scripted handle."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from helpers.fake_sysfs import add_disk, in_tree
from hypothesis import given
from hypothesis import strategies as st


class ScriptedHandle:
    """Stands in for a guestfs handle: answers ``debug sh`` by the script's first
    distinctive word, and records what was asked."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def debug(self, sub: str, args: list[str]) -> str:
        assert sub == "sh"
        for word, answer in self.answers.items():
            if word in args[0]:
                self.asked.append(word)
                return answer
        raise AssertionError(f"unexpected script: {args[0][:80]}")


UDEV_FEDORA = """DEV=/dev/sdc
ID_FS_TYPE=
PART=/dev/sdc1
DEV=/dev/sdc1
ID_FS_TYPE=ext4
ID_FS_UUID_ENC=1111
ID_FS_LABEL_ENC=my\\x20boot
PART=/dev/sdc2
DEV=/dev/sdc2
NODB=1
"""


def test_fast_probe_reads_udev_and_blkids_only_what_udev_lacks() -> None:
    from guestpool.inspectors._devices import find_filesystems
    from guestpool.inspectors._layout import Filesystem

    g = ScriptedHandle({"records show": UDEV_FEDORA,
                        "blkid -c /dev/null -p -o export /dev/sdc2":
                            "DEVNAME=/dev/sdc2\nLABEL=root\\ fs\nUUID=2222\nTYPE=btrfs\n"})
    layout = find_filesystems(g, ["/dev/sdc"])
    # named as the VM names them: its first disk is sda, whatever the appliance calls it
    assert layout.filesystems == [Filesystem("/dev/sda1", "ext4", "1111", "my boot", "/dev/sdc1"),
                                  Filesystem("/dev/sda2", "btrfs", "2222", "root fs", "/dev/sdc2")]
    assert g.asked == ["records show", "blkid -c /dev/null -p -o export /dev/sdc2"]
    assert layout.volume_groups == []


def test_fast_probe_activates_only_this_vms_volume_groups() -> None:
    from guestpool.inspectors._devices import find_filesystems
    from guestpool.inspectors._layout import Filesystem

    udev = "DEV=/dev/sdd\nPART=/dev/sdd1\nDEV=/dev/sdd1\nID_FS_TYPE=LVM2_member\n"
    lvm = ('VG="vg0"\nDM=vg0-root\nDEV=/dev/mapper/vg0-root\nID_FS_TYPE=ext4\n'
           "ID_FS_LABEL_ENC=root\nDM=vg0-swap\nDEV=/dev/mapper/vg0-swap\nID_FS_TYPE=swap\n"
           # a device-mapper device of another group (not activated here) is not the VM's
           "DM=other-lv\nDEV=/dev/mapper/other-lv\nID_FS_TYPE=ext4\n")
    g = ScriptedHandle({"records show": udev, "lvm vgchange --devices /dev/sdd1 -ay": lvm})
    layout = find_filesystems(g, ["/dev/sdd"])
    assert layout.filesystems == [Filesystem("/dev/vg0/root", "ext4", "", "root",
                                             "/dev/mapper/vg0-root")]
    assert (layout.volume_groups, layout.lvm_devices) == (["vg0"], ["/dev/sdd1"])
    assert layout.opened == [("lvm", "vg0-root\0vg0-swap")]


def test_device_names_are_checked_before_they_reach_a_shell() -> None:
    from guestpool.inspectors._devices import find_filesystems

    with pytest.raises(ValueError, match="not an appliance disk name"):
        find_filesystems(ScriptedHandle({}), ["/dev/sdc; reboot"])


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)))
def test_udev_values_read_like_blkid_values(label: str) -> None:
    from guestpool.inspectors._probe_output import _from_udev, unescape

    enc = "".join(c if c.isalnum() or c in "#+-.:=@_" else f"\\x{ord(c):02x}" for c in label)
    assert unescape(_from_udev({"ID_FS_TYPE": "ext4", "ID_FS_LABEL_ENC": enc})["LABEL"]) == label


def test_likely_roots_are_probed_first() -> None:
    from guestpool.inspectors._guest import _root_likelihood
    from guestpool.inspectors._layout import Filesystem

    fss = [Filesystem("/dev/sdc1", "ext4", label="boot"), Filesystem("/dev/sdc2", "xfs"),
           Filesystem("/dev/sdc3", "ext4"), Filesystem("/dev/rhel/home", "xfs"),
           Filesystem("/dev/rhel/root", "xfs")]
    assert [f.device for f in sorted(fss, key=_root_likelihood)] == [
        "/dev/rhel/root", "/dev/rhel/home", "/dev/sdc3", "/dev/sdc2", "/dev/sdc1"]


def test_lvm_without_devices_option_falls_back_to_the_stable_api() -> None:
    from guestpool.inspectors._devices import find_filesystems
    from guestpool.inspectors._layout import Filesystem

    class OldLvm(ScriptedHandle):
        def pvuuid(self, dev: str) -> str:
            return "PVUUID"

        def lvm_scan(self, activate: bool) -> None:
            self.asked.append("lvm_scan")

        def vgs(self) -> list[str]:
            return ["other", "vg0"]

        def vgpvuuids(self, vg: str) -> list[str]:
            return ["PVUUID"] if vg == "vg0" else ["ELSEWHERE"]

        def lvs(self) -> list[str]:
            return ["/dev/other/x", "/dev/vg0/root"]

        def blkid(self, dev: str) -> dict[str, str]:
            return {"TYPE": "xfs", "UUID": "u", "LABEL": "my\\ root"}

    udev = "DEV=/dev/sdd\nPART=/dev/sdd1\nDEV=/dev/sdd1\nID_FS_TYPE=LVM2_member\n"
    g = OldLvm({"records show": udev, "lvm vgchange": "LVM=failed\n"})
    layout = find_filesystems(g, ["/dev/sdd"])
    assert layout.filesystems == [Filesystem("/dev/vg0/root", "xfs", "u", "my root")]
    assert layout.volume_groups == ["vg0"] and "lvm_scan" in g.asked
    assert layout.lvm_devices == []  # deactivated through the stable API too: no --devices


class LuksHandle(ScriptedHandle):
    """Opens a LUKS device only with the right passphrase, as cryptsetup does."""

    def __init__(self, answers: dict[str, str], secret: str) -> None:
        super().__init__(answers)
        self.secret, self.opened = secret, []

    def cryptsetup_open(self, dev: str, key: str, mapname: str, readonly: bool) -> None:
        assert readonly
        if key != self.secret:
            raise RuntimeError("No key available with this passphrase.")
        self.opened.append((dev, mapname))


UDEV_LUKS = ("DEV=/dev/sdc\nPART=/dev/sdc1\nDEV=/dev/sdc1\nID_FS_TYPE=ext4\nPART=/dev/sdc2\n"
             "DEV=/dev/sdc2\nID_FS_TYPE=crypto_LUKS\nID_FS_UUID_ENC=c0de-0303\n")


def test_luks_opens_with_the_vms_keys_and_says_when_it_cannot() -> None:
    from guestpool.inspectors._devices import find_filesystems
    from guestpool.inspectors._layout import Finding
    from guestpool.inspectors._specs import LuksKey

    inner = "DEVNAME=/dev/mapper/luks-c0de-0303\nTYPE=ext4\nUUID=inner\n"
    answers = {"records show": UDEV_LUKS, "blkid -c /dev/null -p -o export": inner}
    g = LuksHandle(answers, "right")
    wrong, right = LuksKey("wrong"), LuksKey("right", "/dev/sda2")
    layout = find_filesystems(g, ["/dev/sdc"], keys=[wrong, right])
    assert g.opened == [("/dev/sdc2", "luks-c0de-0303")]  # the device's own key first
    assert [f.device for f in layout.filesystems] == ["/dev/sda1", "/dev/mapper/luks-c0de-0303"]
    assert layout.opened == [("luks", "luks-c0de-0303")] and not layout.findings
    none = find_filesystems(LuksHandle(answers, "right"), ["/dev/sdc"])
    assert none.findings == [Finding("/dev/sda2", "encrypted", "encrypted: key needed (add "
                                     "one to the VM's keys in the manifest)")]
    bad = find_filesystems(LuksHandle(answers, "right"), ["/dev/sdc"], keys=[wrong])
    assert [f.kind for f in bad.findings] == ["encrypted"]
    assert "none of the VM's keys" in bad.findings[0].detail


def test_md_members_of_one_array_are_assembled_together_and_degraded_is_said() -> None:
    from guestpool.inspectors._devices import find_filesystems

    udev = ("DEV=/dev/sdc\nPART=/dev/sdc1\nDEV=/dev/sdc1\nID_FS_TYPE=linux_raid_member\n"
            "ID_FS_UUID_ENC=aaaa\nID_FS_LABEL_ENC=host:boot\n")
    examine = ("EXAMINE=gp0x0\nX=          Version : 1.2\nX=       Raid Level : raid1\n"
               "X=     Raid Devices : 2\nX=       Array Size : 40896 KiB (39.94 MiB 41.88 MB)\n"
               "X=      Data Offset : 2048 sectors\n")
    answers = {"records show": udev, "mdadm --examine": examine,
               "dmsetup create gp-md-0-0 --readonly --table '0 81792 linear /dev/sdc1 2048'": "",
               "blkid -c /dev/null -p -o export /dev/mapper/gp-md-0-0":
                   "DEVNAME=/dev/mapper/gp-md-0-0\nTYPE=ext4\n"}
    g = ScriptedHandle(answers)
    layout = find_filesystems(g, ["/dev/sdc"])
    assert [(f.device, f.path) for f in layout.filesystems] == [
        ("/dev/md/boot", "/dev/mapper/gp-md-0-0")]
    assert [f.kind for f in layout.findings] == ["md-degraded"]
    assert layout.opened == [("dm", "gp-md-0-0")]
    held = ScriptedHandle({"records show": udev, "mdadm --examine": "HELD=gp0x0 /dev/md127\n",
                           "blkid -c /dev/null -p -o export /dev/md127":
                               "DEVNAME=/dev/md127\nTYPE=ext4\n"})
    assert [f.device for f in find_filesystems(held, ["/dev/sdc"]).filesystems] == [
        "/dev/md/boot"]  # assembled by the kernel already (a cold appliance at boot)


def test_hostile_array_and_group_names_stay_out_of_names_and_shells() -> None:
    from guestpool.inspectors._devices import find_filesystems

    udev = ("DEV=/dev/sdc\nPART=/dev/sdc1\nDEV=/dev/sdc1\nID_FS_TYPE=linux_raid_member\n"
            "ID_FS_UUID_ENC=aaaa\nID_FS_LABEL_ENC=h:..\\x2f..\\x2fetc\n")
    answers = {"records show": udev,
               # a kernel device name that is not md's, a superblock of nonsense: ignored
               "mdadm --examine": "HELD=gp0x0 /dev/sda;reboot\nEXAMINE=gp0x0\nX=junk\n"}
    layout = find_filesystems(ScriptedHandle(answers), ["/dev/sdc"])
    assert layout.filesystems == [] and layout.opened == []
    assert [f.kind for f in layout.findings] == ["md-unassembled"]


def test_api_names_follow_the_order_disks_were_added() -> None:
    """The kernel named the VM's first disk sdb (its SCSI scan finished the other
    first): API calls get libguestfs's name for it; other devices pass as they are."""
    from guestpool.inspectors._layout import api_device

    names = {"/dev/sdb": "/dev/sda", "/dev/sda": "/dev/sdb"}
    assert api_device("/dev/sdb1", names) == "/dev/sda1"
    assert api_device("/dev/sda", names) == "/dev/sdb"
    assert api_device("/dev/sdc2", names) == "/dev/sdc2"
    assert api_device("/dev/mapper/vg-root", names) == "/dev/mapper/vg-root"
    assert api_device("/dev/md127", names) == "/dev/md127"
    assert api_device("/dev/sdb1", {}) == "/dev/sdb1"  # hot-plugged: no renaming


def test_drive_labels_are_letters_and_unique() -> None:
    from guestpool.appliance._hotplug import drive_label

    labels = [drive_label(i) for i in range(1000)]
    assert len(set(labels)) == 1000 and all(lb.isalpha() for lb in labels)
    assert labels[:2] == ["diska", "diskb"] and drive_label(0, "c") == "ca"


class HostShell:
    """Runs discovery's scripts with the host's ``sh`` against a fake sysfs and
    udev database under ``root``; the programs it starts are stubs that log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.log = root / "calls"
        for name in ("mount", "udevadm", "lvm", "mdadm", "blkid"):
            (self.bin / name).write_text(
                f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(self.log))}\n')
            (self.bin / name).chmod(0o755)

    def disk(self, name: str, mm: str, record: str | None,
             parts: dict[str, tuple[str, str | None]] | None = None) -> None:
        add_disk(self.root, name, mm, record, parts)

    def debug(self, sub: str, args: list[str]) -> str:
        assert sub == "sh"
        script = in_tree(args[0], self.root)
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                              env={"PATH": f"{self.bin}:/usr/bin:/bin"}, cwd=self.root).stdout

    def mounts(self) -> list[str]:
        calls = self.log.read_text().splitlines() if self.log.exists() else []
        return [c for c in calls if c.startswith("mount ")]


def _fs(fstype: str) -> str:
    return f"E:ID_FS_TYPE={fstype}\nE:ID_FS_UUID_ENC=u-{fstype}\n"


@pytest.mark.parametrize("parts, mounted, mount", [
    ({"sdc1": _fs("ext4")}, "/dev/sdc1", "mount -o ro -t ext4 -- /dev/sdc1 /sysroot/"),
    ({"sdc1": _fs("vfat"), "sdc2": _fs("swap"), "sdc3": _fs("xfs")}, "/dev/sdc3",
     "mount -o ro -t xfs -- /dev/sdc3 /sysroot/"),
    ({"sdc1": _fs("btrfs")}, "/dev/sdc1", "mount -o ro,subvolid=5 -t btrfs -- /dev/sdc1 /sysroot/"),
    ({}, "/dev/sdc", "mount -o ro -t ext4 -- /dev/sdc /sysroot/"),  # a disk without partitions
    ({"sdc1": _fs("ext4"), "sdc2": _fs("ext4")}, "", None),         # two to probe: in order
    ({"sdc1": _fs("ext4"), "sdc2": _fs("ntfs")}, "", None),
    ({"sdc1": _fs("ext4"), "sdc2": _fs("LVM2_member")}, "", None),  # a layer to open first
    ({"sdc1": _fs("ext4"), "sdc2": _fs("crypto_LUKS")}, "", None),
    ({"sdc1": _fs("ext4"), "sdc2": _fs("linux_raid_member")}, "", None),
    ({"sdc1": _fs("ext4"), "sdc2": None}, "", None),                # udev has no record yet
    ({"sdc1": "E:ID_FS_TYPE=ext4 ; touch PWNED\n"}, "", None),     # not a type we mount
    ({"sdc1": _fs("ext4") + "E:ID_FS_LABEL_ENC=x\\x0aMOUNTED=/dev/sdc1\n", "sdc2": _fs("xfs")},
     "", None),
])
def test_discovery_mounts_the_vms_only_filesystem_a_probe_would_mount(
        tmp_path: Path, parts: dict[str, str | None], mounted: str, mount: str | None) -> None:
    from guestpool.inspectors._devices import find_filesystems

    shell = HostShell(tmp_path)
    disk_record = _fs("ext4") if not parts else "E:ID_PART_TABLE_TYPE=gpt\n"
    shell.disk("sdc", "8:32", disk_record,
               {p: (f"8:{33 + i}", rec) for i, (p, rec) in enumerate(parts.items())})
    layout = find_filesystems(shell, ["/dev/sdc"], premount=True)
    assert layout.mounted == mounted
    assert shell.mounts() == ([mount] if mount else [])
    assert not (tmp_path / "PWNED").exists()


def test_discovery_mounts_nothing_unless_asked(tmp_path: Path) -> None:
    from guestpool.inspectors._devices import find_filesystems

    shell = HostShell(tmp_path)
    shell.disk("sdc", "8:32", "E:ID_PART_TABLE_TYPE=dos\n", {"sdc1": ("8:33", _fs("ext4"))})
    layout = find_filesystems(shell, ["/dev/sdc"])
    assert (layout.mounted, shell.mounts()) == ("", [])
    assert [fs.path for fs in layout.filesystems] == ["/dev/sdc1"]
