"""Change-aware rounds: what counts as a change of a VM's disk files (real files,
real qemu-img and qemu-io), and rounds that carry unchanged VMs forward without
an appliance."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from helpers.fake_pool import CountingSpawn, fake_pool
from helpers.qemu_images import qemu_img

from guestpool import VM, Disk, RoundOptions, Store, run_round
from guestpool.fleet._safety import ChainFiles, SafetyPolicy, check_vm
from guestpool.rounds._fingerprint import Fingerprint, difference, file_state, take_fingerprint
from guestpool.rounds._unchanged import verify

HOSTNAME = RoundOptions(budget=60, inspectors=["hostname"], pool_size=1)


def raw_image(path: Path, fill: bytes = b"\x01", size: int = 1 << 20) -> Path:
    path.write_bytes(fill * size)  # no format's magic: a plain raw disk
    return path


def qemu_io(fmt: str, path: Path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)], check=True,
                   capture_output=True, timeout=60)


def fingerprint(vm: VM) -> Fingerprint:
    files: ChainFiles = []
    check_vm(vm, SafetyPolicy(allowed_roots=[]), files)
    prints = take_fingerprint(files)
    assert prints is not None
    time.sleep(0.02)  # a later write lands on a later clock tick (see pool/README.md)
    return prints


@pytest.fixture
def chain(tmp_path: Path) -> VM:
    """A qcow2 overlay on a qcow2 base on a raw base: three files, one disk."""
    bottom = raw_image(tmp_path / "bottom.raw")
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(bottom), "-F", "raw",
             str(tmp_path / "base.qcow2"))
    qemu_img("create", "-q", "-f", "qcow2", "-b", str(tmp_path / "base.qcow2"), "-F", "qcow2",
             str(tmp_path / "top.qcow2"))
    return VM("chained", (Disk(str(tmp_path / "top.qcow2"), "qcow2"),))


def test_the_fingerprint_lists_every_file_of_the_chain(chain: VM, tmp_path: Path) -> None:
    prints = fingerprint(chain)
    assert [(Path(f["path"]).name, f["role"], f["format"]) for f in prints] == [
        ("top.qcow2", "disk", "qcow2"), ("base.qcow2", "backing", "qcow2"),
        ("bottom.raw", "backing", "raw")]
    assert prints[0]["header"] and prints[2]["header"] is None  # raw bytes are never read
    assert difference(chain, prints) is None


def test_a_rewritten_file_is_a_change(tmp_path: Path) -> None:
    disk = raw_image(tmp_path / "d.raw")
    vm = VM("v", (Disk(str(disk), "raw"),))
    prints = fingerprint(vm)
    with open(disk, "r+b") as f:  # same bytes, same size: only the times move
        f.write(b"\x01" * 4096)
    assert difference(vm, prints) == f"disk {disk}: mtime_ns changed"
    prints = fingerprint(vm)
    raw_image(tmp_path / "new.raw").rename(disk)  # replaced by another file
    assert difference(vm, prints) == f"disk {disk}: ino changed"


def test_a_write_into_the_qcow2_overlay_is_a_change(chain: VM) -> None:
    prints = fingerprint(chain)
    qemu_io("qcow2", Path(chain.disks[0].path), "write -P 0xab 0 64k")
    assert (why := difference(chain, prints)) and why.startswith(f"disk {chain.disks[0].path}:")


@pytest.mark.parametrize("layer, fmt", [("base.qcow2", "qcow2"), ("bottom.raw", "raw")])
def test_a_write_into_a_backing_file_is_a_change(chain: VM, tmp_path: Path, layer: str,
                                                  fmt: str) -> None:
    prints = fingerprint(chain)
    qemu_io(fmt, tmp_path / layer, "write -P 0xcd 4096 4096")
    assert (why := difference(chain, prints)) and why.startswith(
        f"backing {tmp_path / layer}:")


def test_mtime_put_back_with_touch_r_is_caught_by_ctime(tmp_path: Path) -> None:
    disk = raw_image(tmp_path / "d.raw")
    vm = VM("v", (Disk(str(disk), "raw"),))
    subprocess.run(["touch", "-r", str(disk), str(tmp_path / "when")], check=True)
    prints = fingerprint(vm)
    with open(disk, "r+b") as f:
        f.write(b"\x02" * 4096)
    subprocess.run(["touch", "-r", str(tmp_path / "when"), str(disk)], check=True)
    assert os.stat(disk).st_mtime_ns == prints[0]["mtime_ns"]
    assert difference(vm, prints) == f"disk {disk}: ctime_ns changed"


def test_the_qcow2_digest_sees_a_rebase_even_with_the_times_put_back(chain: VM,
                                                                    tmp_path: Path) -> None:
    top = Path(chain.disks[0].path)
    before = file_state(str(top), "qcow2", "disk")
    raw_image(tmp_path / "other.raw")
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", str(tmp_path / "other.raw"), "-F", "raw",
             str(top))
    after = file_state(str(top), "qcow2", "disk")
    assert before["header"] != after["header"]
    # a writer able to put mtime AND ctime back (root and a clock change) is still seen
    forged = [{**after, "header": before["header"]}]
    assert difference(VM("v", (Disk(str(top), "qcow2"),)), forged) == (
        f"disk {top}: header changed")


def test_a_file_swapped_for_a_fifo_is_a_change_and_never_blocks(tmp_path: Path) -> None:
    disk = raw_image(tmp_path / "d.raw")
    vm = VM("v", (Disk(str(disk), "raw"),))
    prints = fingerprint(vm)
    disk.unlink()
    os.mkfifo(disk)
    assert difference(vm, prints) == f"disk {disk} is no longer a regular file"
    disk.unlink()
    assert difference(vm, prints) == f"disk {disk} cannot be opened: No such file or directory"


def test_other_disks_are_a_change(tmp_path: Path) -> None:
    vm = VM("v", (Disk(str(raw_image(tmp_path / "a.raw")), "raw"),))
    prints = fingerprint(vm)
    grown = dataclasses.replace(vm, disks=(*vm.disks, Disk(str(tmp_path / "a.raw"), "raw")))
    assert difference(grown, prints) == "its disks are other files than at the last inspection"


# -- rounds --------------------------------------------------------------------------------


def small_fleet(tmp_path: Path, n: int = 3) -> list[VM]:
    return [VM(f"vm{i}", (Disk(str(raw_image(tmp_path / f"vm{i}.raw")), "raw"),),
               trust_group="default") for i in range(n)]


async def test_unchanged_vms_are_carried_forward_without_an_appliance(tmp_path: Path) -> None:
    fleet, store = small_fleet(tmp_path), Store(tmp_path / "r.db")
    first = await run_round(fleet, HOSTNAME, store=store, pool=fake_pool(CountingSpawn()))
    assert [r.state for r in first.results] == ["inspected"] * 3
    inspected_at = {v: s["inspected_at"] for v, s in store.vm_states().items()}
    started = time.perf_counter()
    second = await run_round(fleet, HOSTNAME, store=store,
                             pool=fake_pool(CountingSpawn(refuse=True)))
    assert time.perf_counter() - started < 1.0
    assert [r.state for r in second.results] == ["unchanged"] * 3
    assert second.boots == 0 and not second.not_reached
    assert all(r.timings["verify"] < 0.05 for r in second.results)
    summary = second.summary()
    assert (summary["covered"], summary["inspected"], summary["unchanged"]) == (3, 0, 3)
    assert second.plan is not None and second.plan.predicted == 3
    # the store shows what happened, and when the results were really inspected
    states = store.vm_states()
    assert {s["state"] for s in states.values()} == {"unchanged"}
    assert {v: s["inspected_at"] for v, s in states.items()} == inspected_at
    latest = store.latest("vm0")
    assert latest is not None and latest["state"] == "unchanged"
    assert latest["inspected_at"] == inspected_at["vm0"] < latest["at"]
    assert latest["results"]["hostname"]["value"] == "vm0"
    assert second.results[0].results["hostname"]["value"] == "vm0"
    assert store.last_round()["summary"]["unchanged"] == 3  # type: ignore[index]


async def test_a_changed_vm_is_inspected_and_the_rest_carried(tmp_path: Path) -> None:
    fleet, store = small_fleet(tmp_path), Store(tmp_path / "r.db")
    await run_round(fleet, HOSTNAME, store=store, pool=fake_pool(CountingSpawn()))
    with open(fleet[1].disks[0].path, "r+b") as f:
        f.write(b"\x03")
    spawn = CountingSpawn()
    second = await run_round(fleet, HOSTNAME, store=store, pool=fake_pool(spawn))
    assert {r.vm: r.state for r in second.results} == {
        "vm0": "unchanged", "vm1": "inspected", "vm2": "unchanged"}
    assert list(second.changed_disks) == ["vm1"] and second.reinspect == {"changed": 1}
    assert spawn.spawned == 1
    assert store.vm_states()["vm1"]["state"] == "inspected"


async def test_max_age_forces_a_full_inspection(tmp_path: Path) -> None:
    fleet, store = small_fleet(tmp_path), Store(tmp_path / "r.db")
    await run_round(fleet, HOSTNAME, store=store, pool=fake_pool(CountingSpawn()))
    old = dataclasses.replace(HOSTNAME, max_age=0.0)
    second = await run_round(fleet, old, store=store, pool=fake_pool(CountingSpawn()))
    assert [r.state for r in second.results] == ["inspected"] * 3
    assert second.reinspect == {"max-age": 3}
    recorded = store.fingerprints()
    assert not verify(fleet, recorded, recorded["vm0"]["context"], 3600).todo
    assert len(verify(fleet, recorded, recorded["vm0"]["context"], 3600,
                      now=time.time() + 3601).todo) == 3


async def test_other_inspectors_or_no_skipping_inspect_again(tmp_path: Path) -> None:
    fleet, store = small_fleet(tmp_path), Store(tmp_path / "r.db")
    await run_round(fleet, HOSTNAME, store=store, pool=fake_pool(CountingSpawn()))
    other = dataclasses.replace(HOSTNAME, inspectors=["hostname", "os"])
    second = await run_round(fleet, other, store=store, pool=fake_pool(CountingSpawn()))
    assert second.reinspect == {"inspectors": 3}
    off = dataclasses.replace(other, skip_unchanged=False)
    third = await run_round(fleet, off, store=store, pool=fake_pool(CountingSpawn()))
    assert [r.state for r in third.results] == ["inspected"] * 3 and not third.reinspect


async def test_a_result_with_a_failed_inspector_is_never_carried(tmp_path: Path) -> None:
    fleet, store = small_fleet(tmp_path), Store(tmp_path / "r.db")
    await run_round(fleet, HOSTNAME, store=store,
                    pool=fake_pool(CountingSpawn(failing=frozenset({"vm2"}))))
    second = await run_round(fleet, HOSTNAME, store=store, pool=fake_pool(CountingSpawn()))
    assert {r.vm: r.state for r in second.results}["vm2"] == "inspected"
    assert second.reinspect == {"never": 1}


def test_a_store_from_before_keeps_its_rows_readable(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(
        "CREATE TABLE results (id INTEGER PRIMARY KEY, round_id INTEGER, vm TEXT NOT NULL,"
        " at REAL NOT NULL, ok INTEGER NOT NULL, error TEXT, appliance INTEGER, strategy TEXT,"
        " attempts INTEGER, timings TEXT);"
        "INSERT INTO results VALUES (1, 1, 'old', 100.0, 1, 'null', 1, 'pooled', 1, '{}');"
        "INSERT INTO results VALUES (2, 1, 'bad', 100.0, 0, 'null', 1, 'pooled', 1, '{}');"
        "CREATE TABLE vms (name TEXT PRIMARY KEY, first_seen REAL, last_seen REAL, disks TEXT,"
        " trust_group TEXT, tags TEXT, priority INTEGER, last_scanned REAL, removed REAL);"
        "INSERT INTO vms (name, last_scanned)"
        " VALUES ('old', 100.0), ('bad', 100.0), ('new', NULL);")
    db.close()
    store = Store(tmp_path / "old.db")
    latest = store.latest("old")
    assert latest is not None and (latest["state"], latest["inspected_at"]) == ("inspected", 100)
    states = store.vm_states()
    assert {vm: s["state"] for vm, s in states.items()} == {
        "old": "inspected", "bad": "failed", "new": "never"}
    assert states["old"]["inspected_at"] == 100 and states["bad"]["inspected_at"] is None


async def test_the_command_line_plans_unchanged_vms_and_checks_max_age(tmp_path: Path) -> None:
    import json
    import sys

    from guestpool import write_manifest
    from guestpool.fleet._sources import open_source

    fleet, store = small_fleet(tmp_path), Store(tmp_path / "r.db")
    write_manifest(tmp_path / "fleet.json", fleet)
    source = open_source(str(tmp_path / "fleet.json"))
    source.load()
    # the round the command line would run: the manifest's folder rules
    await run_round(source, HOSTNAME, store=store,
                    pool=fake_pool(CountingSpawn(), safety=HOSTNAME.safety(source)))
    gp = [sys.executable, "-m", "guestpool", "scan", str(tmp_path / "fleet.json"), "--plan",
          "--json", "--inspectors", "hostname", "--pool", "1", "--store", str(tmp_path / "r.db")]
    plan = json.loads(subprocess.run(gp, capture_output=True, text=True, check=True).stdout)
    assert (plan["unchanged"], plan["predicted"]) == (3, 3)
    for args, unchanged in ((["--max-age", "0s"], 0), (["--no-skip-unchanged"], 0),
                            (["--max-age", "1d"], 3)):
        out = subprocess.run([*gp, *args], capture_output=True, text=True, check=True).stdout
        assert json.loads(out)["unchanged"] == unchanged, args
    bad = subprocess.run([*gp, "--max-age", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "use an age like" in bad.stderr
    assert "Traceback" not in bad.stderr
