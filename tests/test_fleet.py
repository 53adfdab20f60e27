"""Fleet manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestpool import FleetError, load_manifest


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


def test_luks_keys_in_a_manifest(tmp_path: Path) -> None:
    """Keys are paths (relative to the manifest) with an optional VM device name; the
    passphrase is the key file's first line, read when asked, hidden from any repr."""
    from guestpool.fleet._safety import SafetyPolicy, check_vm, luks_keys

    (tmp_path / "vm.img").write_bytes(b"\0" * 4096)
    (tmp_path / "all.key").write_text("open sesame\nsecond line is not the key\n")
    (tmp_path / "home.key").write_bytes(b"h0me\r\n")
    manifest = tmp_path / "fleet.toml"
    manifest.write_text('[[vms]]\nname = "db1"\ndisks = [{ path = "vm.img", format = "raw" }]\n'
                        'keys = [{ file = "all.key" }, '
                        '{ device = "/dev/vg/home", file = "home.key" }]\n')
    vm = load_manifest(manifest).vms[0]
    assert [(k.file, k.device) for k in vm.keys] == [
        (str(tmp_path / "all.key"), None), (str(tmp_path / "home.key"), "/dev/vg/home")]
    assert vm.to_dict()["keys"][1] == {"file": str(tmp_path / "home.key"),
                                       "device": "/dev/vg/home"}
    keys = luks_keys(vm)
    assert [(k.secret, k.device) for k in keys] == [("open sesame", None),
                                                    ("h0me", "/dev/vg/home")]
    assert "sesame" not in repr(keys) and "h0me" not in repr(keys)
    policy = SafetyPolicy(allowed_roots=[], disk_roots=[str(tmp_path)])
    assert check_vm(vm, policy).keys == vm.keys


@pytest.mark.parametrize("keys, message", [
    ('[{ path = "x" }]', "a key is"),
    ('[{ file = "k", device = "/dev/sda2; reboot" }]', "not a device name"),
    ('"k"', "a key is"),
])
def test_bad_key_entries_are_one_line_errors(tmp_path: Path, keys: str, message: str) -> None:
    manifest = tmp_path / "fleet.toml"
    manifest.write_text('[[vms]]\nname = "a"\ndisks = [{ path = "a.img", format = "raw" }]\n'
                        f"keys = {keys}\n")
    with pytest.raises(FleetError, match=message):
        load_manifest(manifest)


def test_key_files_are_confined_and_checked(tmp_path: Path) -> None:
    from guestpool import ImageError
    from guestpool.fleet._model import VM, Disk, KeyFile
    from guestpool.fleet._safety import SafetyPolicy, check_vm, luks_keys

    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "vm.img").write_bytes(b"\0" * 4096)
    (tmp_path / "secret").write_text("host secret\n")
    (fleet / "binary.key").write_bytes(b"\xff\xfe\n")
    policy = SafetyPolicy(allowed_roots=[], disk_roots=[str(fleet)])
    outside = VM("a", (Disk(str(fleet / "vm.img"), "raw"),),
                 keys=(KeyFile(str(fleet / ".." / "secret")),))
    with pytest.raises(ImageError, match="outside the fleet's folders"):
        check_vm(outside, policy)
    (fleet / "link.key").symlink_to(tmp_path / "secret")
    with pytest.raises(ImageError, match="outside"):
        check_vm(VM("a", outside.disks, keys=(KeyFile(str(fleet / "link.key")),)), policy)
    with pytest.raises(ImageError, match="not UTF-8"):
        luks_keys(VM("a", outside.disks, keys=(KeyFile(str(fleet / "binary.key")),)))
    with pytest.raises(ImageError, match="cannot read key file"):
        luks_keys(VM("a", outside.disks, keys=(KeyFile(str(fleet / "gone.key")),)))
