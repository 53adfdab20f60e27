"""Fault handling with real appliances: stopped qemu, killed supervisor, clean exit."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest
import trio
from helpers.fleet import DemoFleet

from guestpool import Pool

pytestmark = pytest.mark.appliance


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.fixture
def app_folders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The temporary folders this test's appliances make (not another process's:
    the suite may share the machine with a running guestpool)."""
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        folder = real(*args, **kwargs)
        made.append(folder)
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    return made


def _left(folders: list[str]) -> list[str]:
    assert folders, "the test made no appliance folder: the leak check would see nothing"
    return [f for f in folders if os.path.exists(f)]


async def test_stopped_qemu_is_killed_and_replaced_and_exit_is_clean(
        demo_fleet: DemoFleet, app_folders: list[str]) -> None:
    vm = dataclasses.replace(demo_fleet.vms[0], trust_group="default")
    pids: list[int] = []
    async with Pool(1) as pool:  # the default deadlines: minutes, not seconds
        (app,) = pool.appliances.values()
        assert app.qemu_pid is not None
        pids += [app.pid, app.qemu_pid]
        os.kill(app.qemu_pid, signal.SIGSTOP)
        start = time.monotonic()
        r = await pool.inspect(vm, ["hostname"])
        elapsed = time.monotonic() - start
        assert r.ok, r.error
        assert r.attempts == 2 and r.first_error is not None
        assert "stopped for" in r.first_error["message"], r.first_error
        assert r.appliance != app.id
        assert pool.stats.retirements["error"] == 1
        # noticed in seconds: the rest is the replacement's boot and the job
        noticed = elapsed - pool.stats.boot_seconds[-1] - r.timings["job"]
        print(f"stopped qemu noticed and the job retried after {noticed:.1f} s")
        assert noticed < 6, noticed
        assert wait_gone([app.pid, app.qemu_pid], 5) == []
        # an appliance whose qemu grew past the memory bound is retired after its job
        pool.max_rss_mb = 1
        (app2,) = [a for a in pool.appliances.values() if a.state == "idle"]
        assert app2.qemu_pid is not None
        pids += [app2.pid, app2.qemu_pid]
        assert (await pool.inspect(vm, ["hostname"])).ok
        assert pool.stats.retirements["memory"] == 1
    assert wait_gone(pids, 5) == []
    assert _left(app_folders) == []


SUPERVISOR = """
import trio
from guestpool import Pool
async def main():
    async with Pool(1) as pool:
        (app,) = pool.appliances.values()
        print(app.pid, app.qemu_pid, app.workdir, flush=True)
        await trio.sleep(600)
trio.run(main)
"""


def test_killed_supervisor_leaves_no_worker_qemu_or_files() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        pids, workdir = proc.stdout.readline().rsplit(maxsplit=1)
        worker, qemu = map(int, pids.split())
        assert alive(worker) and alive(qemu) and os.path.isdir(workdir)
    finally:
        proc.kill()
        proc.wait()
    assert wait_gone([worker, qemu], 5) == []
    assert not os.path.exists(workdir)  # the worker removed its own temp folder


async def test_cold_strategy_boots_once_per_vm(demo_fleet: DemoFleet) -> None:
    async with Pool(1, strategy="cold") as pool:
        for vm in demo_fleet.vms[:2]:
            r = await pool.inspect(vm, ["os"])
            assert r.ok, r.error
            assert r.strategy == "cold"
            assert r.timings["boot"] > 0
            want = demo_fleet.truth[vm.name]["os"]
            got = r.results["os"]["value"]
            assert got["type"] == want["type"]
            if want["type"] == "linux":
                assert got["hostname"] == want["hostname"]
        assert pool.stats.boots == 2


async def test_cold_strategy_names_a_two_disk_vms_disks_as_the_vm_does(
        demo_fleet: DemoFleet) -> None:
    """An appliance launched with the VM's disks: the kernel names them in the order
    its SCSI scan finished, libguestfs's API in the order they were added. The
    first disk is /dev/sda in the results either way, and every mount reaches the
    disk it names."""
    vm = next(v for v in demo_fleet.vms if demo_fleet.truth[v.name]["kind"] == "twodisk")
    async with Pool(1, strategy="cold") as pool:
        r = await pool.inspect(vm, ["os", "filesystems"])
    assert r.ok, r.error
    os_value = r.results["os"]["value"]
    assert os_value["hostname"] == demo_fleet.truth[vm.name]["os"]["hostname"]
    mounts = os_value["mountpoints"]
    assert set(mounts) == {"/", "/srv"}
    assert mounts["/"].startswith("/dev/sda") and mounts["/srv"].startswith("/dev/sdb"), mounts
    labels = {fs["device"]: fs["label"] for fs in r.results["filesystems"]["value"]}
    assert labels[mounts["/"]] == "root" and labels[mounts["/srv"]] == "srv", labels


def test_library_works_under_asyncio(demo_fleet: DemoFleet) -> None:
    import anyio

    async def main() -> None:
        async with Pool(1) as pool:
            r = await pool.inspect(demo_fleet.vms[0], ["hostname"])
            assert r.ok, r.error
            assert r.results["hostname"]["value"] == demo_fleet.truth[demo_fleet.vms[0].name][
                "os"]["hostname"]

    anyio.run(main, backend="asyncio")


async def test_cancelled_spawn_leaves_no_temp_folder(app_folders: list[str]) -> None:
    """A replacement boot started as the pool closes is cancelled inside spawn."""
    from guestpool import WorkerAppliance

    spawned = []
    with trio.CancelScope() as scope:
        scope.cancel()
        spawned.append(await WorkerAppliance.spawn())
    for app in spawned:  # the process may start before the cancellation lands
        await app.kill()
    assert _left(app_folders) == []
