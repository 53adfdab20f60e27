"""The capacity plan per kind of VM: each VM priced at its kind's measured job time,
VMs verified unchanged at theirs, a warm pool without a boot."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers.fake_pool import EntryAppliance

from guestpool import VM, Appliance, Disk, Pool, RoundOptions, Store, plan_round, run_round
from guestpool.appliance import _protocol as msg
from guestpool.bench.simulate import Costs
from guestpool.rounds._plan import vm_kind


def entries(distro: str | None, devices: list[str] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    if distro is not None:
        out["os"] = {"ok": True, "value": {"type": "linux", "distro": distro}}
    if devices is not None:
        out["filesystems"] = {"ok": True, "value": [{"device": d} for d in devices]}
    return out


@pytest.mark.parametrize("results, disks, kind", [
    (entries("debian", ["/dev/sda1"]), 1, "debian/plain/1d"),
    (entries("fedora", ["/dev/sda1", "/dev/vg0/root"]), 1, "fedora/lvm/1d"),
    (entries("alpine", ["/dev/mapper/vg-home", "/dev/sdb"]), 2, "alpine/lvm/2d"),
    (entries("debian", ["/dev/disk/by-id/x"]), 1, "debian/plain/1d"),
    (entries(None, None), 1, "?/?/1d"),
])
def test_vm_kind(results: dict[str, object], disks: int, kind: str) -> None:
    assert vm_kind(results, disks) == kind


def test_each_vm_is_priced_at_its_kinds_cost() -> None:
    costs = {"boot": 10.0, "job-pooled": 2.0, "job-pooled:fast": 1.0, "job-pooled:slow": 3.0}
    # 100 s usable on one warm appliance: 10 fast (10 s), then 30 of the slow ones (90 s)
    plan = plan_round(60, 102, 1, costs, kinds=["fast"] * 10 + ["slow"] * 50, warm=True)
    assert (plan.predicted, plan.by_kind, plan.warm) == (40, 60, True)
    assert plan.job == pytest.approx((10 * 1 + 50 * 3) / 60)
    # unknown kinds are priced at the mean; a cold pool pays its boot first
    cold = plan_round(60, 102, 1, costs, kinds=[None] * 60)
    assert (cold.predicted, cold.by_kind) == ((100 - 10) // 2, 0)
    # without kinds: as before (one mean for every VM)
    assert plan_round(60, 102, 1, costs).predicted == cold.predicted


def test_unchanged_vms_are_covered_at_their_own_cost() -> None:
    costs = {"boot": 10.0, "job-pooled": 2.0, "unchanged": 0.01}
    plan = plan_round(10, 300, 2, costs, unchanged=990, warm=True)
    assert (plan.vms, plan.predicted, plan.unchanged) == (1000, 1000, 990)
    assert plan.fits
    # 1000 VMs verified unchanged take 10 s of the budget before dispatch
    tight = plan_round(100, 52, 1, costs, unchanged=1000, warm=True)
    assert tight.predicted == 1000 + (50 - 10) // 2


class KindAppliance(EntryAppliance):
    """Inspects ``*slow*`` VMs in 3 s and the others in 1 s, and says which distro."""

    async def request(self, request: msg.Request, timeout: float) -> msg.Reply:
        if isinstance(request, msg.Inspect):
            import anyio

            slow = "slow" in request.vm
            await anyio.sleep(3.0 if slow else 1.0)
            return msg.Inspected({"os": {"inspector": "os", "version": "1", "ok": True,
                                         "value": {"distro": "slow" if slow else "fast"}}})
        return await super().request(request, timeout)


async def test_a_plan_by_kind_predicts_a_mixed_round(autojump_clock: object,
                                                     tmp_path: Path) -> None:
    # named so that the slow quarter comes first in the dispatch order
    fleet = [VM(f"{'a-slow' if i % 4 == 0 else 'b-fast'}-{i}", (Disk(f"/sim/{i}.raw", "raw"),))
             for i in range(400)]
    costs = Costs(boot=(5.0, 0.0), attach=(0.0, 0.0), inspect=(0.0, 0.0), detach=(0.0, 0.0))

    async def spawn() -> Appliance:
        return KindAppliance(costs)

    store = Store(tmp_path / "r.db")
    options = RoundOptions(budget=600, inspectors=["os"], pool_size=2)
    await run_round(fleet, options, store=store,
                    pool=Pool(2, accel="tcg", safety=None, spawn=spawn))
    assert store.costs()["job-pooled:slow/?/1d"] == pytest.approx(3.0, abs=0.05)
    # the next round, in a budget that covers part of the fleet, slow VMs first
    mean = plan_round(400, 120, 2, {k: v for k, v in store.costs().items() if ":" not in k})
    tight = dataclasses.replace(options, budget=120)
    report = await run_round(fleet, tight, store=store,
                             pool=Pool(2, accel="tcg", safety=None, spawn=spawn))
    assert report.plan is not None and report.plan.by_kind == 400
    covered = len(report.covered)
    assert abs(report.plan.predicted - covered) <= 0.15 * covered, (report.plan, covered)
    # one mean for all would have been off: this round's VMs are the slow ones
    assert mean.predicted > 1.5 * covered
