"""A budgeted round: spread a fleet over the pool and stop on time.

The budget covers everything, pool start included. When it runs out,
in-flight jobs are cancelled (their appliances are killed, never reused in an
unknown state) and the round reports what it covered and what it did not reach.
With a store, VMs whose disks did not change since their last good inspection
are verified unchanged first, without an appliance (``_unchanged``), and the
budget goes to the others. A pool the caller keeps warm across rounds
(:meth:`Pool.warm`) is used as it is: the round pays boots only for replacements.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from guestpool.fleet._model import VM
from guestpool.fleet._safety import SafetyPolicy
from guestpool.fleet._sources import Source, safety_policy
from guestpool.inspectors._registry import resolve_specs
from guestpool.store._database import Store
from guestpool.store._results import InspectResult

from ._dispatch import Dispatcher
from ._plan import SHUTDOWN_RESERVE_S, Plan, Strategy, plan_round, vm_kind
from ._pool import EventHook, InspectorChoice, Pool
from ._unchanged import DEFAULT_MAX_AGE_S, Verified, carried_results, context, verify

ResultHook = Callable[[InspectResult], None]
STALENESS_BUCKET_S = 300.0
#: two VMs of one trust group per appliance at once: 8-11% more VMs per second
#: under TCG since hot-plugs no longer re-probe every disk (bench/README.md)
DEFAULT_BATCH = 2


@dataclass(frozen=True)
class RoundOptions:
    """Everything a round can be told, in one value: the CLI's scan and monitor,
    the service and library callers build one of these and nothing else."""

    #: seconds the round may take, pool start included
    budget: float = 300.0
    #: inspectors to run (None: ``os`` and ``filesystems``)
    inspectors: Sequence[InspectorChoice] | None = None
    #: appliances (None: from cores and memory)
    pool_size: int | None = None
    strategy: Strategy = "pooled"
    #: "kvm", "tcg", or None to probe (cached)
    accel: str | None = None
    #: VMs attached to one appliance at once (compatible VMs only)
    batch: int = DEFAULT_BATCH
    #: accept raw-declared images that carry another format's header
    allow_format_mismatch: bool = False
    #: folders a source's disks may also be in (beyond its own)
    allow_paths: tuple[str, ...] = ()
    #: OSV folder: with a store, the covered VMs are matched at the round's end
    #: and their findings kept as history (``_findings``)
    osv: str | None = None
    #: with a store, verify VMs unchanged since their last good inspection and
    #: carry their results forward instead of inspecting them (``_unchanged``)
    skip_unchanged: bool = True
    #: seconds after which a VM is inspected again even if its disks did not change
    max_age: float = DEFAULT_MAX_AGE_S

    def safety(self, source: Source) -> SafetyPolicy:
        """The safety policy for ``source`` (after ``source.load()``) with these options."""
        return safety_policy(source, self.allow_format_mismatch, self.allow_paths)

    def pool(self, safety: SafetyPolicy | None, on_event: EventHook | None = None) -> Pool:
        """The pool these options describe (not yet entered)."""
        return Pool(self.pool_size, strategy=self.strategy, accel=self.accel,
                    on_event=on_event, safety=safety)


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
    #: boots that finished during this round
    boots: int = 0
    #: boots over the pool's life so far: a warm pool's replacements that
    #: finished between rounds show here, not in any round's ``boots``
    pool_boots: int = 0
    #: appliances retired during the round, by reason (trust-group-switch, error, ...)
    retirements: dict[str, int] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)
    #: VMs that appeared, disappeared or changed disks since the last round (with a store)
    fleet_changes: dict[str, list[str]] = field(default_factory=dict)
    stopped: bool = False
    #: open findings by severity after the round (with ``options.osv`` and a store)
    findings: dict[str, int] | None = None
    #: why the covered VMs could not be matched (an OSV folder that went bad)
    findings_error: str | None = None
    #: why VMs were inspected rather than verified unchanged: never (no good
    #: inspection on record), inspectors (other inspectors or policy), max-age, changed
    reinspect: dict[str, int] = field(default_factory=dict)
    #: VMs whose disk files changed since their last good inspection, and how
    changed_disks: dict[str, str] = field(default_factory=dict)

    @property
    def covered(self) -> list[InspectResult]:
        """Inspected this round or verified unchanged."""
        return [r for r in self.results if r.ok]

    @property
    def inspected(self) -> list[InspectResult]:
        return [r for r in self.results if r.state == "inspected"]

    @property
    def unchanged(self) -> list[InspectResult]:
        return [r for r in self.results if r.state == "unchanged"]

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
            "boot_mean_s": round(sum(self.boot_seconds) / len(self.boot_seconds), 2)
            if self.boot_seconds else None,
            "pool_boots": self.pool_boots,
            "predicted": self.plan.predicted if self.plan else None,
            "covered": len(self.covered), "inspected": len(self.inspected),
            "unchanged": len(self.unchanged), "failed": len(self.failed),
            "not_reached": len(self.not_reached), "drift_changes": len(self.drift),
            "stopped_early": self.stopped, "retirements": dict(sorted(self.retirements.items())),
            **{f"vms_{k}": len(v) for k, v in self.fleet_changes.items()},
            "job_steps_median_s": job_steps(self.covered),
            **({"findings": self.findings} if self.findings is not None else {}),
            **({"findings_error": self.findings_error} if self.findings_error else {}),
            **({"reinspect": dict(sorted(self.reinspect.items()))} if self.reinspect else {}),
            **({"oldest_carried_s": round(time.time() - min(
                r.inspected_at or 0.0 for r in self.unchanged), 1)} if self.unchanged else {}),
        }


def job_steps(results: Sequence[InspectResult]) -> dict[str, float]:
    """Median seconds of each step of a pooled job: attach, then inside the
    inspection discover, probe, mount, the inspectors' own reading, release,
    then detach (where every 100 ms of a job goes)."""
    rows = []
    for r in results:
        if "attach" not in r.timings:
            continue
        inner = sum(r.steps.values())
        rows.append({"attach": r.timings["attach"], **r.steps,
                     "inspectors": max(0.0, r.timings.get("inspect", 0.0) - inner),
                     "detach": r.timings.get("detach", 0.0), "job": r.timings.get("attach", 0.0)
                     + r.timings.get("inspect", 0.0) + r.timings.get("detach", 0.0)})
    order = ("attach", "discover", "probe", "mount", "inspectors", "release", "detach", "job")
    return {k: round(statistics.median(row.get(k, 0.0) for row in rows), 3)
            for k in order} if rows else {}


def order_fleet(vms: Sequence[VM], last_scanned: Mapping[str, float | None] | None = None,
                bucket: float = STALENESS_BUCKET_S) -> list[VM]:
    """Priority first, then never scanned, then the stalest; within one staleness
    bucket VMs of one trust group stay together, so appliances rarely switch groups."""
    return sorted(vms, key=_order_key(last_scanned or {}, bucket))


def _order_key(seen: Mapping[str, float | None], bucket: float
               ) -> Callable[[VM], tuple[Any, ...]]:
    """A VM's place in a round; its first three items are its staleness bucket."""
    def key(vm: VM) -> tuple[Any, ...]:
        at = seen.get(vm.name)
        return (-vm.priority, at is not None, int((at or 0) // bucket), vm.trust_group, vm.name)

    return key


async def run_round(
    fleet: Source | Sequence[VM],
    options: RoundOptions = RoundOptions(),
    *,
    store: Store | None = None,
    pool: Pool | None = None,
    safety: SafetyPolicy | None = None,
    stop: anyio.Event | None = None,
    on_result: ResultHook | None = None,
    on_event: EventHook | None = None,
    whole_fleet: bool = True,
) -> RoundReport:
    """Inspect as much of ``fleet`` as fits in ``options.budget`` seconds.

    ``fleet`` is a source (read now, and its folders bound the images' backing
    files) or a list of VMs (checked with the default safety policy). ``pool``
    (not yet entered) replaces the one ``options`` describe, ``safety`` the
    source's policy; a pool already running (kept warm by the caller with
    :meth:`Pool.warm`) is used as it is and takes this round's policy (unless
    its checks are off). With a ``store``, VMs are ordered by staleness, every
    result is committed as it arrives (with its drift), measured costs are kept
    for the next plan and, with ``options.skip_unchanged``, VMs whose disk files
    did not change since their last good inspection are verified unchanged
    first (``_unchanged``). Setting ``stop`` lets in-flight jobs finish and
    starts no new ones. ``whole_fleet=False`` says ``fleet`` is a chosen subset:
    VMs left out are then not recorded as gone from the fleet.
    """
    start = anyio.current_time()
    if isinstance(fleet, Sequence):
        vms = list(fleet)
        policy = safety or SafetyPolicy(allow_format_mismatch=options.allow_format_mismatch)
    else:
        vms = await anyio.to_thread.run_sync(fleet.load)
        policy = safety or options.safety(fleet)
    specs = resolve_specs(options.inspectors)
    budget, batch = options.budget, options.batch
    report = RoundReport(budget=budget, strategy=options.strategy)
    if pool is None:
        pool = options.pool(policy, on_event)
    warm = pool.running
    if warm and pool.safety is not None:
        pool.safety = policy
    before = (pool.stats.boots, len(pool.stats.boot_seconds), Counter(pool.stats.retirements))
    ctx = context(specs, pool.safety)
    verified = Verified(todo=vms)
    if store is not None and options.skip_unchanged and pool.safety is not None:
        verified = await anyio.to_thread.run_sync(verify, vms, store.fingerprints(), ctx,
                                                  options.max_age)
        report.reinspect = verified.counts()
        report.changed_disks = verified.changed()
    seen = store.last_scanned() if store else {}
    todo = order_fleet(verified.todo, seen)
    strategy = pool.strategy
    report.strategy = strategy
    report.pool_size = pool.size
    report.plan = _plan(todo, verified, store, options.budget, pool.size, strategy, warm)
    if store is not None:
        report.fleet_changes = store.sync_fleet(vms, complete=whole_fleet)
        report.round_id = store.start_round(budget, strategy, pool.size, report.plan.predicted)
        carried = carried_results(store, verified, strategy)
        store.record_unchanged(report.round_id, carried)
        for _, result in carried:
            report.results.append(result)
            if on_result is not None:
                on_result(result)
    plan = report.plan
    disks = {vm.name: len(vm.disks) for vm in vms}
    deadline = start + max(1.0, budget - SHUTDOWN_RESERVE_S)
    with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as budget_scope:
        async with _entered(pool, warm) if todo else _nothing():
            order_key = _order_key(seen, STALENESS_BUCKET_S)
            queue = Dispatcher(todo, lambda vm: order_key(vm)[:3])
            pool.pending = queue.remaining

            def switch_too_late(group: str) -> bool:
                """A new trust group needs a boot: not worth starting one that
                cannot finish a job before the budget ends."""
                left = budget_scope.deadline - anyio.current_time()
                return (strategy == "pooled" and not pool.has_appliance_for(group)
                        and left < plan.boot + plan.job)

            def batch_that_fits() -> int:
                """A warm pool outlives the round: a job that cannot finish in the
                budget left would be cancelled, its appliance killed and rebooted,
                so near the end batches shrink to what fits (0: start none). A job
                costs what the plan says, or what this round's jobs took if more
                (a store without history plans with a default)."""
                if not warm:
                    return batch
                left = budget_scope.deadline - anyio.current_time()
                done = [job_seconds(r, strategy) for r in report.inspected]
                cost = max(plan.job, sum(done) / len(done)) if done else plan.job
                return min(batch, math.floor(left / cost)) if cost > 0 else batch

            async def runner() -> None:
                mine: str | None = None  # the trust group this runner serves
                try:
                    while queue:
                        if stop is not None and stop.is_set():
                            report.stopped = True
                            return
                        size = batch_that_fits()
                        group = queue.pick(mine)
                        if switch_too_late(group) or size < 1:
                            return
                        chunk = queue.take(group, size, mine)
                        mine = group
                        await job(chunk)
                finally:
                    queue.leave(mine)

            async def job(chunk: list[VM]) -> None:
                if len(chunk) == 1:
                    results = [await pool.inspect(chunk[0], specs)]
                else:
                    results = await pool.inspect_batch(chunk, specs)
                for result in results:
                    report.results.append(result)
                    if store is not None:
                        kind = vm_kind(result.results, disks.get(result.vm, 1))
                        report.drift += store.record(report.round_id, result, ctx, kind)
                    if on_result is not None:
                        on_result(result)

            async with anyio.create_task_group() as tg:
                for _ in range(pool.size if todo else 0):
                    tg.start_soon(runner)
    pool.pending = {}
    done = {r.vm for r in report.results}
    report.not_reached = [vm.name for vm in todo if vm.name not in done]
    report.elapsed = anyio.current_time() - start
    report.accel = pool.accel if todo or warm else ""
    report.boots = pool.stats.boots - before[0]
    report.pool_boots = pool.stats.boots
    report.retirements = dict(Counter(pool.stats.retirements) - before[2])
    report.boot_seconds = list(pool.stats.boot_seconds[before[1]:])
    if store is not None:
        _keep_costs(store, report, strategy, disks)
        if options.osv and report.covered:
            await _match_findings(store, report, options.osv)
        store.end_round(report.round_id or 0, report.summary())
    return report


def preview(vms: Sequence[VM], options: RoundOptions, store: Store | None,
            safety: SafetyPolicy | None, pool_size: int) -> Plan:
    """The plan a round of ``vms`` would make now (``scan --plan``): VMs verified
    unchanged at their measured cost, the others priced by kind."""
    verified = Verified(todo=list(vms))
    if store is not None and options.skip_unchanged and safety is not None:
        verified = verify(vms, store.fingerprints(),
                          context(resolve_specs(options.inspectors), safety), options.max_age)
    todo = order_fleet(verified.todo, store.last_scanned() if store else None)
    return _plan(todo, verified, store, options.budget, pool_size, options.strategy)


def _plan(todo: Sequence[VM], verified: Verified, store: Store | None, budget: float,
          pool_size: int, strategy: Strategy, warm: bool = False) -> Plan:
    kinds = store.kinds() if store is not None else {}
    return plan_round(len(todo), budget, pool_size, store.costs() if store else {}, strategy,
                      [vm.trust_group for vm in todo], kinds=[kinds.get(vm.name) for vm in todo],
                      unchanged=len(verified.unchanged), warm=warm)


@asynccontextmanager
async def _entered(pool: Pool, warm: bool) -> AsyncIterator[Pool]:
    """The pool for one round: a warm pool as it is (waiting for its first
    appliance within the round's budget), any other entered for this round only."""
    if warm:
        if pool.strategy == "pooled":
            await pool.ready()
        yield pool
    else:
        async with pool:
            yield pool


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    """No VM to inspect: no pool to start."""
    yield


async def _match_findings(store: Store, report: RoundReport, folder: str) -> None:
    """Findings of the covered VMs, stored with the round; their drift joins the
    round's. After the budget: results are already stored, matching is cheap."""
    from guestpool._errors import GuestpoolError
    from guestpool.supply import _findings
    from guestpool.supply import _matching as _vulns

    def match() -> tuple[list[_vulns.VmFindings], list[dict[str, Any]]]:
        index = _findings.index_for(folder)
        own = Store(store.path)  # this thread's own connection: the service reads meanwhile
        try:
            return _findings.record_round(own, report.round_id, index,
                                          [r.vm for r in report.covered])
        finally:
            own.close()

    try:
        reports, changes = await anyio.to_thread.run_sync(match)
    except GuestpoolError as e:
        report.findings_error = str(e)
        return
    report.findings = _vulns.severity_counts(reports)
    report.drift += changes


def job_seconds(r: InspectResult, strategy: str) -> float:
    """What one VM's job cost its appliance (a cold job: its inspection only)."""
    if strategy != "pooled":
        return r.timings.get("inspect", 0.0)
    return sum(r.timings.get(k, 0.0) for k in ("attach", "inspect", "detach"))


def _keep_costs(store: Store, report: RoundReport, strategy: str,
                disks: Mapping[str, int]) -> None:
    """Measured costs for the next plans: boot, per-VM job (overall and by kind,
    ``_plan.vm_kind``) and verifying a VM unchanged."""
    if report.boot_seconds:
        store.update_cost("boot", sum(report.boot_seconds) / len(report.boot_seconds),
                          len(report.boot_seconds))
    by_kind: dict[str, list[float]] = {}
    for r in report.inspected:
        by_kind.setdefault(vm_kind(r.results, disks.get(r.vm, 1)), []).append(
            job_seconds(r, strategy))
    jobs = [j for js in by_kind.values() for j in js]
    if jobs:
        store.update_cost(f"job-{strategy}", sum(jobs) / len(jobs), len(jobs))
    for kind, js in by_kind.items():
        store.update_cost(f"job-{strategy}:{kind}", sum(js) / len(js), len(js))
    verified = [r.timings["verify"] for r in report.unchanged]
    if verified:
        store.update_cost("unchanged", sum(verified) / len(verified), len(verified))
