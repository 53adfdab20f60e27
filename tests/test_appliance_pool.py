"""Real appliances: ground truth, reuse, read-only disks, bad images, plugins."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet, sha256
from helpers.pool_thread import PoolThread

from guestpool import VM, Disk, InspectorSpec

pytestmark = pytest.mark.appliance


def same_group(vm: VM) -> VM:
    return dataclasses.replace(vm, trust_group="default")


def test_every_kind_matches_ground_truth(shared_pool: PoolThread, demo_fleet: DemoFleet) -> None:
    for vm in demo_fleet.one_of_each():
        truth = demo_fleet.truth[vm.name]
        r = shared_pool.inspect(same_group(vm), ["os", "filesystems", "testinspectors:Layouts"])
        assert r.ok, r.error
        layouts = r.results["test-layouts"]["value"]
        assert layouts["fast"] == layouts["stable"], vm.name  # shell fast path == stable API
        assert layouts["fast_roots"] == layouts["stable_roots"], vm.name
        os_value = r.results["os"]["value"]
        assert r.results["os"]["version"] == "2"
        if truth["os"]["type"] == "none":
            assert os_value["type"] == "none"
        else:
            for key in ("type", "distro", "version", "hostname", "arch", "package_format",
                        "package_management"):
                assert os_value[key] == truth["os"][key], (vm.name, key)
            if "mountpoints" in truth["os"]:
                assert set(os_value["mountpoints"]) == set(truth["os"]["mountpoints"])
        seen = {(f["type"], f["uuid"], f["label"]) for f in r.results["filesystems"]["value"]}
        want = {(f["type"], f["uuid"], f["label"]) for f in truth["filesystems"]}
        assert seen == want, vm.name


def test_appliances_are_reused_not_rebooted(shared_pool: PoolThread,
                                            demo_fleet: DemoFleet) -> None:
    """20 VMs on a pool of 2: every appliance booted once, same qemu for all its jobs."""
    pool = shared_pool.pool
    assert pool is not None
    vms = [dataclasses.replace(v, name=f"{v.name}-{i}", trust_group="default")
           for i in range(2) for v in demo_fleet.vms[:10]]
    pids: dict[int | None, set[int | None]] = {}
    with ThreadPoolExecutor(2) as ex:  # two jobs at a time: both appliances serve
        results = list(ex.map(lambda vm: shared_pool.inspect(vm, ["hostname"]), vms))
    for vm, r in zip(vms, results, strict=True):
        assert r.ok, r.error
        truth = demo_fleet.truth[vm.name.rsplit("-", 1)[0]]
        assert r.results["hostname"]["value"] == truth.get("os", {}).get("hostname")
        pids.setdefault(r.appliance, set()).add(r.qemu_pid)
    assert len(results) == 20
    assert pool.stats.boots == pool.size == 2
    assert len(pids) == 2 and all(len(p) == 1 for p in pids.values())


def test_a_hot_plugged_disk_is_probed_once(shared_pool: PoolThread,
                                           demo_fleet: DemoFleet) -> None:
    """A hot-plug makes qemu tell the new disk "LUNs changed" (twice); udev's
    stock rules turn each notice into another full probe of the disk, on the
    appliance's one vCPU, while the inspection runs. Prepared appliances probe it
    once: its record is written before its partitions' and never again. And
    without a program: the disk's label comes from its SCSI product name, not
    from ``scsi_id`` (~50 ms of the vCPU per disk under TCG). And only through the
    rules storage needs: systemd's (no systemd runs there) are masked."""
    vm = next(v for v in demo_fleet.vms if v.name.endswith("-debian"))
    r = shared_pool.inspect(same_group(vm), ["testinspectors:UdevRecords"])
    assert r.ok, r.error
    written = r.results["test-udev-records"]["value"]
    assert written["disk"] and written["partitions"], written
    assert written["disk"] < min(written["partitions"]), written
    assert not written["scsi_id"], written
    assert not written["systemd_tag"], written


def test_bad_images_fail_cleanly_and_pool_goes_on(shared_pool: PoolThread, tmp_path: Path,
                                                  demo_fleet: DemoFleet) -> None:
    empty = tmp_path / "empty.img"
    empty.touch()
    raw_as_qcow2 = next(d for vm in demo_fleet.vms for d in vm.disks if d.format == "raw")
    qcow2 = next(d for vm in demo_fleet.vms for d in vm.disks if d.format == "qcow2")
    truncated = tmp_path / "truncated.qcow2"
    truncated.write_bytes(Path(qcow2.path).read_bytes()[:70000])
    bad = {
        "missing": Disk(str(tmp_path / "nope.qcow2"), "qcow2"),
        "empty": Disk(str(empty), "raw"),
        "wrong-format": Disk(raw_as_qcow2.path, "qcow2"),
        "truncated": Disk(str(truncated), "qcow2"),
    }
    for name, disk in bad.items():
        r = shared_pool.inspect(VM(name, (disk,)), ["os"])
        failed = not r.ok or not r.results["os"]["ok"] or r.results["os"]["value"]["type"] == "none"
        assert failed, name
        if not r.ok:
            assert r.error and r.error["kind"] == "image", (name, r.error)
            assert r.error["message"]
    good = same_group(demo_fleet.vms[0])
    assert shared_pool.inspect(good, ["hostname"]).ok


