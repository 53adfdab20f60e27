"""Scanning needs no root: an unprivileged user scans images it can read (issue 13)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet

from guestpool.appliance._accel import resolve_accel

pytestmark = pytest.mark.appliance
USER = "gp-test-user"


@pytest.fixture(scope="module")
def unprivileged() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("creating a test user needs root (CI runs as root)")
    created = False
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        USER], check=True, capture_output=True)
        entry, created = pwd.getpwnam(USER), True
    yield entry
    if created:
        subprocess.run(["userdel", USER], capture_output=True)


def test_a_scan_runs_as_an_unprivileged_user(unprivileged: pwd.struct_passwd,
                                             demo_fleet: DemoFleet) -> None:
    home = Path(tempfile.mkdtemp(prefix="gp-unpriv-", dir="/var/tmp"))
    try:
        fleet = home / "fleet"
        fleet.mkdir()
        vms = demo_fleet.one_of_each()[:2]
        entries = []
        for vm in vms:
            disks = []
            for d in vm.disks:
                target = fleet / Path(d.path).name
                subprocess.run(["cp", "--sparse=always", d.path, str(target)], check=True)
                disks.append({"path": target.name, "format": d.format})
            entries.append({"name": vm.name, "disks": disks})
        (fleet / "fleet.json").write_text(json.dumps({"vms": entries}))
        for path in (home, *home.rglob("*")):
            os.chown(path, unprivileged.pw_uid, unprivileged.pw_gid)
        accel = resolve_accel().accel  # the probe's verdict, already cached by root
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8",
               "LIBGUESTFS_BACKEND": "direct"}
        r = subprocess.run(
            ["runuser", "-u", USER, "--", str(Path(sys.executable).with_name("guestpool")), "scan",
             str(fleet / "fleet.json"), "--budget", "400", "--pool", "1", "--accel", accel,
             "--inspectors", "os,packages", "--json", "--store", str(home / "gp.db")],
            capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads(r.stdout)
        assert summary["covered"] == len(vms), summary
        for vm in summary["vms"]:
            assert vm["results"]["os"]["value"]["hostname"] == \
                demo_fleet.truth[vm["vm"]]["os"]["hostname"]
        assert not list(home.rglob("*.qcow2.lock"))
    finally:
        shutil.rmtree(home, ignore_errors=True)
