"""How boot time bounds fleet throughput: measure B, A, W; predict; run for real.

    boot per VM (cold):   VMs(T) ≈ P · T / (B + W)
    pooled, late binding: VMs(T) ≈ P · (T − B) / (A + W)

B, A and W are measured with P appliances busy at once, since on a small host
they compete for the same cores. The real runs use the demo fleet with its
trust groups merged into one: this measures throughput, not trust switches.
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from guestpool import VM, Pool, RoundOptions, RoundReport, run_round
from guestpool.rounds._plan import SHUTDOWN_RESERVE_S
from guestpool.rounds._round import order_fleet


@dataclass
class Measured:
    pool_size: int
    boot: float  # B
    attach_detach: float  # A
    work: float  # W (pooled, per VM, inspectors only)
    cold_work: float  # W in a cold appliance (inspectors after launch)
    samples: int

    def predict(self, budget: float) -> dict[str, float]:
        """Cold counts whole VMs per appliance: at ~19 s a VM, the fraction of a VM
        the continuous model adds is a large share of a 120 s round."""
        usable = budget - SHUTDOWN_RESERVE_S
        return {
            "cold": self.pool_size * math.floor(usable / (self.boot + self.cold_work)),
            "pooled": self.pool_size * max(0.0, usable - self.boot) / (self.attach_detach
                                                                      + self.work),
        }


def one_group(vms: Sequence[VM]) -> list[VM]:
    return [dataclasses.replace(vm, trust_group="bench") for vm in vms]


async def measure(vms: Sequence[VM], pool_size: int, inspectors: Sequence[str] | None,
                  progress: Callable[[str], None] | None = None) -> Measured:
    """Boot P appliances together, warm each with one VM, run 6·P VMs on them,
    then P cold VMs.

    The sample is drawn at random (seeded) from the first VMs in the order a
    round takes them, so its mix of guest kinds is the mix the round will meet.
    Not every k-th VM: fleets are often periodic (the demo fleet repeats its
    kinds every 12 VMs, and a stride of 12 sampled Debian guests only). The
    warm-up jobs pay what an appliance pays once (loading a filesystem module,
    first LVM use), which a round spreads over dozens of VMs; they are not counted.
    """
    ordered = order_fleet(one_group(vms))
    n = 6 * pool_size
    window = ordered[: max(n + pool_size, 100)]
    drawn = random.Random(0).sample(window, min(n + pool_size, len(window)))
    warmup, sample = drawn[:pool_size], drawn[pool_size:]
    pooled: list[Any] = []
    async with Pool(pool_size, max_jobs=10**6) as pool:
        while len(pool.stats.boot_seconds) < pool_size:
            await anyio.sleep(0.5)

        async def run(vm: VM, into: list[Any]) -> None:
            into.append(await pool.inspect(vm, inspectors))

        async with anyio.create_task_group() as tg:
            for vm in warmup:
                tg.start_soon(run, vm, [])
        async with anyio.create_task_group() as tg:
            for vm in sample:
                tg.start_soon(run, vm, pooled)
        boots = list(pool.stats.boot_seconds)
    if progress:
        progress(f"pooled calibration: {len(pooled)} VMs on {pool_size} appliances")
    cold: list[Any] = []
    async with Pool(pool_size, strategy="cold") as cpool, anyio.create_task_group() as tg:
        async def run_cold(vm: VM) -> None:
            cold.append(await cpool.inspect(vm, inspectors))
        for vm in sample[::4][:pool_size]:
            tg.start_soon(run_cold, vm)
    if progress:
        progress(f"cold calibration: {len(cold)} VMs")
    ok = [r for r in pooled if r.ok]
    cok = [r for r in cold if r.ok]
    if not ok or not cok:
        raise RuntimeError("calibration VMs failed; run `guestpool scan` on the fleet to see why")
    return Measured(
        pool_size=pool_size,
        boot=statistics.fmean(boots + [r.timings["boot"] for r in cok]),
        attach_detach=statistics.fmean(r.timings["attach"] + r.timings["detach"] for r in ok),
        work=statistics.fmean(r.timings["inspect"] for r in ok),
        cold_work=statistics.fmean(r.timings["inspect"] for r in cok),
        samples=len(ok) + len(cok),
    )


async def run_both(vms: Sequence[VM], budget: float, pool_size: int,
                   inspectors: Sequence[str] | None) -> dict[str, RoundReport]:
    fleet = one_group(vms)
    out = {}
    for strategy in ("pooled", "cold"):
        pool = Pool(pool_size, strategy=strategy, max_jobs=10**6)
        out[strategy] = await run_round(fleet, RoundOptions(budget=budget, inspectors=inspectors),
                                        pool=pool)
    return out


def within(predicted: float, measured: int, tolerance: float = 0.25) -> bool:
    return measured > 0 and abs(predicted - measured) / measured <= tolerance