def test_broken_inspectors_do_not_spoil_the_others(shared_pool: PoolThread,
                                                   demo_fleet: DemoFleet) -> None:
    vm = same_group(demo_fleet.vms[0])
    r = shared_pool.inspect(vm, ["hostname", "testinspectors:Boom",
                                 "testinspectors:Unserialisable", "no_such_plugin:Inspector"])
    assert r.ok
    assert "cannot load inspector 'no_such_plugin:Inspector'" in r.results[
        "no_such_plugin:Inspector"]["error"]["message"]
    assert r.results["hostname"]["ok"]
    assert not r.results["test-boom"]["ok"]
    assert "boom" in r.results["test-boom"]["error"]["message"]
    assert not r.results["test-unserialisable"]["ok"]
    assert "cannot be stored" in r.results["test-unserialisable"]["error"]["message"]


def test_trust_groups_never_share_an_appliance(shared_pool: PoolThread,
                                               demo_fleet: DemoFleet) -> None:
    by_group: dict[str, set[int | None]] = {"red": set(), "blue": set()}
    for i, vm in enumerate(demo_fleet.vms[:4]):
        group = "red" if i % 2 == 0 else "blue"
        r = shared_pool.inspect(dataclasses.replace(vm, trust_group=group), ["hostname"])
        assert r.ok, r.error
        by_group[group].add(r.appliance)
    assert by_group["red"].isdisjoint(by_group["blue"])
    assert shared_pool.pool is not None
    assert shared_pool.pool.stats.retirements["trust-group-switch"] >= 1


def test_qemu_killed_mid_job_fails_over_and_is_replaced(shared_pool: PoolThread,
                                                        demo_fleet: DemoFleet) -> None:
    pool = shared_pool.pool
    assert pool is not None
    victim = next(a for a in pool.appliances.values() if a.state == "idle")
    assert victim.qemu_pid is not None
    # the victim is the first idle appliance of its group, so the job goes to it first
    vm = dataclasses.replace(demo_fleet.vms[0], trust_group=victim.trust_group or "default")
    boots = pool.stats.boots
    with ThreadPoolExecutor(1) as ex:
        job = ex.submit(shared_pool.inspect, vm, ["hostname", "testinspectors:Slow"])
        deadline = time.monotonic() + 30
        while victim.state != "busy":  # attached and inspecting (Slow sleeps 8 s)
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2)
        os.kill(victim.qemu_pid, 9)
        r = job.result(timeout=300)
    assert r.ok, r.error
    assert r.attempts == 2 and r.appliance != victim.id
    assert r.results["test-slow"]["value"] == "slept"
    assert victim.id not in pool.appliances
    deadline = time.monotonic() + 120
    while pool.stats.boots == boots and time.monotonic() < deadline:
        time.sleep(1)
    assert pool.stats.boots == boots + 1, (pool.stats.retirements, pool.stats.failures)


def test_disks_are_never_written(shared_pool: PoolThread, demo_fleet: DemoFleet) -> None:
    # runs after the other pooled tests in this module (pytest keeps file order)
    assert {p: sha256(p) for p in demo_fleet.digests} == demo_fleet.digests


def test_full_inspect_os_sees_the_vms_logical_volumes(shared_pool: PoolThread,
                                                      demo_fleet: DemoFleet) -> None:
    """udev no longer auto-activates LVM on hot-plug: the full path must activate it."""
    (vm,) = [v for v in demo_fleet.one_of_each() if v.name.endswith("-lvm")]
    r = shared_pool.inspect(same_group(vm), [InspectorSpec("os", {"full": True})])
    assert r.ok, r.error
    value = r.results["os"]["value"]
    assert value["method"] == "inspect_os" and value["root"] == "/dev/vg0/root", value
    assert value["hostname"] == demo_fleet.truth[vm.name]["os"]["hostname"]


def test_disks_are_read_only_at_the_block_level(shared_pool: PoolThread, tmp_path: Path) -> None:
    """A disk with a dirty ext4 journal: a writable attach would replay it (and so
    change the image) on a read-only mount; a read-only one refuses to mount it.
    Writes through the raw handle fail too. The image is unchanged."""
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("dirty\n")
    disk = tmp_path / "dirty.raw"
    with open(disk, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), "-L", "root", str(disk)],
                   check=True)
    subprocess.run(["debugfs", "-w", "-R", "feature needs_recovery", str(disk)], check=True,
                   capture_output=True)
    before = sha256(str(disk))
    vm = VM("dirty-journal", (Disk(str(disk), "raw"),))
    r = shared_pool.inspect(vm, ["testinspectors:WriteAttempt"])
    assert r.ok, r.error
    attempts = r.results["test-write-attempt"]["value"]
    assert all(v != "succeeded" for v in attempts.values()), attempts
    assert sha256(str(disk)) == before


def test_each_inspector_has_its_own_deadline(shared_pool: PoolThread,
                                             demo_fleet: DemoFleet) -> None:
    vm = same_group(demo_fleet.vms[0])
    t = time.monotonic()
    r = shared_pool.inspect(vm, [InspectorSpec("testinspectors:Busy", deadline=3.0), "hostname"])
    assert r.ok, r.error
    busy = r.results["test-busy"]
    assert not busy["ok"] and busy["error"]["kind"] == "deadline", busy
    assert 3.0 <= busy["seconds"] < 30  # stopped soon after its deadline
    assert r.results["hostname"]["ok"]  # the next inspector still ran
    assert time.monotonic() - t < 120
