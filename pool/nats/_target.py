"""A round across hosts: the target ``run_round`` drives over NATS.

Everything a round is (staleness order, the plan, the store, drift, OSV
matching at the end, the report) is ``run_round``'s, exactly as on one host;
this target contributes what depends on the disks being elsewhere: the VMs
are the agents' announced inventories, named ``HOST:NAME``; each live host is
planned from its own announced costs; jobs are queued per host and results
arrive through the coordinator, which checks that each comes from the VM's own
host; the report adds each host's share (:class:`HostTally`). Hosts without a
recent heartbeat are reported missing and their VMs not reached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from guestpool.fleet._model import VM
from guestpool.inspectors._specs import InspectorSpec
from guestpool.rounds._fingerprint import Fingerprint, digest
from guestpool.rounds._plan import Plan, plan_round
from guestpool.rounds._report import RoundOptions, RoundReport, job_steps
from guestpool.rounds._target import Deliver, OrderKey, Target
from guestpool.rounds._unchanged import Verified, context, verify
from guestpool.store._database import Store
from guestpool.store._results import InspectResult

from ._coordinator import _NATS_ERRORS, Coordinator, CurrentRound
from ._messages import HostInfo
from ._subjects import fleet_name

#: seconds between a job's deadline and the round's: its result's way back
RESULT_GRACE_S = 1.0


@dataclass
class HostTally:
    """One host's share of a round."""

    vms: int = 0
    #: VMs queued, in this many jobs (``--batch`` puts several in one)
    queued: int = 0
    jobs: int = 0
    covered: int = 0
    failed: int = 0
    not_reached: int = 0
    #: no heartbeat within three intervals at the round's start: nothing queued
    missing: bool = False
    #: jobs the server did not queue, taking them for duplicates of another publish
    duplicate_jobs: int = 0
    predicted: int | None = None
    #: from the host's heartbeats at the round's start and end (a boot that ended
    #: in the last heartbeat interval counts in the next round)
    boots: int = 0
    retirements: dict[str, int] = field(default_factory=dict)
    accel: str = ""
    #: medians of the host's job steps (``RoundReport.summary``'s, per host)
    job_steps_median_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class HostsRoundReport(RoundReport):
    """A round across hosts: the one-host report, plus each host's share."""

    hosts: dict[str, HostTally] = field(default_factory=dict)

    @property
    def hosts_missing(self) -> list[str]:
        return sorted(h for h, t in self.hosts.items() if t.missing)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "hosts_missing": self.hosts_missing,
                "hosts": {h: t.to_dict() for h, t in sorted(self.hosts.items())}}



