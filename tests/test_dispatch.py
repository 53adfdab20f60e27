"""Trust-group affinity: appliances of a round split the trust groups instead of
all serving the first group and then all switching (each switch is a boot)."""

from __future__ import annotations

import dataclasses

from helpers.fake_pool import FAST, CountingSpawn, fake_pool

from guestpool import VM, Disk, RoundOptions, run_round

SLOW_JOBS = dataclasses.replace(FAST, boot=(5.0, 0.0), inspect=(1.0, 0.0))


def fleet(groups: int, per_group: int) -> list[VM]:
    return [VM(f"g{g}-{i:03d}", (Disk(f"/simulated/g{g}-{i}.raw", "raw"),),
               trust_group=f"g{g}") for g in range(groups) for i in range(per_group)]


async def test_two_appliances_serve_two_groups_without_switching(
        autojump_clock: object) -> None:
    """Three groups of 40 one-second VMs, two appliances, a budget for ~50 VMs:
    one appliance per group from the start, no trust-group switch."""
    report = await run_round(fleet(3, 40), RoundOptions(budget=35, inspectors=["hostname"],
                                                        batch=1),
                             pool=fake_pool(CountingSpawn(SLOW_JOBS), size=2, safety=None))
    served = {r.vm.split("-")[0] for r in report.covered}
    assert served == {"g0", "g1"}, served
    assert report.boots == 2 and "trust-group-switch" not in report.retirements
    assert len(report.covered) >= 50


async def test_an_appliance_whose_group_is_done_switches_to_an_unserved_group(
        autojump_clock: object) -> None:
    """A small first group ends early: its appliance moves to the group nobody
    serves, and the appliance retired is that one, not the other group's."""
    vms = fleet(3, 40)
    small = [vm for vm in vms if vm.trust_group != "g0" or vm.name < "g0-005"]
    report = await run_round(small, RoundOptions(budget=40, inspectors=["hostname"], batch=2),
                             pool=fake_pool(CountingSpawn(SLOW_JOBS), size=2, safety=None))
    by_group = {g: sum(r.vm.startswith(g + "-") for r in report.covered)
                for g in ("g0", "g1", "g2")}
    assert by_group["g0"] == 5 and by_group["g1"] > 10 and by_group["g2"] > 10, by_group
    assert report.retirements.get("trust-group-switch") == 1
    assert report.boots == 3


async def test_one_group_still_uses_every_appliance(autojump_clock: object) -> None:
    report = await run_round(fleet(1, 30), RoundOptions(budget=60, inspectors=["hostname"]),
                             pool=fake_pool(CountingSpawn(SLOW_JOBS), size=2, safety=None))
    assert len(report.covered) == 30 and report.boots == 2
    assert len({r.appliance for r in report.covered}) == 2
