"""Where a round's jobs run: the local pool, or the hosts over NATS.

``run_round`` is the one round runner: ordering by staleness, change
detection, the plan, the store, drift, OSV matching and the report are its
part, the same for every target. A target contributes only what depends on
where the disks are: which VMs there are, how to tell whether their disks
changed, what a round of them is predicted to cover, how jobs reach an
appliance, and its own figures for the report. :class:`LocalTarget` is this
host's pool; ``guestpool.nats.HostsTarget`` is many hosts' agents.
"""

from __future__ import annotations

import abc
import math
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import anyio

from guestpool.fleet._model import VM
from guestpool.fleet._safety import SafetyPolicy
from guestpool.fleet._sources import Source
from guestpool.inspectors._specs import InspectorSpec
from guestpool.store._database import Store
from guestpool.store._results import InspectResult

from ._dispatch import Dispatcher
from ._plan import Plan, Strategy, plan_round
from ._pool import EventHook, Pool
from ._report import RoundOptions, RoundReport, job_seconds
from ._unchanged import Verified, context, verify


class Deliver(Protocol):
    """What a target calls for each result of this round (reported at once, stored
    with its drift by the round's writer)."""

    def __call__(self, result: InspectResult) -> None: ...

    async def stored(self, timeout: float = 5.0) -> bool:
        """Whether the results delivered so far are committed within ``timeout`` s."""
        ...
#: a VM's place in the round's order; its first three items are its staleness bucket
OrderKey = Callable[[VM], tuple[object, ...]]


class Target(abc.ABC):
    """What a round drives (see the module docstring)."""

    #: the strategy and appliances the round reports (set by :meth:`fleet`)
    strategy: Strategy = "pooled"
    size: int = 0

    def new_report(self, budget: float) -> RoundReport:
        """An empty report of the kind this target fills."""
        return RoundReport(budget=budget, strategy=self.strategy)

    @abc.abstractmethod
    async def fleet(self) -> tuple[list[VM], bool]:
        """The round's VMs, and whether they are the whole fleet (VMs missing
        from a partial list are not recorded as gone)."""

    @abc.abstractmethod
    def context(self, specs: Sequence[InspectorSpec]) -> str:
        """What a carried-forward result must have been inspected with."""

    @abc.abstractmethod
    async def verify(self, vms: Sequence[VM], store: Store, ctx: str,
                     max_age: float) -> Verified:
        """Which VMs are unchanged since their last good inspection."""

    @abc.abstractmethod
    def plan(self, todo: Sequence[VM], verified: Verified, store: Store | None,
             budget: float) -> Plan:
        """What a round of ``todo`` is predicted to cover."""

    @abc.abstractmethod
    async def dispatch(self, todo: Sequence[VM], specs: Sequence[InspectorSpec],
                       options: RoundOptions, report: RoundReport, deliver: Deliver,
                       order_key: OrderKey, stop: anyio.Event | None, deadline: float) -> None:
        """Run ``todo``'s jobs (up to ``options.batch`` VMs of one trust group per
        appliance at once) until they are done, ``stop`` is set, or the event
        loop's clock reaches ``deadline`` (the round cancels what is left then)."""

    @abc.abstractmethod
    async def finish(self, report: RoundReport, todo: Sequence[VM]) -> None:
        """The target's own figures into the report: boots, retirements, accelerator."""


class LocalTarget(Target):
    """This host's pool: appliances booted here, disks read here."""

    def __init__(self, fleet: Source | Sequence[VM], options: RoundOptions, *,
                 pool: Pool | None = None, safety: SafetyPolicy | None = None,
                 on_event: EventHook | None = None, whole_fleet: bool = True) -> None:
        self._source, self._options, self._pool = fleet, options, pool
        self._safety, self._on_event, self._whole = safety, on_event, whole_fleet
        self.pool: Pool | None = None
        self.warm = False
        self._before: tuple[int, int, Counter[str]] = (0, 0, Counter())

    async def fleet(self) -> tuple[list[VM], bool]:
        options = self._options
        if isinstance(self._source, Sequence):
            vms = list(self._source)
            policy = self._safety or SafetyPolicy(
                allow_format_mismatch=options.allow_format_mismatch)
        else:
            vms = await anyio.to_thread.run_sync(self._source.load)
            policy = self._safety or options.safety(self._source)
        pool = self._pool if self._pool is not None else options.pool(policy, self._on_event)
        self.warm = pool.running
        if self.warm and pool.safety is not None:
            pool.safety = policy
        self.pool, self.strategy, self.size = pool, pool.strategy, pool.size
        stats = pool.stats
        self._before = (stats.boots, len(stats.boot_seconds), Counter(stats.retirements))
        return vms, self._whole

    def context(self, specs: Sequence[InspectorSpec]) -> str:
        assert self.pool is not None
        return context(specs, self.pool.safety)

    async def verify(self, vms: Sequence[VM], store: Store, ctx: str,
                     max_age: float) -> Verified:
        assert self.pool is not None
        if self.pool.safety is None:  # checks off: no fingerprint to compare
            return Verified(todo=list(vms))
        return await anyio.to_thread.run_sync(
            lambda: verify(vms, store.fingerprints(), ctx, max_age))

    def plan(self, todo: Sequence[VM], verified: Verified, store: Store | None,
             budget: float) -> Plan:
        return local_plan(todo, verified, store, budget, self.size, self.strategy, self.warm)

    async def dispatch(self, todo: Sequence[VM], specs: Sequence[InspectorSpec],
                       options: RoundOptions, report: RoundReport, deliver: Deliver,
                       order_key: OrderKey, stop: anyio.Event | None, deadline: float) -> None:
        pool, strategy, batch, warm = self.pool, self.strategy, options.batch, self.warm
        assert pool is not None and report.plan is not None
        plan = report.plan
        async with _entered(pool, warm):
            queue = Dispatcher(list(todo), lambda vm: order_key(vm)[:3])
            pool.pending = queue.remaining

            def switch_too_late(group: str) -> bool:
                """A new trust group needs a boot: not worth starting one that
                cannot finish a job before the budget ends."""
                left = deadline - anyio.current_time()
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
                left = deadline - anyio.current_time()
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
                        if len(chunk) == 1:
                            results = [await pool.inspect(chunk[0], specs)]
                        else:
                            results = await pool.inspect_batch(chunk, specs)
                        for result in results:
                            deliver(result)
                finally:
                    queue.leave(mine)

            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(pool.size):
                        tg.start_soon(runner)
            finally:
                pool.pending = {}

    async def finish(self, report: RoundReport, todo: Sequence[VM]) -> None:
        pool = self.pool
        assert pool is not None
        boots, boot_seconds, retirements = self._before
        report.accel = pool.accel if todo or self.warm else ""
        report.boots = pool.stats.boots - boots
        report.pool_boots = pool.stats.boots
        report.retirements = dict(Counter(pool.stats.retirements) - retirements)
        report.boot_seconds = list(pool.stats.boot_seconds[boot_seconds:])


def local_plan(todo: Sequence[VM], verified: Verified, store: Store | None, budget: float,
               pool_size: int, strategy: Strategy, warm: bool = False) -> Plan:
    """This host's plan: the store's measured costs, each VM priced by its kind
    (also ``scan --plan``'s, through ``_round.preview``)."""
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
