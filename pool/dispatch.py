"""A budgeted round: spread a fleet over the pool and stop on time.

The budget covers everything, pool start included. When it runs out,
in-flight jobs are cancelled (their appliances are killed, never reused in an
unknown state) and the round reports what it covered and what it did not reach.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from .fleet import VM
from .pool import InspectResult, Pool, Strategy

ResultHook = Callable[[InspectResult], None]


@dataclass
class RoundReport:
    budget: float
    elapsed: float = 0.0
    pool_size: int = 0
    strategy: str = "pooled"
    accel: str = ""
    results: list[InspectResult] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)
    boot_seconds: list[float] = field(default_factory=list)
    boots: int = 0

    @property
    def covered(self) -> list[InspectResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[InspectResult]:
        return [r for r in self.results if not r.ok]

    @property
    def overrun(self) -> float:
        return max(0.0, self.elapsed - self.budget)

    def summary(self) -> dict[str, Any]:
        return {
            "budget_s": self.budget, "elapsed_s": round(self.elapsed, 2),
            "overrun_s": round(self.overrun, 2), "pool": self.pool_size,
            "strategy": self.strategy, "accel": self.accel, "boots": self.boots,
            "covered": len(self.covered), "failed": len(self.failed),
            "not_reached": len(self.not_reached),
        }


def order_fleet(vms: Sequence[VM]) -> list[VM]:
    """Higher priority first; VMs of one trust group together, so appliances
    rarely switch groups."""
    return sorted(vms, key=lambda vm: (-vm.priority, vm.trust_group, vm.name))


async def run_round(
    vms: Sequence[VM],
    *,
    budget: float = 300.0,
    inspectors: Sequence[str] | None = None,
    pool_size: int | None = None,
    strategy: Strategy = "pooled",
    accel: str | None = None,
    on_result: ResultHook | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> RoundReport:
    """Inspect as much of ``vms`` as fits in ``budget`` seconds."""
    report = RoundReport(budget=budget, strategy=strategy)
    start = time.monotonic()
    todo = order_fleet(vms)
    pool = Pool(pool_size, strategy=strategy, accel=accel, on_event=on_event)
    report.pool_size = pool.size
    # keep ~2 s for an orderly pool shutdown inside the budget
    with anyio.move_on_after(max(1.0, budget - 2.0)):
        async with pool:
            report.accel = pool.accel
            send, receive = anyio.create_memory_object_stream[VM](len(todo))
            for vm in todo:
                send.send_nowait(vm)
            send.close()

            async def runner() -> None:
                async for vm in receive:
                    result = await pool.inspect(vm, inspectors)
                    report.results.append(result)
                    if on_result is not None:
                        on_result(result)

            async with anyio.create_task_group() as tg:
                for _ in range(pool.size):
                    tg.start_soon(runner)
    done = {r.vm for r in report.results}
    report.not_reached = [vm.name for vm in todo if vm.name not in done]
    report.elapsed = time.monotonic() - start
    report.boots = pool.stats.boots
    report.boot_seconds = list(pool.stats.boot_seconds)
    return report
