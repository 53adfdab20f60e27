"""A budgeted round: spread a fleet over the pool and stop on time.

This is the one round runner: a round over this host's pool and a round over
many hosts' agents (NATS) run the same phases here (prepare, dispatch,
finish); only what depends on where the disks are is the target's
(``_target``).

The budget covers everything, pool start included. When it runs out,
in-flight jobs are cancelled (their appliances are killed, never reused in an
unknown state) and the round reports what it covered and what it did not reach.
With a store, VMs whose disks did not change since their last good inspection
are verified unchanged first, without an appliance (``_unchanged``), and the
budget goes to the others. A pool the caller keeps warm across rounds
(:meth:`Pool.warm`) is used as it is: the round pays boots only for replacements.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio

from guestpool.fleet._model import VM
from guestpool.fleet._safety import SafetyPolicy
from guestpool.fleet._sources import Source
from guestpool.inspectors._registry import resolve_specs
from guestpool.inspectors._specs import InspectorSpec
from guestpool.store._database import Store
from guestpool.store._drift import Change
from guestpool.store._journal import end_entry, replay, spool
from guestpool.store._results import InspectResult
from guestpool.store._transactions import StoreError

from ._plan import SHUTDOWN_RESERVE_S, Plan, vm_kind
from ._pool import EventHook, Pool
from ._report import RoundOptions, RoundReport, job_seconds
from ._target import LocalTarget, Target, local_plan
from ._unchanged import Verified, carried_results, context, verify
from ._writer import Delivery, ResultWriter

ResultHook = Callable[[InspectResult], None]
STALENESS_BUCKET_S = 300.0
T = TypeVar("T")

log = logging.getLogger(__name__)


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
    fleet: Source | Sequence[VM] | Target,
    options: RoundOptions | None = None,
    *,
    store: Store | None = None,
    pool: Pool | None = None,
    safety: SafetyPolicy | None = None,
    stop: anyio.Event | None = None,
    on_result: ResultHook | None = None,
    on_event: EventHook | None = None,
    whole_fleet: bool = True,
) -> RoundReport:
    """Inspect as much of ``fleet`` as fits in ``options.budget`` seconds (options:
    :class:`RoundOptions`, default ones when None).

    ``fleet`` is a source (read now, and its folders bound the images' backing
    files), a list of VMs (checked with the default safety policy), or a
    :class:`~guestpool.rounds._target.Target` (the hosts over NATS: every
    option means the same there). ``pool`` (not yet entered) replaces the one
    ``options`` describe, ``safety`` the source's policy; a pool already
    running (kept warm by the caller with :meth:`Pool.warm`) is used as it is
    and takes this round's policy (unless its checks are off). With a
    ``store``, VMs are ordered by staleness, every result is committed as it
    arrives (with its drift), measured costs are kept for the next plan and,
    with ``options.skip_unchanged``, VMs whose disk files did not change since
    their last good inspection are verified unchanged first (``_unchanged``).
    Setting ``stop`` lets in-flight jobs finish and starts no new ones.
    ``whole_fleet=False`` says ``fleet`` is a chosen subset: VMs left out are
    then not recorded as gone from the fleet.
    """
    start = anyio.current_time()
    options = options or RoundOptions()
    if isinstance(fleet, Target):
        if pool is not None or safety is not None or on_event is not None or not whole_fleet:
            raise TypeError("pool, safety, on_event and whole_fleet describe a local round;"
                            " a Target brings its own")
        target = fleet
    else:
        target = LocalTarget(fleet, options, pool=pool, safety=safety, on_event=on_event,
                             whole_fleet=whole_fleet)
    specs = resolve_specs(options.inspectors)
    prepared = await _prepare(target, options, specs, store, on_result)
    report, todo, seen = prepared.report, prepared.todo, prepared.seen
    report.phases["prepare"] = anyio.current_time() - start
    deadline = start + max(1.0, options.budget - SHUTDOWN_RESERVE_S)

    def written(result: InspectResult, changes: list[Change]) -> None:
        report.drift += changes
        if on_result is not None:  # reported once it is safe
            on_result(result)

    writer = None if store is None else ResultWriter(store.path, report.round_id,
                                                     prepared.ctx, written)
    deliver = Delivery(report, writer, lambda r: vm_kind(r.results, prepared.disks.get(
        r.vm, 1)), on_result)
    try:
        async with anyio.create_task_group() as writing:
            if writer is not None:
                writing.start_soon(writer.run)
            if todo:
                with anyio.move_on_at(deadline):
                    await target.dispatch(todo, specs, options, report, deliver,
                                          _order_key(seen, STALENESS_BUCKET_S), stop, deadline)
            report.phases["dispatch"] = anyio.current_time() - start - report.phases["prepare"]
            if writer is not None:  # the shutdown reserve is the writer's
                await writer.drain(start + options.budget)
            writing.cancel_scope.cancel()
        _journal(writer, report)
        await _finish(target, report, todo, options, store, prepared.disks, start)
    except BaseException:
        # cancelled from outside (the service stopping) or failed: what was not
        # stored goes to the journal, and the round closes as interrupted
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(StoreError):  # logged; the original error goes on
                _journal(writer, report)
            if store is not None and report.round_id is not None:
                with contextlib.suppress(StoreError), store.brief_waits():
                    store.close_interrupted(report.round_id)
        raise
    return report


def _journal(writer: ResultWriter | None, report: RoundReport) -> None:
    """Results the store did not take by the round's end, kept in its journal."""
    if writer is None:
        return
    trouble = writer.error or writer.waited
    report.store_error = None if trouble is None else str(trouble)
    if not writer.unwritten:
        return
    report.journaled = writer.unwritten
    try:
        report.journal = str(writer.spool())
    except Exception as e:
        log.error("round %s: %d results could not be stored nor kept in a journal: %s",
                  report.round_id, report.journaled, e)
        raise StoreError(f"results store {writer.path}: {report.store_error}, and the "
                         f"journal could not be written either: {e}") from e


