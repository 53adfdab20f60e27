"""Budgeted rounds with real appliances: staleness, bad images, crash safety, drift."""

from __future__ import annotations

import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from helpers.fleet import DemoFleet
from helpers.pool_thread import PoolThread
from helpers.proc import wait_for_line

from guestpool import VM, Disk, RoundOptions, Store, run_round, write_manifest
from guestpool.bench.simulate import Costs, simulate
from guestpool.demo._images import image_from_tree

pytestmark = pytest.mark.appliance


async def test_two_rounds_cover_disjoint_vms_and_bad_images_fail_cleanly(
        demo_fleet: DemoFleet, tmp_path: Path) -> None:
    # sixteen copies of the demo fleet: more than two rounds can cover (eight were,
    # until jobs got cheaper)
    good = [dataclasses.replace(v, name=f"{v.name}-{copy}", trust_group="default")
            for copy in "abcdefghijklmnop" for v in demo_fleet.vms]
    corrupt = tmp_path / "corrupt.qcow2"
    corrupt.write_bytes(b"QFI\xfb" + b"\0" * 1000)
    # named to sort first among never-scanned VMs of their trust group
    bad = [VM("bad-missing", (Disk(str(tmp_path / "gone.qcow2"), "qcow2"),),
              trust_group="default"),
           VM("bad-corrupt", (Disk(str(corrupt), "qcow2"),), trust_group="default")]
    store = Store(tmp_path / "r.db")
    budget = 45.0
    options = RoundOptions(budget=budget, pool_size=1, inspectors=["hostname"])
    first = await run_round(good + bad, options,
                            store=store)
    assert first.overrun <= 3.0
    assert {r.vm for r in first.failed} == {"bad-missing", "bad-corrupt"}
    assert all(r.error and r.error["kind"] == "image" for r in first.failed)
    assert first.covered and first.not_reached
    second = await run_round(good + bad, options,
                             store=store)
    assert second.overrun <= 3.0
    one = {r.vm for r in first.covered}
    assert {r.vm for r in second.unchanged} == one  # verified on the host, not inspected again
    two = {r.vm for r in second.results if r.state != "unchanged"}
    assert one.isdisjoint(two), (one, two)
    # recorded, not retried first: only once every never-inspected VM was reached
    if {"bad-missing", "bad-corrupt"} & two:
        assert {v.name for v in good} <= one | two, sorted({v.name for v in good} - one - two)
    for r in first.covered + second.inspected:
        truth = demo_fleet.truth[r.vm.rsplit("-", 1)[0]]
        assert r.results["hostname"]["value"] == truth["os"].get("hostname")
    # the simulator, fed this round's measured costs, predicts its coverage within 25%
    costs = Costs(boot=(statistics.fmean(second.boot_seconds), 0.5),
                  **{k: (statistics.fmean(r.timings[k] for r in second.inspected), 0.1)
                     for k in ("attach", "inspect", "detach")})
    simulated = await anyio.to_thread.run_sync(simulate, len(good) - len(one), 1, budget, costs)
    real = len(second.inspected)
    assert abs(len(simulated.covered) - real) <= max(1, 0.25 * real), (simulated.summary(), real)


def test_sigkill_mid_round_loses_no_reported_result(demo_fleet: DemoFleet,
                                                   tmp_path: Path) -> None:
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, [dataclasses.replace(v, trust_group="default")
                              for v in demo_fleet.vms])
    db = tmp_path / "r.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "guestpool", "scan", str(manifest), "--store", str(db),
         "--pool", "1", "--budget", "300", "--inspectors", "hostname", "--allow-path",
         str(demo_fleet.manifest.parent)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    reported, lines = [], []
    assert proc.stderr is not None
    try:
        for _ in range(2):
            line = wait_for_line(proc.stderr, lambda text: ": ok, job " in text, 240)
            reported.append(line.split("] ", 1)[1].split(":", 1)[0])
            lines.append(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(reported) == 2
    # each line tells the job's own time (attach to detach), apart from any wait
    assert all(float(line.split(", job ")[1].split(" s")[0]) < 30 for line in lines), lines
    store = Store(db)
    for name in reported:
        latest = store.latest(name)
        assert latest is not None and latest["ok"], name
    time.sleep(2)  # the orphaned worker notices its parent is gone and exits
    # the next scan closes the killed one's round, counted from what it stored
    subprocess.run([sys.executable, "-m", "guestpool", "scan", str(manifest), "--store",
                    str(db), "--pool", "1", "--budget", "5", "--inspectors", "hostname",
                    "--allow-path", str(demo_fleet.manifest.parent)], capture_output=True,
                   timeout=120)
    killed = store.recent_rounds(5)[-1]
    assert killed["summary"]["state"] == "interrupted", killed
    assert killed["summary"]["covered"] >= len(reported)
    store.close()


def _tree(root: Path, nginx: str, users: list[str], permit_root: str) -> Path:
    (root / "etc/ssh").mkdir(parents=True)
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    (root / "etc/hostname").write_text("drifty\n")
    (root / "etc/passwd").write_text("".join(
        f"{u}:x:{1000 + i}:{1000 + i}::/home/{u}:/bin/sh\n" for i, u in enumerate(users)))
    (root / "etc/ssh/sshd_config").write_text(f"PermitRootLogin {permit_root}\n")
    (root / "var/lib/dpkg/status").write_text(
        f"Package: nginx\nStatus: install ok installed\nArchitecture: amd64\n"
        f"Version: {nginx}\n\nPackage: bash\nStatus: install ok installed\n"
        f"Architecture: amd64\nVersion: 5.2.15-2\n")
    return root


def test_drift_between_rounds_is_exact(shared_pool: PoolThread, tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    inspectors = ["packages", "users", "files"]
    disk = image_from_tree(_tree(tmp_path / "v1", "1.22.1-9", ["root", "alice"], "no"),
                           tmp_path / "vm", 32)
    vm = VM("drifty", (disk,))
    r1 = shared_pool.inspect(vm, inspectors)
    assert r1.ok and all(e["ok"] for e in r1.results.values()), r1
    assert store.record(1, r1) == []
    image_from_tree(_tree(tmp_path / "v2", "1.22.1-9+deb12u1", ["root", "alice", "eve"], "yes"),
                    tmp_path / "vm", 32)
    r2 = shared_pool.inspect(vm, inspectors)
    assert r2.ok
    changes = store.record(2, r2)
    got = sorted((c["inspector"], c["kind"], c["key"], c["before"], c["after"])
                 for c in changes)
    assert got[0] == ("files", "file-changed", "/etc/passwd",
                      r1.results["files"]["value"]["/etc/passwd"]["sha256"],
                      r2.results["files"]["value"]["/etc/passwd"]["sha256"])
    assert [g[:3] for g in got] == [
        ("files", "file-changed", "/etc/passwd"),
        ("files", "file-changed", "/etc/ssh/sshd_config"),
        ("packages", "package-changed", "nginx:amd64"),
        ("users", "user-added", "account:eve"),
    ]
    assert got[2][3:] == ("1.22.1-9", "1.22.1-9+deb12u1")
    assert store.drift("drifty") and len(store.drift("drifty")) == 4