class HostsTarget(Target):
    """Every host whose agent announced itself to ``coordinator``."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._infos: dict[str, HostInfo] = {}
        self._live: dict[str, HostInfo] = {}
        self._report: HostsRoundReport | None = None

    async def fleet(self) -> tuple[list[VM], bool]:
        infos = await self.coordinator.hosts()
        now = time.time()
        self._infos = dict(infos)
        self._live = {h: i for h, i in infos.items() if i.alive(now)}
        self.size = sum(i.pool_size for i in self._live.values())
        self.strategy = "cold" if self._live and all(
            i.strategy == "cold" for i in self._live.values()) else "pooled"
        vms = [dataclasses.replace(vm, name=fleet_name(host, vm.name))
               for host, info in sorted(infos.items()) for vm in info.vms]
        return vms, len(self._live) == len(infos)

    def new_report(self, budget: float) -> RoundReport:
        self._report = HostsRoundReport(budget=budget, strategy=self.strategy)
        for host, info in sorted(self._infos.items()):
            self._report.hosts[host] = HostTally(vms=len(info.vms),
                                                 missing=host not in self._live)
        return self._report

    def context(self, specs: Sequence[InspectorSpec]) -> str:
        return context(specs, None)  # each agent applies its own host's safety policy

    async def verify(self, vms: Sequence[VM], store: Store, ctx: str,
                     max_age: float) -> Verified:
        """The one-host rules, with each VM's disk files compared where they are:
        its agent announces their digest as of its last heartbeat (at most one
        heartbeat old), compared here with the recorded fingerprint's. A VM its
        agent has no digest for (inspected by an earlier run of the agent) is
        inspected again, counted as ``remote``."""
        now = {fleet_name(host, name): d for host, info in self._live.items()
               for name, d in info.disks.items()}

        def differ(vm: VM, files: Fingerprint) -> str | None:
            announced = now.get(vm.name)
            if announced is None:
                return "remote"
            return None if announced == digest(files) else "its disk files changed on its host"

        return verify(vms, store.fingerprints(), ctx, max_age, differ=differ)

    def plan(self, todo: Sequence[VM], verified: Verified, store: Store | None,
             budget: float) -> Plan:
        plans = []
        for host, info in sorted(self._live.items()):
            mine = [vm for vm in todo if _host_of(vm.name) == host]
            plan = plan_round(len(mine), budget, info.pool_size, info.costs,
                              "cold" if info.strategy == "cold" else "pooled",
                              [vm.trust_group for vm in mine])
            if self._report is not None:
                self._report.hosts[host].predicted = plan.predicted
            plans.append(plan)
        return _total(plans, budget)

    async def dispatch(self, todo: Sequence[VM], specs: Sequence[InspectorSpec],
                       options: RoundOptions, report: RoundReport, deliver: Deliver,
                       order_key: OrderKey, stop: anyio.Event | None, deadline: float) -> None:
        assert isinstance(report, HostsRoundReport) and report.round_id is not None
        coordinator = self.coordinator
        names: dict[str, list[list[str]]] = {host: [] for host in self._live}
        open_group: dict[str, str] = {}  # the trust group of each host's last batch
        expected = {}
        for vm in todo:  # in the round's order: batches of one trust group, as on one host
            host, _, own = vm.name.partition(":")  # host names hold no ":"
            if host not in names:
                continue
            batches = names[host]
            if batches and len(batches[-1]) < options.batch \
                    and open_group[host] == vm.trust_group:
                batches[-1].append(own)
            else:
                batches.append([own])
                open_group[host] = vm.trust_group
            expected[vm.name] = host
        answered = anyio.Event()
        got = 0

        def arrived(host: str, result: InspectResult) -> None:
            nonlocal got
            tally = report.hosts[host]
            tally.covered += result.ok
            tally.failed += not result.ok
            deliver(result)
            got += 1
            if got >= len(expected):
                answered.set()

        store_uid = coordinator.store.round_uid(report.round_id)
        coordinator.current = CurrentRound(report.round_id, store_uid, expected, arrived,
                                           deliver.stored)
        wall_deadline = time.time() + (deadline - anyio.current_time()) - RESULT_GRACE_S

        async def queue(host: str) -> None:
            jobs, queued, duplicates = await coordinator.queue(
                host, names[host], wall_deadline, list(specs))
            report.hosts[host].jobs += jobs
            report.hosts[host].queued += queued
            report.hosts[host].duplicate_jobs += duplicates

        async def withdraw_on_stop() -> None:
            if stop is not None:
                await stop.wait()
                report.stopped = True
                await coordinator.withdraw(list(self._live))

        try:
            async with anyio.create_task_group() as tg:
                for host in self._live:
                    tg.start_soon(queue, host)
                tg.start_soon(withdraw_on_stop)
                if expected:
                    await answered.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.move_on_after(2.0, shield=True):
                await coordinator.withdraw(list(self._live))
            coordinator.current = None

    async def finish(self, report: RoundReport, todo: Sequence[VM]) -> None:
        assert isinstance(report, HostsRoundReport)
        missed = Counter(_host_of(name) for name in report.not_reached)
        for host, tally in report.hosts.items():
            tally.not_reached = missed.get(host, 0)
        with anyio.move_on_after(2.0, shield=True), contextlib.suppress(*_NATS_ERRORS):
            await self.coordinator.hosts()  # the heartbeats since: boots, retirements
        _host_figures(report, self._infos, self.coordinator.known_hosts)


def _host_of(name: str) -> str:
    return name.partition(":")[0]


def _host_figures(report: HostsRoundReport, before: dict[str, HostInfo],
                  after: dict[str, HostInfo]) -> None:
    """Each host's boots, retirements, accelerator and job steps in this round,
    and the round's: summed where a sum means something."""
    retired: Counter[str] = Counter()
    accels = set()
    for host, tally in report.hosts.items():
        first, last = before.get(host), after.get(host, before.get(host))
        if first is not None and last is not None and last.agent == first.agent:
            tally.boots = max(0, last.boots - first.boots)
            tally.retirements = dict(Counter(last.retirements) - Counter(first.retirements))
        elif last is not None:  # a new agent since the round began: all of its own
            tally.boots, tally.retirements = last.boots, dict(last.retirements)
        tally.accel = last.accel if last is not None else ""
        tally.job_steps_median_s = job_steps(
            [r for r in report.covered if r.vm.startswith(fleet_name(host, ""))])
        retired.update(tally.retirements)
        accels.add(tally.accel)
    report.boots = sum(t.boots for t in report.hosts.values())
    report.retirements = dict(sorted(retired.items()))
    report.accel = ",".join(sorted(accels - {""}))


def _total(plans: list[Plan], budget: float) -> Plan:
    """The hosts' plans added up (costs: the slowest host's)."""
    if not plans:
        return Plan(0, budget, 0, 0.0, 0.0, 0, 0)
    return Plan(sum(p.vms for p in plans), budget, sum(p.pool_size for p in plans),
                max(p.boot for p in plans), max(p.job for p in plans),
                sum(p.predicted for p in plans), sum(p.needed_pool for p in plans),
                measured=all(p.measured for p in plans),
                group_switches=sum(p.group_switches for p in plans))


