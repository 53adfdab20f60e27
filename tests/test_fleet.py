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
    with pytest.raises(FleetError, match=r"VM 'a' \(entry 0\): disks\[0\]\.format: must be one of "
                                         r"raw, qcow2 .*got 'vmdk'"):
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
    ('"k"', "keys: must be a list"),
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


VM_OK = {"name": "a", "disks": [{"path": "a.img", "format": "raw"}]}


@pytest.mark.parametrize("content, message", [
    (b'{"vms": [{"name": "caf\xe9"}]}', "is not UTF-8 (byte 22)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (json.dumps({"vms": [{**VM_OK, "name": "../etc"}]}).encode(), "entry 0: name: may not hold"),
    (json.dumps({"vms": [{**VM_OK, "name": "a\n[1/1] b: ok"}]}).encode(),
     "entry 0: name: must be printable, holds U+000A"),
    (json.dumps({"vms": [{**VM_OK, "name": ""}]}).encode(), "entry 0: name: must be 1 to 255"),
    (json.dumps({"vms": [{**VM_OK, "name": "a\u202eb"}]}).encode(), "holds U+202E"),
    (json.dumps({"vms": [{**VM_OK, "live": "false"}]}).encode(),
     "VM 'a' (entry 0): live: must be true or false, got 'false'"),
    (json.dumps({"vms": [{**VM_OK, "tags": "web"}]}).encode(), "tags: must be a list, got 'web'"),
    (json.dumps({"vms": [{**VM_OK, "priority": True}]}).encode(), "priority: must be a whole"),
    (json.dumps({"vms": [{**VM_OK, "disks": []}]}).encode(), "disks: must name at least one"),
    (json.dumps({"vms": [{**VM_OK, "disk": []}]}).encode(), "'disk': is not a field of a VM"),
    (json.dumps({"vms": [{**VM_OK, "trust_group": "a/b"}]}).encode(), "trust_group: may not"),
    (json.dumps({"vms": [VM_OK, {**VM_OK, "disks": [{"path": "b.img", "format": "raw"}]}]}
                ).encode(), "VM 'a' (entry 1) is named twice"),
    (json.dumps({"vms": [], "vm": []}).encode(), "must hold an object with one field"),
    (b'{"vms": [{"name": "a", "trust_group": "x", "trust_group": "y", "disks": []}]}',
     "the field 'trust_group' is given twice"),
    (json.dumps({"vms": [{**VM_OK, "name": "."}]}).encode(), "name: may not hold"),
    (json.dumps({"vms": [{**VM_OK, "x\n[1/1] y": 1}]}).encode(), "is not a field of a VM"),
    (json.dumps({"vms": [{**VM_OK, "disks": [{"path": "a\u0000b", "format": "raw"}]}]}
                ).encode(), "disks[0].path: must be a file path"),
])
def test_malformed_manifests_are_one_line_errors(tmp_path: Path, content: bytes,
                                                 message: str) -> None:
    manifest = tmp_path / "fleet.json"
    manifest.write_bytes(content)
    with pytest.raises(FleetError) as e:
        load_manifest(manifest)
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_huge_manifest_is_refused_before_parsing(tmp_path: Path) -> None:
    from guestpool.fleet._model import MAX_MANIFEST_BYTES

    manifest = tmp_path / "fleet.json"
    with open(manifest, "wb") as f:
        f.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(FleetError, match="larger than 64 MiB"):
        load_manifest(manifest)


def test_malformed_manifests_exit_2_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    for i, content in enumerate((b"\xff\xfe{", b"[" * 100_000,
                                 json.dumps({"vms": [{**VM_OK, "live": "false"}]}).encode())):
        manifest = tmp_path / f"f{i}.json"
        manifest.write_bytes(content)
        r = subprocess.run([sys.executable, "-m", "guestpool", "scan", str(manifest), "--plan"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-500:]
        assert r.stderr.count("\n") == 1 and "fleet manifest" in r.stderr, r.stderr
