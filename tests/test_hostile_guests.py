"""Hostile guests on real appliances: nothing a guest writes on its disks steers the
appliance outside /sysroot, hostile package databases fail alone (issue 13)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from helpers.pool_thread import PoolThread

from guestpool import VM
from guestpool.demo._images import image_from_tree

pytestmark = pytest.mark.appliance

BASE_OS = "ID=debian\nVERSION_ID=12\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"


def _root_tree(tree: Path, os_release: str = BASE_OS) -> Path:
    (tree / "etc").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "etc/os-release").write_text(os_release)
    (tree / "etc/hostname").write_text("hostile\n")
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    return tree


@pytest.fixture(scope="module")
def fstab_escape(tmp_path_factory: pytest.TempPathFactory) -> VM:
    """A root whose fstab mounts its second disk over the appliance's tools."""
    tmp = tmp_path_factory.mktemp("fstab")
    root = _root_tree(tmp / "root")
    (root / "srv/ok").mkdir(parents=True)
    (root / "mnt").mkdir()
    (root / "usr/sbin").mkdir(parents=True)
    os.symlink("/usr/sbin", root / "mnt/link")  # a symlinked mountpoint
    os.symlink("/usr/local/sbin", root / "mnt/dangling")  # exists only in the appliance
    (root / "etc/fstab").write_text(
        "LABEL=root / ext4 ro 0 1\n"
        "LABEL=evil /../usr/sbin ext4 ro 0 0\n"
        "LABEL=evil /a/../../run/udev/data ext4 ro 0 0\n"
        "LABEL=evil /mnt/link ext4 ro 0 0\n"
        "LABEL=evil /mnt/dangling ext4 ro 0 0\n"
        "LABEL=evil /srv/ok ext4 ro 0 0\n")
    evil = tmp / "evil"
    (evil / "sbin").mkdir(parents=True)
    (evil / "mount").write_text("#!/bin/sh\necho owned\n")
    disks = (image_from_tree(root, tmp / "root", 16),
             image_from_tree(evil, tmp / "evil", 16, label="evil"))
    return VM("fstab-escape", disks)


def test_fstab_cannot_mount_outside_sysroot(shared_pool: PoolThread, fstab_escape: VM) -> None:
    r = shared_pool.inspect(fstab_escape, ["os", "testinspectors:ApplianceMounts"])
    assert r.ok, r.error
    os_value = r.results["os"]["value"]
    assert set(os_value["mountpoints"]) == {"/", "/srv/ok"}, os_value
    assert os_value["refused_mountpoints"] == {
        "/../usr/sbin": "leaves the guest's tree",
        "/a/../../run/udev/data": "leaves the guest's tree",
        "/mnt/link": "resolves through a symlink",
        "/mnt/dangling": "does not exist in the guest (or is a dangling symlink)"}
    during = r.results["test-appliance-mounts"]["value"]
    # a benign job on the same pool: the appliance's own mounts are the same
    clean = shared_pool.inspect(VM("fstab-escape-again", fstab_escape.disks[1:]),
                                ["testinspectors:ApplianceMounts"])
    assert clean.ok and clean.results["test-appliance-mounts"]["value"] == during
    assert not any(" /usr/sbin " in line or "/run/udev/data " in line for line in during)


def test_an_appliance_a_guest_changed_is_retired_not_reused(shared_pool: PoolThread,
                                                            fstab_escape: VM) -> None:
    pool = shared_pool.pool
    assert pool is not None
    before = pool.stats.retirements["tainted"]
    r = shared_pool.inspect(VM("tamper", fstab_escape.disks[1:]), ["testinspectors:Tamper"])
    assert not r.ok and r.error and r.error["kind"] == "hostile", r
    assert "mount table" in r.error["message"]
    assert r.attempts == 1  # never handed to a second appliance
    assert pool.stats.retirements["tainted"] == before + 1


def _dpkg_status(tree: Path, name: str) -> None:
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(
        "Package: bash\nStatus: install ok installed\nVersion: 5.2-1\nArchitecture: amd64\n\n"
        f"Package: {name}\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n")


def test_hostile_package_databases_fail_alone(shared_pool: PoolThread,
                                              tmp_path: Path) -> None:
    huge = _root_tree(tmp_path / "huge")
    _dpkg_status(huge, "a" * (70 * 1024 * 1024))  # a 70 MiB package name
    view = _root_tree(tmp_path / "view", "ID=fedora\nVERSION_ID=40\n")
    (view / "var/lib/rpm").mkdir(parents=True)
    con = sqlite3.connect(view / "var/lib/rpm/rpmdb.sqlite")
    con.execute("CREATE VIEW Packages AS WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL "
                "SELECT x + 1 FROM r) SELECT randomblob(100000) AS blob FROM r")
    con.close()
    for name, tree, size, message in (("huge-name", huge, 200, "refusing a hostile database"),
                                      ("rpm-view", view, 16, "Packages is not a table")):
        vm = VM(name, (image_from_tree(tree, tmp_path / name, size),))
        r = shared_pool.inspect(vm, ["os", "packages", "users"])
        assert r.ok, r.error
        packages = r.results["packages"]
        assert not packages["ok"] and message in packages["error"]["message"], packages
        assert packages["seconds"] < 60
        assert r.results["os"]["ok"] and r.results["os"]["value"]["hostname"] == "hostile"
        assert r.results["users"]["ok"]


