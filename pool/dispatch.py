"""A budgeted round: spread a fleet over the pool and stop on time.

The budget covers everything, pool start included. When it runs out,
in-flight jobs are cancelled (their appliances are killed, never reused in an
unknown state) and the round reports what it covered and what it did not reach.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from .fleet import VM
from .pool import InspectResult, Pool, Strategy, batchable
from .safety import SafetyPolicy
from .store import Store

ResultHook = Callable[[InspectResult], None]
SHUTDOWN_RESERVE_S = 2.0
STALENESS_BUCKET_S = 300.0
DEFAULT_BATCH = 1  # bench/README.md: batching measured no better per VM under TCG
# Costs assumed by a store with no history: TCG, 2 cores, os+filesystems, measured
# 2026-11-22 (bench/README.md). Every round then replaces them with its own.
DEFAULT_COSTS = {"boot": 18.0, "job": 1.6}


@dataclass
class Plan:
    """How much of the fleet a round should cover, from measured costs."""

    vms: int
    budget: float
    pool_size: int
    boot: float
    job: float
    predicted: int
    needed_pool: int
    #: whether boot and job costs come from this store's past rounds, not defaults
    measured: bool = False
    #: changes of trust group along the dispatch order (each costs appliance boots)
    group_switches: int = 0

    @property
    def fits(self) -> bool:
        return self.predicted >= self.vms

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"fits": self.fits}


def plan_round(vms: int, budget: float, pool_size: int, costs: Mapping[str, float],
               strategy: Strategy = "pooled", groups: Sequence[str] | None = None) -> Plan:
    """VMs(T) ≈ P·(T − B)/J pooled, P·T/(B + J) cold (J: per-VM job time of one appliance).

    ``groups`` are the VMs' trust groups in dispatch order: pooled, each change
    of group retires and reboots the appliances that move over, min(P, group
    size) boots of appliance time that no VM gets.
    """
    boot = costs.get("boot", DEFAULT_COSTS["boot"])
    job_key = f"job-{strategy}" if f"job-{strategy}" in costs else "job"
    job = costs.get(job_key, DEFAULT_COSTS["job"])
    usable = max(0.0, budget - SHUTDOWN_RESERVE_S)
    runs = _runs(groups) if groups and strategy == "pooled" else [vms]
    if strategy == "cold":
        predicted = min(vms, pool_size * math.floor(usable / (boot + job)))  # whole VMs
        needed = math.ceil(vms * (boot + job) / usable) if usable else 1
    else:
        predicted, needed = _pooled_fit(runs, usable, pool_size, boot, job)
    return Plan(vms, budget, pool_size, boot, job, predicted, max(1, needed),
                measured="boot" in costs and job_key in costs, group_switches=len(runs) - 1)


def _pooled_fit(runs: list[int], usable: float, pool_size: int, boot: float, job: float
                ) -> tuple[int, int]:
    """(VMs this pool covers, appliances full coverage needs) when every change of
    trust group after the first run costs min(P, run length) boots."""
    def switches(p: int) -> float:
        return sum(min(p, size) for size in runs[1:]) * boot

    predicted, spent, capacity = 0, 0.0, pool_size * max(0.0, usable - boot)
    for i, size in enumerate(runs):
        spent += min(pool_size, size) * boot if i else 0.0
        take = min(size, max(0, int((capacity - spent) // job)))
        predicted, spent = predicted + take, spent + take * job
        if take < size:
            break
    if usable <= boot:
        return predicted, 1
    # switches(p) grows with p up to the longest run, then stays: search that far
    vms = sum(runs)
    least = max(1, math.ceil(vms * job / (usable - boot)))
    longest = max(runs, default=1)
    needed = next((p for p in range(least, max(least, longest) + 1)
                   if p * (usable - boot) >= vms * job + switches(p)),
                  math.ceil((vms * job + switches(longest)) / (usable - boot)))
    return predicted, needed


def _runs(groups: Sequence[str]) -> list[int]:
    """Lengths of the runs of equal consecutive trust groups."""
    return [len(list(run)) for _, run in itertools.groupby(groups)]


@dataclass
class RoundReport:
    budget: float
    elapsed: float = 0.0
    pool_size: int = 0
    strategy: str = "pooled"
    accel: str = ""
    round_id: int | None = None
    plan: Plan | None = None
    results: list[InspectResult] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)
    boot_seconds: list[float] = field(default_factory=list)
    boots: int = 0
    #: appliances retired during the round, by reason (trust-group-switch, error, ...)
    retirements: dict[str, int] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)
    #: VMs that appeared, disappeared or changed disks since the last round (with a store)
    fleet_changes: dict[str, list[str]] = field(default_factory=dict)
    stopped: bool = False

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
            "round": self.round_id, "budget_s": self.budget, "elapsed_s": round(self.elapsed, 2),
            "overrun_s": round(self.overrun, 2), "pool": self.pool_size,
            "strategy": self.strategy, "accel": self.accel, "boots": self.boots,
            "predicted": self.plan.predicted if self.plan else None,
            "covered": len(self.covered), "failed": len(self.failed),
            "not_reached": len(self.not_reached), "drift_changes": len(self.drift),
            "stopped_early": self.stopped, "retirements": dict(sorted(self.retirements.items())),
            **{f"vms_{k}": len(v) for k, v in self.fleet_changes.items()},
        }


def take_batch(queue: deque[VM], size: int, window: int = 64) -> list[VM]:
    """The next VM and up to ``size - 1`` compatible ones from the next ``window``."""
    chunk = [queue.popleft()]
    if size > 1:
        for vm in list(itertools.islice(queue, window)):
            if len(chunk) >= size:
                break
            if batchable([*chunk, vm]):
                chunk.append(vm)
                queue.remove(vm)
    return chunk


def order_fleet(vms: Sequence[VM], last_scanned: Mapping[str, float | None] | None = None,
                bucket: float = STALENESS_BUCKET_S) -> list[VM]:
    """Priority first, then never scanned, then the stalest; within one staleness
    bucket VMs of one trust group stay together, so appliances rarely switch groups."""
    seen = last_scanned or {}

    def key(vm: VM) -> tuple[Any, ...]:
        at = seen.get(vm.name)
        return (-vm.priority, at is not None, int((at or 0) // bucket), vm.trust_group, vm.name)

    return sorted(vms, key=key)


async def run_round(
    vms: Sequence[VM],
    *,
    budget: float = 300.0,
    inspectors: Sequence[str] | None = None,
    pool_size: int | None = None,
    strategy: Strategy = "pooled",
    accel: str | None = None,
    store: Store | None = None,
    pool: Pool | None = None,
    safety: SafetyPolicy | None = None,
    batch: int = DEFAULT_BATCH,
    stop: anyio.Event | None = None,
    on_result: ResultHook | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> RoundReport:
    """Inspect as much of ``vms`` as fits in ``budget`` seconds.

    ``pool`` (not yet entered) replaces the one built from ``pool_size``,
    ``strategy`` and ``accel``. With a ``store``, VMs are ordered by staleness,
    every result is committed as it arrives (with its drift), and measured costs
    are kept for the next plan. ``batch`` > 1 attaches that many compatible VMs
    (one trust group, no clones of one template) to an appliance at once.
    Setting ``stop`` lets in-flight jobs finish and starts no new ones.
    """
    report = RoundReport(budget=budget, strategy=strategy)
    start = anyio.current_time()
    todo = order_fleet(vms, store.last_scanned() if store else None)
    if pool is None:
        pool = Pool(pool_size, strategy=strategy, accel=accel, on_event=on_event,
                    safety=safety or SafetyPolicy())
    strategy = pool.strategy
    report.strategy = strategy
    report.pool_size = pool.size
    report.plan = plan_round(len(todo), budget, pool.size, store.costs() if store else {},
                             strategy, [vm.trust_group for vm in todo])
    if store is not None:
        report.fleet_changes = store.sync_fleet(vms)
        report.round_id = store.start_round(budget, strategy, pool.size, report.plan.predicted)
    plan = report.plan
    with anyio.move_on_after(max(1.0, budget - SHUTDOWN_RESERVE_S)) as budget_scope:
        async with pool:
            report.accel = pool.accel
            queue = deque(todo)

            def switch_too_late() -> bool:
                """A new trust group needs a boot: not worth starting one that
                cannot finish a job before the budget ends."""
                left = budget_scope.deadline - anyio.current_time()
                return (strategy == "pooled" and not pool.has_appliance_for(queue[0].trust_group)
                        and left < plan.boot + plan.job)

            async def runner() -> None:
                while queue:
                    if stop is not None and stop.is_set():
                        report.stopped = True
                        return
                    if switch_too_late():
                        return
                    chunk = take_batch(queue, batch)
                    if len(chunk) == 1:
                        results = [await pool.inspect(chunk[0], inspectors)]
                    else:
                        results = await pool.inspect_batch(chunk, inspectors)
                    for result in results:
                        report.results.append(result)
                        if store is not None:
                            report.drift += store.record(report.round_id, result)
                        if on_result is not None:
                            on_result(result)

            async with anyio.create_task_group() as tg:
                for _ in range(pool.size):
                    tg.start_soon(runner)
    done = {r.vm for r in report.results}
    report.not_reached = [vm.name for vm in todo if vm.name not in done]
    report.elapsed = anyio.current_time() - start
    report.boots = pool.stats.boots
    report.retirements = dict(pool.stats.retirements)
    report.boot_seconds = list(pool.stats.boot_seconds)
    if store is not None:
        _keep_costs(store, report, strategy)
        store.end_round(report.round_id or 0, report.summary())
    return report


def _keep_costs(store: Store, report: RoundReport, strategy: str) -> None:
    if report.boot_seconds:
        store.update_cost("boot", sum(report.boot_seconds) / len(report.boot_seconds),
                          len(report.boot_seconds))
    jobs = [sum(r.timings.get(k, 0.0) for k in ("attach", "inspect", "detach"))
            if strategy == "pooled" else r.timings.get("inspect", 0.0)
            for r in report.covered]
    if jobs:
        store.update_cost(f"job-{strategy}", sum(jobs) / len(jobs), len(jobs))
