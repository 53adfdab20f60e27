"""Built-in and plugin inspectors against ground truth and hostile guests (real appliances)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet
from helpers.pool_thread import PoolThread

from guestpool import VM
from guestpool.demo._images import image_from_tree
from guestpool.inspectors._inventory import fingerprint, parse_authorized_keys
from guestpool.inspectors._registry import BUILTINS
from guestpool.supply._distro import full_version

ALL = ["os", "filesystems", "packages", "users", "files", "services"]
VERSIONS = {cls.name: cls.version for cls in BUILTINS}


@pytest.mark.appliance
def test_inventory_inspectors_match_ground_truth(shared_pool: PoolThread,
                                                 demo_fleet: DemoFleet) -> None:
    for vm in demo_fleet.one_of_each():
        truth = demo_fleet.truth[vm.name]
        r = shared_pool.inspect(dataclasses.replace(vm, trust_group="default"), ALL)
        assert r.ok, r.error
        for name in ALL:
            assert r.results[name]["ok"], (vm.name, name, r.results[name].get("error"))
            assert r.results[name]["version"] == VERSIONS[name]
        if truth["os"]["type"] == "none":
            assert r.results["packages"]["value"]["count"] == 0
            continue
        pk = r.results["packages"]["value"]
        assert pk["format"] == truth["os"]["package_format"]
        assert {p["name"]: full_version(p, pk["format"]) for p in pk["packages"]} \
            == truth["packages"], vm.name
        users = r.results["users"]["value"]
        named = {a["name"]: a["uid"] for a in users["accounts"]}
        for u in truth["users"]:
            assert named[u["name"]] == u["uid"]
            keys = users["authorized_keys"][u["name"]]
            assert len(keys) == u["keys"]
            assert all(k["type"] == "ssh-ed25519" and k["fingerprint"] for k in keys)
        assert users["uid0_not_root"] == truth["extra_uid0"]
        assert users["empty_password"] == truth["extra_uid0"]  # the planted toor has none
        assert any(g["rule"].startswith(truth["users"][0]["name"]) for g in users["sudoers"])
        files = r.results["files"]["value"]
        for path in ("/etc/passwd", "/etc/ssh/sshd_config"):
            assert files[path]["sha256"] == truth["files"][path]
        svc = r.results["services"]["value"]
        assert svc["enabled_units"] == truth["services"]
        assert [c["entry"] for c in svc["cron"]] == truth["cron"]


@pytest.fixture(scope="module")
def hostile_vm(tmp_path_factory: pytest.TempPathFactory) -> VM:
    tmp = tmp_path_factory.mktemp("hostile")
    tree = tmp / "tree"
    (tree / "etc/ssh").mkdir(parents=True)
    (tree / "etc/cron.d").mkdir()
    (tree / "etc/sudoers.d").mkdir()
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "etc/os-release").write_text("ID=debian\nVERSION_ID=12\n")
    (tree / "etc/hostname").write_text("x" * 100_000)  # absurdly long hostname
    with open(tree / "etc/ssh/sshd_config", "wb") as f:  # 2 GB sparse file
        f.truncate(2 * 1024**3)
    with open(tree / "etc/passwd", "w") as f:  # huge passwd: 400k accounts (~20 MB)
        for i in range(400_000):
            f.write(f"user{i}:x:{i + 1000}:100::/home/user{i}:/bin/sh\n")
    os.symlink("loop-b", tree / "etc/loop-a")
    os.symlink("loop-a", tree / "etc/loop-b")
    os.symlink("/etc/loop-a", tree / "etc/crontab")  # crontab is a symlink loop
    os.mkfifo(tree / "etc/sudoers.d/fifo")
    os.mknod(tree / "etc/cron.d/devnode", 0o600 | 0o020000, os.makedev(1, 3))
    (tree / os.fsdecode(b"etc/cron.d/bad-\xff\xfe-name")).write_bytes(b"* * * * * root x\n")
    disk = image_from_tree(tree, tmp / "hostile", 2200, "qcow2")
    return VM("hostile", (disk,))


@pytest.mark.appliance
def test_hostile_guest_data_stays_bounded(shared_pool: PoolThread, hostile_vm: VM) -> None:
    r = shared_pool.inspect(hostile_vm, ALL)
    assert r.ok, r.error
    for name in ALL:  # every inspector ends well on this guest: nothing here is an error
        assert r.results[name]["ok"], (name, r.results[name])
    assert r.results["packages"]["value"] == {"format": "unknown", "count": 0, "packages": []}
    (fs,) = r.results["filesystems"]["value"]
    assert fs["type"] == "ext4" and fs["label"] == "root"
    os_value = r.results["os"]["value"]
    assert os_value["distro"] == "debian"
    assert len(os_value["hostname"]) <= 255
    assert r.results["users"]["ok"], r.results["users"]
    users = r.results["users"]["value"]
    assert 0 < len(users["accounts"]) <= 10_000
    assert users["authorized_keys"]["..."][0]["type"] == "capped"
    files = r.results["files"]["value"]
    assert "over the" in files["/etc/ssh/sshd_config"]["error"]
    assert "/etc/crontab" not in files or "error" in files["/etc/crontab"]
    # the crontab is a symlink loop, cron.d holds a device node and a non-UTF-8 name
    # (escaped, so it cannot be opened): none of them yields an entry, none breaks it
    assert r.results["services"]["value"]["cron"] == []
    assert all(k.encode("utf-8") for k in files)


@pytest.mark.appliance
def test_installed_plugin_runs_through_the_pool(shared_pool: PoolThread,
                                                demo_fleet: DemoFleet) -> None:
    example = Path(__file__).parent.parent / "examples" / "world_writable"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", str(example)],
                   check=True)
    listing = subprocess.run([sys.executable, "-m", "guestpool", "inspectors", "list"],
                             capture_output=True, text=True, check=True).stdout
    assert "world-writable" in listing
    for vm in demo_fleet.vms[:2]:
        truth = demo_fleet.truth[vm.name]
        r = shared_pool.inspect(dataclasses.replace(vm, trust_group="default"),
                                ["world-writable"])
        assert r.ok and r.results["world-writable"]["ok"], r
        value = r.results["world-writable"]["value"]
        if truth["os"]["type"] == "none":
            assert value is None
            continue
        assert value["world_writable"] == truth["world_writable"]
        assert [e["path"] for e in value["setid"]] == truth["setid"]


def test_authorized_keys_parsing() -> None:
    keys = parse_authorized_keys([
        "# comment", "",
        'from="10.0.0.1" ssh-ed25519 '
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@x",
        "garbage line",
    ])
    assert keys[0]["type"] == "ssh-ed25519"
    assert keys[0]["options"] == 'from="10.0.0.1"'
    assert keys[0]["fingerprint"].startswith("SHA256:")
    assert keys[1]["type"] == "invalid"
    assert fingerprint("!!!") is None


@pytest.mark.appliance
def test_windows_registry_values_are_read_through_the_facade(shared_pool: PoolThread,
                                                             tmp_path: Path) -> None:
    from guestpool.demo._regf import Key, hive

    tree = tmp_path / "win"
    config = tree / "Windows" / "System32" / "config"
    config.mkdir(parents=True)
    (config / "SOFTWARE").write_bytes(hive(Key("ROOT", children=[Key("Microsoft", children=[
        Key("Windows NT", children=[Key("CurrentVersion", values={
            "ProductName": "Windows Server 2022 Datacenter",
            "CurrentMajorVersionNumber": 10})])])])))
    (config / "SYSTEM").write_bytes(b"regf" + os.urandom(9000))  # a hostile, broken hive
    vm = VM("windowsish", (image_from_tree(tree, tmp_path / "win", 32),))
    r = shared_pool.inspect(vm, ["testinspectors:Registry"])
    assert r.ok and r.results["test-registry"]["ok"], r
    value = r.results["test-registry"]["value"]
    assert value["ProductName"] == "Windows Server 2022 Datacenter"
    assert value["CurrentMajorVersionNumber"] == 10
    assert value["Missing"].startswith("error:") and "no value 'Missing'" in value["Missing"]
    assert value["garbage"].startswith("error:")
