"""Pool arguments (no appliance)."""

from __future__ import annotations

import pytest

from guestpool import Pool, SetupError, default_pool_size


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(SetupError):
        Pool(0)
    with pytest.raises(SetupError):
        Pool(1, strategy="warm")  # type: ignore[arg-type]
    assert 1 <= default_pool_size() <= 12


def test_workers_inherit_no_credentials() -> None:
    from guestpool.appliance._process import worker_environment

    env = worker_environment("/tmp/w", {
        "PATH": "/usr/bin", "GUESTPOOL_TOKEN": "s3cret", "GUESTPOOL_ACCEL": "tcg",
        "LIBGUESTFS_BACKEND": "direct", "AWS_SECRET_ACCESS_KEY": "x", "OS_PASSWORD": "y",
        "MY_API_TOKEN": "z", "LD_PRELOAD": "/evil.so", "PYTHONPATH": "/plugins"})
    assert env["PATH"] == "/usr/bin" and env["GUESTPOOL_ACCEL"] == "tcg"
    assert env["LIBGUESTFS_BACKEND"] == "direct" and env["PYTHONPATH"] == "/plugins"
    assert env["TMPDIR"] == env["GUESTPOOL_WORKDIR"] == "/tmp/w"
    for secret in ("GUESTPOOL_TOKEN", "AWS_SECRET_ACCESS_KEY", "OS_PASSWORD", "MY_API_TOKEN",
                   "LD_PRELOAD"):
        assert secret not in env


async def test_a_spawned_worker_process_holds_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from guestpool import WorkerAppliance

    monkeypatch.setenv("GUESTPOOL_TOKEN", "s3cret-in-the-supervisor")
    import anyio

    app = await WorkerAppliance.spawn()  # a worker process; no appliance boots
    try:
        # right after the fork the new program may not have replaced the old yet
        # (its environ reads empty then): read it once the worker is running
        with anyio.fail_after(10):
            while not (environ := Path(f"/proc/{app.pid}/environ").read_bytes()):
                await anyio.sleep(0.05)
    finally:
        await app.kill()
    assert b"GUESTPOOL_PARENT_PID" in environ
    assert b"s3cret-in-the-supervisor" not in environ


def _sim_pool(**kwargs: object) -> Pool:
    """A real Pool whose appliances only sleep (the public seam ``spawn``)."""
    import random

    from guestpool.bench.simulate import Costs, SimAppliance

    costs = Costs(boot=(1.0, 0.0), attach=(0.1, 0.0), inspect=(0.5, 0.0), detach=(0.1, 0.0))
    rng = random.Random(1)

    async def spawn() -> SimAppliance:
        return SimAppliance(costs, rng)

    return Pool(safety=None, spawn=spawn, accel="tcg", **kwargs)  # type: ignore[arg-type]


async def test_strict_trust_gives_each_vm_its_own_appliance(autojump_clock: object) -> None:
    from guestpool import VM, Disk

    vms = [VM(f"v{i}", (Disk(f"/sim/{i}.raw", "raw"),)) for i in range(4)]
    async with _sim_pool(size=1, trust="strict") as pool:
        results = [await pool.inspect(vm, ["hostname"]) for vm in vms]
    assert all(r.ok for r in results)
    assert len({r.appliance for r in results}) == 4
    assert pool.stats.retirements["strict-trust"] == 4


async def test_strict_trust_never_batches(autojump_clock: object) -> None:
    """Rounds batch two VMs per job by default; under strict trust a batch would put
    two VMs in one appliance, so it is split: still one appliance per VM."""
    from guestpool import VM, Disk, RoundOptions, run_round

    vms = [VM(f"v{i}", (Disk(f"/sim/{i}.raw", "raw"),)) for i in range(4)]
    report = await run_round(vms, RoundOptions(budget=60, inspectors=["hostname"], batch=2),
                             pool=_sim_pool(size=1, trust="strict"))
    assert len(report.covered) == 4
    assert len({r.appliance for r in report.covered}) == 4
    assert report.retirements["strict-trust"] == 4


async def test_max_jobs_counts_the_vms_of_a_batch(autojump_clock: object) -> None:
    from guestpool import VM, Disk

    vms = [VM(f"v{i}", (Disk(f"/sim/{i}.raw", "raw"),)) for i in range(4)]
    async with _sim_pool(size=1, max_jobs=2) as pool:
        first = await pool.inspect_batch(vms[:2], ["hostname"])
        second = await pool.inspect_batch(vms[2:], ["hostname"])
    assert {r.appliance for r in first}.isdisjoint({r.appliance for r in second})
    assert pool.stats.retirements["max-jobs"] >= 1


async def test_a_subset_round_does_not_mark_the_rest_of_the_fleet_removed(
        tmp_path: object, autojump_clock: object) -> None:
    from pathlib import Path

    from guestpool import VM, Disk, RoundOptions, Store, run_round

    vms = [VM(f"v{i}", (Disk(f"/sim/{i}.raw", "raw"),)) for i in range(3)]
    store = Store(Path(str(tmp_path)) / "s.db")
    options = RoundOptions(budget=60, inspectors=["hostname"])
    await run_round(vms, options, store=store, pool=_sim_pool(size=1))
    report = await run_round(vms[:1], options, store=store, pool=_sim_pool(size=1),
                             whole_fleet=False)
    assert report.fleet_changes["disappeared"] == []
    report = await run_round(vms[:1], options, store=store, pool=_sim_pool(size=1))
    assert sorted(report.fleet_changes["disappeared"]) == ["v1", "v2"]
