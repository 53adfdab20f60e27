"""The demo fleet: its plan, and the hard kinds it takes from the corpus (overlays on
templates inside the fleet folder, key files, ground truth), checked on real images
and once through real appliances."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers.fleet import DemoFleet, sha256
from helpers.pool_thread import PoolThread

from guestpool import VM
from guestpool.demo._hard import OS_FACTS, TEMPLATES
from guestpool.demo._kinds import HARD_KINDS, KINDS, QUICKSTART, WEIGHTS, plan
from guestpool.fleet._safety import SafetyPolicy, check_vm

HARD_FLEET = QUICKSTART + len(HARD_KINDS) + 9  # 40: every hard kind, then one more


def test_demo_plan_covers_every_kind() -> None:
    kinds = [s.kind for s in plan(30)]
    assert set(kinds) == set(KINDS) | set(HARD_KINDS[:30 - QUICKSTART])
    assert kinds[: len(KINDS)] == list(KINDS)


def test_the_quickstart_vms_are_as_before_hard_kinds() -> None:
    """The first 24 VMs are the easy plan of generator 7, unchanged."""
    cycle = [k for k, w in WEIGHTS.items() for _ in range(w)]
    before = list(KINDS) + [cycle[i % len(cycle)] for i in range(len(KINDS), QUICKSTART)]
    assert [s.kind for s in plan(QUICKSTART)] == before
    assert [s.name for s in plan(QUICKSTART)] == [f"vm{i:05d}-{k}" for i, k in enumerate(before)]


def test_hard_kinds_come_after_the_quickstart_and_are_about_a_tenth() -> None:
    specs = plan(1000)
    assert [s.kind for s in specs[QUICKSTART:QUICKSTART + len(HARD_KINDS)]] == list(HARD_KINDS)
    hard = [s for s in specs if s.kind in HARD_KINDS]
    assert 0.09 <= len(hard) / len(specs) <= 0.11
    counts = {k: sum(s.kind == k for s in hard) for k in HARD_KINDS}
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    # an easy VM keeps the kind, name and seed it had before hard kinds existed
    cycle = [k for k, w in WEIGHTS.items() for _ in range(w)]
    assert all(s.kind == cycle[s.index % len(cycle)] for s in specs[QUICKSTART:]
               if s.kind not in HARD_KINDS)


# -- a generated fleet with hard kinds (may build the corpus: an appliance) ------------

@pytest.fixture(scope="module")
def hard_fleet(tmp_path_factory: pytest.TempPathFactory) -> DemoFleet:
    return DemoFleet(tmp_path_factory.mktemp("hard-fleet"), HARD_FLEET)


def _hard(fleet: DemoFleet) -> list[VM]:
    return [vm for vm in fleet.vms if fleet.truth[vm.name]["kind"] in HARD_KINDS]


@pytest.mark.appliance
def test_hard_vms_are_confined_overlays_with_keys_and_truth(hard_fleet: DemoFleet) -> None:
    folder = hard_fleet.directory.resolve()
    corpus_expected = json.loads((Path(folder) / TEMPLATES / "templates.json").read_text())
    hard = _hard(hard_fleet)
    assert {hard_fleet.truth[vm.name]["kind"] for vm in hard} == set(HARD_KINDS)
    assert len(hard) == len(HARD_KINDS) + 1
    policy = SafetyPolicy(disk_roots=[str(folder)])
    for vm in hard:
        kind = hard_fleet.truth[vm.name]["kind"]
        assert vm.clone_of == f"{kind}-template" and vm.tags == (kind, "hard")
        checked = check_vm(vm, policy)  # every backing file and key inside the fleet folder
        for disk in checked.disks:
            info = json.loads(subprocess.run(
                ["qemu-img", "info", "--output=json", "--backing-chain", disk.path],
                capture_output=True, text=True, check=True).stdout)
            assert disk.format == "qcow2" and len(info) == 2, info
            assert Path(info[1]["filename"]).parent == folder / TEMPLATES
        corpus_vm = corpus_expected["vms"][kind]
        assert len(vm.disks) == len(corpus_vm["entry"]["disks"])
        assert [Path(k.file).name for k in vm.keys] == [
            k["file"] for k in corpus_vm["entry"].get("keys", ())]
        assert all(Path(k.file).read_text() for k in checked.keys)
        truth, expected = hard_fleet.truth[vm.name], corpus_vm["expected"]
        assert truth["corpus"] == kind
        assert truth["os"] == {k: expected[k] for k in OS_FACTS}
        assert truth["package_count"] == expected["package_count"]
    assert {hard_fleet.truth[vm.name]["kind"] for vm in hard if vm.keys} == {"luks-lvm"}
    # easy VMs are untouched by the hard kinds: the quickstart's VMs are all easy
    assert all(hard_fleet.truth[vm.name]["kind"] in KINDS for vm in hard_fleet.vms[:QUICKSTART])


@pytest.mark.appliance
def test_hard_kinds_report_their_truth_through_the_pool(hard_fleet: DemoFleet,
                                                       shared_pool: PoolThread) -> None:
    """Each hard kind scanned once by a pooled appliance gives the corpus's exact facts."""
    digests = {d.path: sha256(d.path) for vm in _hard(hard_fleet) for d in vm.disks}
    seen: dict[str, Any] = {}
    wrong = {}
    for vm in _hard(hard_fleet):
        truth = hard_fleet.truth[vm.name]
        if truth["kind"] in seen:
            continue
        r = shared_pool.inspect(dataclasses.replace(vm, trust_group="default"), ["os", "packages"])
        assert r.ok, (vm.name, r.error)
        os_value = r.results["os"]["value"]
        got = {k: os_value.get(k) for k in truth["os"]}
        if got != truth["os"]:
            wrong[vm.name] = {k: (got[k], v) for k, v in truth["os"].items() if got[k] != v}
        assert {f["kind"] for f in os_value["findings"]} == set(truth["findings"]), vm.name
        assert r.results["packages"]["value"]["count"] == truth["package_count"], vm.name
        seen[truth["kind"]] = vm.name
    assert set(seen) == set(HARD_KINDS)
    assert not wrong, wrong
    assert all(sha256(p) == d for p, d in digests.items())  # overlays read-only too