@dataclass
class _Prepared:
    report: RoundReport
    todo: list[VM]
    seen: Mapping[str, float | None]
    ctx: str
    disks: dict[str, int]


async def _prepare(target: Target, options: RoundOptions, specs: Sequence[InspectorSpec],
                   store: Store | None, on_result: ResultHook | None) -> _Prepared:
    """The round's VMs, those verified unchanged (carried forward now), the rest
    in staleness order, the plan, and the round opened in the store."""
    vms, whole = await target.fleet()
    report = target.new_report(options.budget)
    report.strategy, report.pool_size = target.strategy, target.size
    ctx = target.context(specs)
    verified = Verified(todo=vms)
    if store is not None and options.skip_unchanged:
        verified = await target.verify(vms, store, ctx, options.max_age)
        report.reinspect = verified.counts()
        report.changed_disks = verified.changed()
    if store is None:
        todo = order_fleet(verified.todo, {})
        report.plan = target.plan(todo, verified, None, options.budget)
        return _Prepared(report, todo, {}, ctx, {vm.name: len(vm.disks) for vm in vms})

    def open_round(own: Store) -> tuple[list[VM], Mapping[str, float | None],
                                        list[tuple[int, InspectResult]]]:
        seen = own.last_scanned()
        todo = order_fleet(verified.todo, seen)
        report.plan = target.plan(todo, verified, own, options.budget)
        replay(own)
        for closed in own.close_interrupted():
            log.warning("round %s was interrupted (its process is gone): closed with %s VMs "
                        "covered, %s failed", closed["round"], closed["covered"],
                        closed["failed"])
        report.fleet_changes = own.sync_fleet(vms, complete=whole)
        report.round_id = own.start_round(options.budget, target.strategy, target.size,
                                          report.plan.predicted)
        carried = carried_results(own, verified, target.strategy)
        own.record_unchanged(report.round_id, carried)
        return todo, seen, carried

    todo, seen, carried = await on_own_connection(store, open_round)
    for _, result in carried:
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    return _Prepared(report, todo, seen, ctx, {vm.name: len(vm.disks) for vm in vms})


