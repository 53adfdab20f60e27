"""Image safety: the malicious image set, made here, each refused or failing cleanly."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet, sha256

from guestpool import VM, Disk, ImageError, RoundOptions, run_round
from guestpool._safety import SafetyPolicy, check_disk

SECRET = "guestpool-host-secret-7f3a9c"


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def malicious(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Disk]:
    root = tmp_path_factory.mktemp("malicious")
    fleet = root / "fleet"
    fleet.mkdir()
    host = root / "host"  # outside the fleet's folder: a host file guests must not reach
    host.mkdir()
    secret = host / "secret.raw"
    secret.write_text((SECRET + "\n") * 10000)
    good = fleet / "good.qcow2"
    qemu_img("create", "-f", "qcow2", str(good), "16M")
    d: dict[str, Disk] = {}
    qemu_img("create", "-f", "qcow2", "-b", str(secret), "-F", "raw",
             str(fleet / "host-backing.qcow2"), "16M")
    d["backing-host-file"] = Disk(str(fleet / "host-backing.qcow2"), "qcow2")
    qemu_img("create", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw",
             str(fleet / "shadow-backing.qcow2"), "16M")
    d["backing-etc-shadow"] = Disk(str(fleet / "shadow-backing.qcow2"), "qcow2")
    shutil.copy(good, fleet / "qcow2-as-raw.img")
    d["raw-with-qcow2-header"] = Disk(str(fleet / "qcow2-as-raw.img"), "raw")
    qemu_img("create", "-f", "qcow2", str(fleet / "loop-b.qcow2"), "16M")
    qemu_img("create", "-f", "qcow2", "-b", str(fleet / "loop-b.qcow2"), "-F", "qcow2",
             str(fleet / "loop-a.qcow2"), "16M")
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", str(fleet / "loop-a.qcow2"), "-F", "qcow2",
             str(fleet / "loop-b.qcow2"))
    d["backing-loop"] = Disk(str(fleet / "loop-a.qcow2"), "qcow2")
    (fleet / "truncated.qcow2").write_bytes(good.read_bytes()[:300])
    d["truncated-qcow2"] = Disk(str(fleet / "truncated.qcow2"), "qcow2")
    (fleet / "empty.raw").touch()
    d["zero-length"] = Disk(str(fleet / "empty.raw"), "raw")
    qemu_img("create", "-f", "qcow2", str(fleet / "huge.qcow2"), "64T")
    d["huge-virtual-size"] = Disk(str(fleet / "huge.qcow2"), "qcow2")
    (fleet / "plain.raw").write_bytes(b"\0" * 65536)
    d["wrong-declared-format"] = Disk(str(fleet / "plain.raw"), "qcow2")
    qemu_img("create", "-f", "qcow2", "-b", str(fleet / "plain.raw"), "-F", "raw",
             str(fleet / "nofmt.qcow2"), "16M")
    # qemu-img no longer writes such images: drop the backing-format header extension
    raw = bytearray((fleet / "nofmt.qcow2").read_bytes())
    at = raw.find(b"\xe2\x79\x2a\xca", 0, 4096)
    assert at > 0
    raw[at:at + 4] = b"\0\0\0\0"  # becomes the end-of-extensions marker
    (fleet / "nofmt.qcow2").write_bytes(bytes(raw))
    d["backing-without-format"] = Disk(str(fleet / "nofmt.qcow2"), "qcow2")
    os.mkfifo(fleet / "fifo.raw")
    d["fifo"] = Disk(str(fleet / "fifo.raw"), "raw")
    os.symlink("/dev/null", fleet / "devnode.raw")
    d["device-node-via-symlink"] = Disk(str(fleet / "devnode.raw"), "raw")
    d["good"] = Disk(str(good), "qcow2")
    return d


EXPECTED = {
    "backing-host-file": "outside the allowed folders",
    "backing-etc-shadow": "outside the allowed folders",
    "raw-with-qcow2-header": "declared raw but starts with a qcow2 header",
    "backing-loop": "not a readable qcow2",
    "truncated-qcow2": "truncated",
    "zero-length": "empty",
    "huge-virtual-size": "over the limit",
    "wrong-declared-format": "declared qcow2 but has no qcow2 header",
    "backing-without-format": "without its format",
    "fifo": "not a regular file",
    "device-node-via-symlink": "device node",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_malicious_image_is_refused(malicious: dict[str, Disk], name: str) -> None:
    with pytest.raises(ImageError, match=EXPECTED[name]) as err:
        check_disk(malicious[name], SafetyPolicy(allowed_roots=[]))
    assert SECRET not in str(err.value)


def test_good_image_and_explicit_allowances_pass(malicious: dict[str, Disk]) -> None:
    assert check_disk(malicious["good"], SafetyPolicy()).path == malicious["good"].path
    relaxed = SafetyPolicy(allow_format_mismatch=True)
    assert check_disk(malicious["raw-with-qcow2-header"], relaxed).format == "raw"
    host_dir = str(Path(malicious["good"].path).parent.parent / "host")
    assert check_disk(malicious["backing-host-file"], SafetyPolicy(allowed_roots=[host_dir]))


@pytest.mark.appliance
async def test_scan_of_malicious_set_leaks_nothing_and_writes_nothing(
        malicious: dict[str, Disk], demo_fleet: DemoFleet,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    vms = [VM(name, (disk,)) for name, disk in sorted(malicious.items())
           if name not in ("fifo", "device-node-via-symlink")]
    vms.append(dataclasses.replace(demo_fleet.vms[0], trust_group="default"))
    files = [d.path for vm in vms for d in vm.disks] + [str(Path(
        malicious["good"].path).parent.parent / "host" / "secret.raw")]
    before = {p: sha256(p) for p in files}
    options = RoundOptions(budget=120, pool_size=1, inspectors=["os", "filesystems"])
    report = await run_round(vms, options)
    assert not report.not_reached
    by_name = {r.vm: r for r in report.results}
    for name in EXPECTED:
        if name in by_name:
            assert not by_name[name].ok and by_name[name].error["kind"] == "image", name
    assert by_name[demo_fleet.vms[0].name].ok
    assert by_name["good"].ok
    dump = json.dumps([r.to_dict() for r in report.results]) + caplog.text
    assert SECRET not in dump
    assert {p: sha256(p) for p in files} == before
