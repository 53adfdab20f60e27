"""Warm pools across rounds: a periodic run boots its appliances once; later rounds
pay boots only for replacements and trust-group switches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import anyio
import pytest
from helpers.fake_pool import FAST, CountingSpawn, fake_pool

from guestpool import VM, Disk, RoundOptions, RoundReport, Store, run_round
from guestpool.rounds._periodic import run_periodic
from guestpool.rounds._round import preview

OPTIONS = RoundOptions(budget=60, inspectors=["hostname"], pool_size=2, skip_unchanged=False)


def sim_fleet(n: int, group: str = "default") -> list[VM]:
    return [VM(f"{group}-{i}", (Disk(f"/simulated/{group}-{i}.raw", "raw"),), trust_group=group)
            for i in range(n)]


async def periodic(pool_fleets: list[list[VM]], spawn: CountingSpawn, **pool_args: object
                   ) -> list[RoundReport]:
    """One round per fleet on one warm pool, the way ``monitor`` runs them."""
    pool = fake_pool(spawn, size=2, safety=None, **pool_args)  # type: ignore[arg-type]
    reports: list[RoundReport] = []

    async def one_round(n: int) -> None:
        reports.append(await run_round(pool_fleets[n - 1], OPTIONS, pool=pool))

    async with pool.warm():
        await run_periodic(30, one_round, rounds=len(pool_fleets))
    return reports


async def test_rounds_after_the_first_boot_nothing(autojump_clock: object) -> None:
    spawn = CountingSpawn()
    reports = await periodic([sim_fleet(20)] * 3, spawn)
    assert [r.boots for r in reports] == [2, 0, 0]
    assert spawn.spawned == 2
    assert all(len(r.covered) == 20 and not r.not_reached for r in reports)
    # the first round paid its boot inside its budget; the others planned without one
    assert reports[0].boot_seconds and not reports[1].boot_seconds
    assert [r.plan.warm for r in reports if r.plan] == [True] * 3


async def test_a_later_round_pays_only_for_replacements(autojump_clock: object) -> None:
    spawn = CountingSpawn()
    reports = await periodic([sim_fleet(6)] * 3, spawn, max_jobs=5)
    # 18 VMs, retired after 5 each on two appliances: every retirement is replaced; a
    # replacement's boot counts in the round it finished in (the last one may still be
    # booting when the last round ends), and no round boots without a retirement
    replaced = sum(r.retirements.get("max-jobs", 0) for r in reports)
    assert replaced >= 2 and spawn.spawned == 2 + replaced
    assert reports[0].boots == 2
    assert replaced - 1 <= sum(r.boots for r in reports[1:]) <= replaced
    paid = 0
    for r in reports[1:]:
        paid += r.boots
        assert paid <= sum(p.retirements.get("max-jobs", 0) for p in reports[:reports.index(r) + 1])


async def test_a_warm_pool_starts_no_job_it_would_have_to_kill(autojump_clock: object) -> None:
    """Jobs of 1 s in a 10 s budget: a pool that lives on starts none in the last
    job's worth of time, so no appliance is cancelled and rebooted; a pool of one
    round (it dies anyway) uses the budget to the end."""
    slow = dataclasses.replace(FAST, inspect=(1.0, 0.0))
    fleet, options = sim_fleet(40), dataclasses.replace(OPTIONS, budget=10)
    spawn = CountingSpawn(slow)
    pool = fake_pool(spawn, size=2, safety=None)
    async with pool.warm():
        warm = [await run_round(fleet, options, pool=pool) for _ in range(2)]
    assert [r.retirements for r in warm] == [{}, {}] and spawn.spawned == 2
    assert warm[1].boots == 0 and warm[1].covered
    once = await run_round(fleet, options, pool=fake_pool(CountingSpawn(slow), size=2,
                                                          safety=None))
    assert once.retirements == {"cancelled": 2}


async def test_a_trust_group_switch_between_rounds_pays_its_boots(
        autojump_clock: object) -> None:
    spawn = CountingSpawn()
    reports = await periodic([sim_fleet(4, "a"), sim_fleet(4, "a"), sim_fleet(4, "b")], spawn)
    assert [r.boots for r in reports] == [2, 0, 2]
    assert reports[2].retirements == {"trust-group-switch": 2}


async def test_the_service_keeps_one_fleets_pool_warm_and_switches_fleets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from guestpool.appliance._process import WorkerAppliance
    from guestpool.service import Service
    from guestpool.service._queue import ScanQueue

    spawn = CountingSpawn()
    monkeypatch.setattr(WorkerAppliance, "spawn", spawn)
    fleets = {}
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "d.raw").write_bytes(b"\x01" * 4096)
        (folder / "fleet.json").write_text(json.dumps(
            {"vms": [{"name": f"{name}-vm", "disks": [{"path": "d.raw", "format": "raw"}]}]}))
        fleets[name] = str(folder / "fleet.json")
    store = Store(tmp_path / "s.db")
    svc = Service(store, ScanQueue(store.path), fleets, None,
                  options=dataclasses.replace(OPTIONS, pool_size=1, accel="tcg"))  # no probe
    boots_at_end = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(svc.scheduler)
        for fleet in ("a", "a", "b"):
            scan, _ = svc.queue.submit({"fleet": fleet}, None)
            svc.kick()
            with anyio.fail_after(30):
                while (svc.queue.get(scan["id"]) or {})["state"] != "done":
                    await anyio.sleep(0.05)
            boots_at_end.append(spawn.spawned)
        assert svc.pool is not None and svc.pool.running  # warm between scans
        tg.cancel_scope.cancel()
    assert boots_at_end == [1, 1, 2]
    assert svc.pool is not None and not svc.pool.running  # closed at shutdown


async def test_scan_plan_previews_unchanged_vms(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\x01" * 4096)
    fleet = [VM("v", (Disk(str(disk), "raw"),))]
    store = Store(tmp_path / "r.db")
    options = dataclasses.replace(OPTIONS, skip_unchanged=True)
    assert preview(fleet, options, store, fake_pool(spawn=CountingSpawn()).safety, 1).unchanged == 0
    await run_round(fleet, options, store=store, pool=fake_pool(CountingSpawn()))
    plan = preview(fleet, options, store, fake_pool(spawn=CountingSpawn()).safety, 1)
    assert (plan.unchanged, plan.predicted, plan.vms) == (1, 1, 1)