async def on_own_connection(store: Store, fn: Callable[[Store], T]) -> T:
    """``fn`` on a worker thread with a connection of its own to ``store``'s file:
    a 10,000-VM round's SQL takes seconds, and the event loop (a service's
    requests, the round's jobs) must wait neither on it nor on another
    process's lock; nor may it share a transaction with another task."""
    def run() -> T:
        own = Store(store.path)
        try:
            return fn(own)
        finally:
            own.close()
    return await anyio.to_thread.run_sync(run)


async def _finish(target: Target, report: RoundReport, todo: Sequence[VM],
                  options: RoundOptions, store: Store | None, disks: Mapping[str, int],
                  start: float) -> None:
    """What was not reached, the target's figures, costs for the next plan,
    findings (``options.osv``), and the round closed in the store."""
    finishing = anyio.current_time()
    done = {r.vm for r in report.results}
    report.not_reached = [vm.name for vm in todo if vm.name not in done]
    await target.finish(report, todo)
    if store is None:
        report.phases["finish"] = anyio.current_time() - finishing
        report.elapsed = anyio.current_time() - start
        return
    # a store that gave trouble this round is not waited for: the round ends on time
    troubled = report.store_error is not None

    def briefly(own: Store) -> contextlib.AbstractContextManager[None]:
        return own.brief_waits() if troubled else contextlib.nullcontext()

    def keep_costs(own: Store) -> None:
        with briefly(own):
            _keep_costs(own, report, target.strategy, disks)

    try:
        await on_own_connection(store, keep_costs)
        if options.osv and report.covered and not report.journaled:
            await _match_findings(store, report, options.osv)
    except StoreError as e:
        report.store_error = report.store_error or str(e)
    report.phases["finish"] = anyio.current_time() - finishing
    report.elapsed = anyio.current_time() - start
    summary = report.summary()

    def end_round(own: Store) -> None:
        with briefly(own):
            own.end_round(report.round_id or 0, summary)

    try:
        await on_own_connection(store, end_round)
    except StoreError as e:  # closed from the journal at the next start
        report.store_error = report.store_error or str(e)
        where = spool(store.path, [end_entry(report.round_id or 0, time.time(), summary)])
        log.warning("round %s: its end kept in %s (%s)", report.round_id, where, e)


def preview(vms: Sequence[VM], options: RoundOptions, store: Store | None,
            safety: SafetyPolicy | None, pool_size: int) -> Plan:
    """The plan a round of ``vms`` would make now (``scan --plan``): VMs verified
    unchanged at their measured cost, the others priced by kind."""
    verified = Verified(todo=list(vms))
    if store is not None and options.skip_unchanged and safety is not None:
        verified = verify(vms, store.fingerprints(),
                          context(resolve_specs(options.inspectors), safety), options.max_age)
    todo = order_fleet(verified.todo, store.last_scanned() if store else None)
    return local_plan(todo, verified, store, options.budget, pool_size, options.strategy)


async def _match_findings(store: Store, report: RoundReport, folder: str) -> None:
    """Findings of the covered VMs, stored with the round; their drift joins the
    round's. After the budget: results are already stored, matching is cheap."""
    from guestpool._errors import GuestpoolError
    from guestpool.supply import _findings
    from guestpool.supply import _matching as _vulns

    def match(own: Store) -> tuple[list[_vulns.VmFindings], list[dict[str, Any]]]:
        index = _findings.index_for(folder)
        return _findings.record_round(own, report.round_id, index,
                                      [r.vm for r in report.covered])

    try:
        reports, changes = await on_own_connection(store, match)
    except GuestpoolError as e:
        report.findings_error = str(e)
        return
    report.findings = _vulns.severity_counts(reports)
    report.drift += changes


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
