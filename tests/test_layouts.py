"""Every layout of the fidelity corpus through the pooled cheap path: the exact facts
(distro, version, hostname, root, mountpoints, package count, named packages),
the VM's own device names, findings instead of "no OS", and zero drift when a VM
is scanned alone, in a batch, or after others."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from helpers.corpus import Corpus
from helpers.pool_thread import PoolThread

from guestpool import VM
from guestpool.demo._layouts import SUSE_PACKAGES
from guestpool.store._drift import diff

FACTS = ("type", "distro", "major_version", "minor_version", "product_name", "hostname",
         "arch", "root", "mountpoints", "package_format")


def same_group(vm: VM) -> VM:
    return dataclasses.replace(vm, trust_group="default")


@pytest.fixture(scope="module")
def scanned(corpus: Corpus, shared_pool: PoolThread) -> dict[str, Any]:
    """Every corpus VM inspected once (os + packages), one at a time."""
    out = {}
    for vm in corpus.vms:
        r = shared_pool.inspect(same_group(vm), ["os", "packages", "filesystems"])
        assert r.ok, (vm.name, r.error)
        out[vm.name] = r.results
    return out


def _value(results: dict[str, Any], name: str) -> Any:
    entry = results[name]
    assert entry["ok"], entry.get("error")
    return entry["value"]


def test_every_layout_gives_the_exact_facts(corpus: Corpus, scanned: dict[str, Any]) -> None:
    wrong = {}
    for vm in corpus.vms:
        want = corpus.expected[vm.name]
        os_value = _value(scanned[vm.name], "os")
        if not want.get("type"):  # nothing readable without a key: say so, never "none"
            assert os_value["type"] == "unknown", (vm.name, os_value)
            assert {f["kind"] for f in os_value["findings"]} >= set(want["findings"])
            continue
        got = {k: os_value.get(k) for k in FACTS if k in want}
        expected = {k: want[k] for k in FACTS if k in want}
        if got != expected:
            wrong[vm.name] = {k: (got[k], expected[k]) for k in got if got[k] != expected[k]}
        assert len(os_value["roots"]) == want["roots"], vm.name
        assert {f["kind"] for f in os_value["findings"]} == set(want["findings"]), vm.name
        packages = _value(scanned[vm.name], "packages")
        assert packages["count"] == want["package_count"], vm.name
        listed = {(p["name"], p["version"], p["release"], p["epoch"] or 0, p["arch"])
                  for p in packages["packages"]}
        for p in want["packages_sample"]:
            assert (p["name"], p["version"], p["release"], p["epoch"], p["arch"]) in listed, \
                (vm.name, p)
    assert not wrong, wrong


def test_windows_on_the_cheap_path(corpus: Corpus, scanned: dict[str, Any]) -> None:
    want = corpus.expected["windows"]["windows"]
    os_value = _value(scanned["windows"], "os")
    assert os_value["method"] == "cheap"
    assert (os_value["windows_systemroot"], os_value["windows_current_control_set"],
            os_value["drive_mappings"], os_value["product_variant"]) == (
        want["systemroot"], want["current_control_set"], want["drive_mappings"],
        want["product_variant"])
    assert os_value["osinfo"] == "win2k19"
    apps = {a["display_name"] for a in _value(scanned["windows"], "packages")["packages"]}
    assert apps == {a["display_name"] for a in want["applications"]}


def test_opensuse_ndb_rpmdb_on_the_cheap_path(corpus: Corpus, scanned: dict[str, Any]) -> None:
    """Leap 15.5: every package out of its ndb Packages.db, and libguestfs's
    package_management and osinfo for it."""
    want = corpus.expected["opensuse"]
    os_value = _value(scanned["opensuse"], "os")
    assert (os_value["package_management"], os_value["osinfo"]) == (
        want["package_management"], want["osinfo"]) == ("zypper", "opensuse15.5")
    packages = _value(scanned["opensuse"], "packages")
    assert packages["format"] == "rpm"
    assert sorted((p["name"], p["epoch"], p["version"], p["release"], p["arch"])
                  for p in packages["packages"]) == sorted(SUSE_PACKAGES)


def test_no_appliance_device_name_leaks(scanned: dict[str, Any]) -> None:
    """The pool's appliances hold a scratch disk and other VMs' disks: every name in
    every result is the VM's own (its disks start at /dev/sda)."""
    for name, results in scanned.items():
        for fs in _value(results, "filesystems"):
            assert fs["device"].startswith(("/dev/sda", "/dev/sdb", "/dev/md/", "/dev/mapper/",
                                            "/dev/vg")), (name, fs)
        devices = {fs["device"] for fs in _value(results, "filesystems")}
        os_value = _value(results, "os")
        for dev in os_value.get("mountpoints", {}).values():
            base = dev.split("btrfsvol:", 1)[-1].rsplit("/", 1)[0] if "btrfsvol:" in dev else dev
            assert base in devices, (name, dev, devices)


def test_keys_never_reach_results(corpus: Corpus, scanned: dict[str, Any]) -> None:
    secrets = {Path(k.file).read_text().splitlines()[0] for vm in corpus.vms for k in vm.keys}
    text = repr(scanned)
    assert secrets and not any(s in text for s in secrets)


def test_same_vm_alone_in_a_batch_and_after_others_gives_identical_results(
        corpus: Corpus, shared_pool: PoolThread) -> None:
    """Names and facts do not depend on what else the appliance holds: a VM read
    alone, second in a batch whose first VM has a volume group of the same name,
    and after other VMs, gives the same results and no drift."""
    a, b = same_group(corpus.vm("vgclash-a")), same_group(corpus.vm("vgclash-b"))
    alone = shared_pool.inspect(b, ["os", "filesystems", "packages"])
    batch = shared_pool.call(_batch, shared_pool.pool, [a, b])
    after = shared_pool.inspect(b, ["os", "filesystems", "packages"])
    first = {k: v["value"] for k, v in alone.results.items()}
    assert _value(batch[0].results, "os")["hostname"] == "clash-a"
    for other in (batch[1], after):
        assert other.ok, other.error
        values = {k: v["value"] for k, v in other.results.items()}
        assert values == first
        assert all(not diff(name, first[name], values[name]) for name in first)


async def _batch(pool: Any, vms: list[VM]) -> list[Any]:
    return list(await pool.inspect_batch(vms, ["os", "filesystems", "packages"]))
