"""Real appliances: ground truth, reuse, read-only disks, bad images, plugins."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from conftest import DemoFleet, PoolThread, sha256

from guestpool import VM, Disk

pytestmark = pytest.mark.appliance


def same_group(vm: VM) -> VM:
    return dataclasses.replace(vm, trust_group="default")


def test_every_kind_matches_ground_truth(shared_pool: PoolThread, demo_fleet: DemoFleet) -> None:
    for vm in demo_fleet.one_of_each():
        truth = demo_fleet.truth[vm.name]
        r = shared_pool.inspect(same_group(vm), ["os", "filesystems"])
        assert r.ok, r.error
        os_value = r.results["os"]["value"]
        assert r.results["os"]["version"] == "1"
        if truth["os"]["type"] == "none":
            assert os_value["type"] == "none"
        else:
            for key in ("type", "distro", "version", "hostname", "arch", "package_format",
                        "package_manager"):
                assert os_value[key] == truth["os"][key], (vm.name, key)
            if "mountpoints" in truth["os"]:
                assert set(os_value["mountpoints"]) == set(truth["os"]["mountpoints"])
        seen = {(f["type"], f["uuid"], f["label"]) for f in r.results["filesystems"]["value"]}
        want = {(f["type"], f["uuid"], f["label"]) for f in truth["filesystems"]}
        assert seen == want, vm.name


def test_appliances_are_reused_not_rebooted(shared_pool: PoolThread,
                                            demo_fleet: DemoFleet) -> None:
    assert shared_pool.pool is not None
    pids: dict[int | None, set[int | None]] = {}
    boots_before = shared_pool.pool.stats.boots
    for vm in demo_fleet.vms[:6]:
        r = shared_pool.inspect(same_group(vm), ["hostname"])
        assert r.ok, r.error
        assert r.results["hostname"]["value"] == demo_fleet.truth[vm.name].get(
            "os", {}).get("hostname")
        pids.setdefault(r.appliance, set()).add(r.qemu_pid)
    assert shared_pool.pool.stats.boots == boots_before
    assert all(len(p) == 1 for p in pids.values())


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
                                 "testinspectors:Unserialisable"])
    assert r.ok
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


def test_killed_qemu_fails_over_and_is_replaced(shared_pool: PoolThread,
                                               demo_fleet: DemoFleet) -> None:
    pool = shared_pool.pool
    assert pool is not None
    victim = next(a for a in pool.appliances.values() if a.state == "idle")
    assert victim.qemu_pid is not None
    # the victim is the first idle appliance of its group, so the job goes to it first
    vm = dataclasses.replace(demo_fleet.vms[0], trust_group=victim.trust_group or "default")
    boots = pool.stats.boots
    os.kill(victim.qemu_pid, 9)
    r = shared_pool.inspect(vm, ["hostname"])
    assert r.ok, r.error
    assert r.appliance != victim.id
    assert victim.id not in pool.appliances
    import time

    deadline = time.monotonic() + 120
    while pool.stats.boots == boots and time.monotonic() < deadline:
        time.sleep(1)
    assert pool.stats.boots == boots + 1


def test_disks_are_never_written(shared_pool: PoolThread, demo_fleet: DemoFleet) -> None:
    # runs after the other pooled tests in this module (pytest keeps file order)
    assert {p: sha256(p) for p in demo_fleet.digests} == demo_fleet.digests