def test_a_looping_symlink_fails_one_field_not_the_vm(shared_pool: PoolThread,
                                                      tmp_path: Path) -> None:
    """Issue 29, item 4: ``/etc/hosts -> hosts`` and an ``/etc/os-release`` loop
    (ELOOP) make those facts unknown; every inspector still answers."""
    from guestpool.inspectors._registry import BUILTINS

    names = [cls.name for cls in BUILTINS]
    hosts = _root_tree(tmp_path / "hosts")
    (hosts / "etc/hosts").symlink_to("hosts")
    release = _root_tree(tmp_path / "release")
    (release / "etc/os-release").unlink()
    (release / "etc/os-release").symlink_to("os-release")
    (release / "usr/lib").mkdir(parents=True)
    (release / "usr/lib/os-release").symlink_to("../../etc/os-release")
    for name, tree, looped, distro in (("loop-hosts", hosts, "/etc/hosts", "debian"),
                                       ("loop-release", release, "/etc/os-release", "unknown")):
        vm = VM(name, (image_from_tree(tree, tmp_path / name, 16),))
        r = shared_pool.inspect(vm, names)
        assert r.ok, r.error
        failed = {k: v["error"] for k, v in r.results.items() if not v["ok"]}
        assert failed == {}, (name, failed)
        value = r.results["os"]["value"]
        assert value["hostname"] == "hostile"
        assert [(f["device"], f["kind"]) for f in value["findings"]] == [(looped, "unreadable")]
        assert "Too many levels of symbolic links" in value["findings"][0]["detail"]
        assert value["distro"] == distro  # unknown only where os-release is the loop


def test_stacked_guest_mounts_are_released_without_following_the_guest(
        shared_pool: PoolThread, tmp_path: Path) -> None:
    """Issue 29, item 3: fstab mounts a filesystem at /a/b/c, then the same one at
    /a, where it holds ``b/c -> /../../usr/sbin``. Unmounting /sysroot/a/b/c by
    its path would then name the appliance's /usr/sbin; release detaches the
    whole tree instead: the VM has its result, the appliance stays in service."""
    root = _root_tree(tmp_path / "root")
    (root / "a/b/c").mkdir(parents=True)
    (root / "etc/fstab").write_text("LABEL=root / ext4 ro 0 1\n"
                                    "LABEL=stack /a/b/c ext4 ro 0 0\n"
                                    "LABEL=stack /a ext4 ro 0 0\n")
    stack = tmp_path / "stack"
    (stack / "b").mkdir(parents=True)
    os.symlink("/../../usr/sbin", stack / "b/c")
    vm = VM("stacked", (image_from_tree(root, tmp_path / "root", 16),
                        image_from_tree(stack, tmp_path / "stack", 16, label="stack")))
    pool = shared_pool.pool
    assert pool is not None
    retired = sum(pool.stats.retirements.values())
    r = shared_pool.inspect(vm, ["os", "testinspectors:ApplianceMounts"])
    assert r.ok, r.error
    assert r.attempts == 1 and sum(pool.stats.retirements.values()) == retired
    assert r.results["os"]["value"]["hostname"] == "hostile"
    assert set(r.results["os"]["value"]["mountpoints"]) == {"/", "/a", "/a/b/c"}  # stacked
    # the appliance's own mounts are what they were before this VM
    clean = shared_pool.inspect(VM("after-stacked", vm.disks[1:]),
                                ["testinspectors:ApplianceMounts"])
    assert clean.ok and clean.results["test-appliance-mounts"]["value"] == \
        r.results["test-appliance-mounts"]["value"]


def test_a_huge_package_database_of_tiny_stanzas_is_cut_and_says_so(
        shared_pool: PoolThread, tmp_path: Path) -> None:
    """Issue 29, item 5: the package cap applies while parsing (a dpkg status of
    ~700,000 tiny stanzas was parsed whole, 1.56 GB for 128 MiB), and a cut list
    says it is cut."""
    tree = _root_tree(tmp_path / "tiny")
    (tree / "var/lib/dpkg").mkdir(parents=True)
    stanza = "Package: p{}\nStatus: install ok installed\nVersion: 1\n\n"
    with open(tree / "var/lib/dpkg/status", "w") as f:
        f.writelines(stanza.format(i) for i in range(700_000))  # ~33 MiB
    vm = VM("tiny-stanzas", (image_from_tree(tree, tmp_path / "tiny", 64),))
    r = shared_pool.inspect(vm, ["os", "packages"])
    assert r.ok, r.error
    packages = r.results["packages"]
    assert packages["ok"], packages["error"]
    assert packages["value"]["count"] == 20_000
    assert "more than 20000 packages" in packages["value"]["truncated"]
