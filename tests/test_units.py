"""Fast tests: no appliance."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guestpool import wire
from guestpool.accel import resolve_accel
from guestpool.demo import KINDS, plan
from guestpool.errors import FleetError, InspectorError, SetupError
from guestpool.fleet import load_manifest
from guestpool.inspectors import Inspector, resolve
from guestpool.inspectors.guest import Guest
from guestpool.pool import Pool, default_pool_size

GUESTPOOL = [sys.executable, "-m", "guestpool.cli"]

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(msgpack_values)
def test_frames_roundtrip(value: object) -> None:
    stream = io.BytesIO(wire.encode({"id": 1, "result": value}) * 2)
    assert wire.read_frame(stream) == {"id": 1, "result": value}
    assert wire.read_frame(stream) == {"id": 1, "result": value}
    assert wire.read_frame(stream) is None


def test_truncated_frame_is_an_error() -> None:
    data = wire.encode({"id": 1})
    with pytest.raises(wire.FrameError):
        wire.read_frame(io.BytesIO(data[:-1]))
    with pytest.raises(wire.FrameError):
        wire.read_frame(io.BytesIO(b"\xff\xff\xff\xff"))


def test_manifest_parsing(tmp_path: Path) -> None:
    m = tmp_path / "fleet.toml"
    m.write_text('[[vms]]\nname = "a"\ntrust_group = "t1"\n'
                 '[[vms.disks]]\npath = "a.qcow2"\nformat = "qcow2"\n')
    fleet = load_manifest(m)
    assert fleet.vms[0].disks[0].path == str(tmp_path / "a.qcow2")
    assert fleet.vms[0].trust_group == "t1"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"vms": [{"name": "a", "disks": [{"path": "x", "format": "vmdk"}]}]}))
    with pytest.raises(FleetError, match="format 'vmdk'"):
        load_manifest(bad)
    with pytest.raises(FleetError, match="cannot read"):
        load_manifest(tmp_path / "missing.json")


def test_inspector_options_are_validated() -> None:
    class Opt(Inspector):
        name = "opt"
        version = "1"

        @dataclass
        class Options:
            limit: int = 3

    assert Opt.make_options({"limit": 5}).limit == 5
    assert Opt.make_options(None).limit == 3
    with pytest.raises(InspectorError, match="unknown option"):
        Opt.make_options({"nope": 1})
    with pytest.raises(InspectorError, match="must be int"):
        Opt.make_options({"limit": "many"})


def test_inspector_resolution_errors_name_the_plugin() -> None:
    assert resolve("os").name == "os"
    with pytest.raises(InspectorError, match="unknown inspector 'nope'"):
        resolve("nope")
    with pytest.raises(InspectorError, match="cannot load inspector 'no_such_module:X'"):
        resolve("no_such_module:X")


def test_accel_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUESTPOOL_ACCEL", "tcg")
    assert resolve_accel().accel == "tcg"
    assert resolve_accel("kvm").source == "override"
    with pytest.raises(SetupError, match="unknown accelerator"):
        resolve_accel("hvf")


def test_accel_cache_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUESTPOOL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GUESTPOOL_ACCEL", raising=False)
    calls = []
    monkeypatch.setattr("guestpool.accel.probe_kvm",
                        lambda: calls.append(1) or (False, "hangs"))
    assert resolve_accel().source == "probe"
    assert resolve_accel().source == "cache"
    assert resolve_accel().accel == "tcg"
    assert len(calls) == 1


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(SetupError):
        Pool(0)
    with pytest.raises(SetupError):
        Pool(1, strategy="warm")  # type: ignore[arg-type]
    assert 1 <= default_pool_size() <= 12


def test_demo_plan_covers_every_kind() -> None:
    kinds = [s.kind for s in plan(30)]
    assert set(kinds) == set(KINDS)
    assert kinds[: len(KINDS)] == list(KINDS)


class FakeHandle:
    def __init__(self) -> None:
        self.files = {"/etc/passwd": b"root:x:0:0::/root:/bin/sh\n" * 10}

    def is_file(self, path: str, followsymlinks: bool = False) -> bool:
        return path in self.files

    def pread(self, path: str, count: int, offset: int) -> bytes:
        return self.files[path][offset: offset + count]


def test_guest_reads_are_bounded() -> None:
    guest = Guest(FakeHandle(), "vm", [])
    assert len(guest.read_bytes("/etc/passwd", max_bytes=7)) == 7
    assert len(guest.read_lines("/etc/passwd", max_lines=3)) == 3


@pytest.mark.parametrize("args, message", [
    (["fleet", "demo", "/proc/forbidden", "--count", "2"], "cannot write"),
    (["fleet", "demo", "{tmp}", "--count", "0"], "--count must be at least 1"),
    (["doctor", "--accel", "warp"], "Invalid value for '--accel'"),
    (["scan", "{tmp}/none.json"], "cannot read fleet manifest"),
])
def test_bad_input_gives_one_line_error(args: list[str], message: str, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run(GUESTPOOL + args, capture_output=True, text=True, env=dict(os.environ))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


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
    from guestpool.inspectors.devices import Filesystem, find_filesystems

    g = ScriptedHandle({"records show": UDEV_FEDORA,
                        "blkid -c /dev/null -p -o export /dev/sdc2":
                            "DEVNAME=/dev/sdc2\nLABEL=root\\ fs\nUUID=2222\nTYPE=btrfs\n"})
    layout = find_filesystems(g, ["/dev/sdc"])
    assert layout.filesystems == [Filesystem("/dev/sdc1", "ext4", "1111", "my boot"),
                                  Filesystem("/dev/sdc2", "btrfs", "2222", "root fs")]
    assert g.asked == ["records show", "blkid -c /dev/null -p -o export /dev/sdc2"]
    assert layout.volume_groups == []


def test_fast_probe_activates_only_this_vms_volume_groups() -> None:
    from guestpool.inspectors.devices import Filesystem, find_filesystems

    udev = "DEV=/dev/sdd\nPART=/dev/sdd1\nDEV=/dev/sdd1\nID_FS_TYPE=LVM2_member\n"
    lvm = ("VG=vg0\nDEV=/dev/vg0/root\nID_FS_TYPE=ext4\nID_FS_LABEL_ENC=root\n"
           "VG=vg0\nDEV=/dev/vg0/swap\nID_FS_TYPE=swap\n")
    g = ScriptedHandle({"records show": udev, "lvm vgchange --devices /dev/sdd1 -ay": lvm})
    layout = find_filesystems(g, ["/dev/sdd"])
    assert layout.filesystems == [Filesystem("/dev/vg0/root", "ext4", "", "root")]
    assert (layout.volume_groups, layout.lvm_devices) == (["vg0"], ["/dev/sdd1"])


def test_device_names_are_checked_before_they_reach_a_shell() -> None:
    from guestpool.inspectors.devices import find_filesystems

    with pytest.raises(ValueError, match="not an appliance disk name"):
        find_filesystems(ScriptedHandle({}), ["/dev/sdc; reboot"])


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)))
def test_udev_values_read_like_blkid_values(label: str) -> None:
    from guestpool.inspectors.devices import _from_udev, unescape

    enc = "".join(c if c.isalnum() or c in "#+-.:=@_" else f"\\x{ord(c):02x}" for c in label)
    assert unescape(_from_udev({"ID_FS_TYPE": "ext4", "ID_FS_LABEL_ENC": enc})["LABEL"]) == label


def test_likely_roots_are_probed_first() -> None:
    from guestpool.inspectors.devices import Filesystem
    from guestpool.inspectors.guest import _root_likelihood

    fss = [Filesystem("/dev/sdc1", "ext4", label="boot"), Filesystem("/dev/sdc2", "xfs"),
           Filesystem("/dev/sdc3", "ext4"), Filesystem("/dev/rhel/home", "xfs"),
           Filesystem("/dev/rhel/root", "xfs")]
    assert [f.device for f in sorted(fss, key=_root_likelihood)] == [
        "/dev/rhel/root", "/dev/rhel/home", "/dev/sdc3", "/dev/sdc2", "/dev/sdc1"]


def test_lvm_without_devices_option_falls_back_to_the_stable_api() -> None:
    from guestpool.inspectors.devices import Filesystem, find_filesystems

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
