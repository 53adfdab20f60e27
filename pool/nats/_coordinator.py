"""The coordinator: plans a round per host from the agents' inventory and
costs, queues each host's jobs in staleness order, and stores every result
exactly once.

Results are consumed from a durable consumer for the coordinator's whole life,
not only during a round: results of a round a killed coordinator left behind
wait in the stream and are stored when it comes back (under their own round).
A result is acknowledged after it is committed; one delivered again finds its
(round, VM) already in the store and is only acknowledged.

A VM is named across hosts by its host and its own name (``A:web-1``): the same
name on two hosts is two VMs. A result counts only from the host that owns the
VM: the host is the one whose results subject the message came on (the server
lets each host's user publish there and nowhere else), never the message's own
``host`` field; the VM must be one that host announced (for the round in
progress: one queued to it), and the round must be open. Anything else is
refused, logged and counted (:attr:`Coordinator.refused`), never stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import PubAck
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NoKeysError

from guestpool.fleet._model import VM
from guestpool.inspectors._registry import resolve_specs
from guestpool.rounds._plan import SHUTDOWN_RESERVE_S, Plan, plan_round
from guestpool.rounds._round import RoundOptions, RoundReport, job_steps, order_fleet
from guestpool.store._database import Store
from guestpool.store._results import InspectResult

from ._connect import NatsSettings, connected, ensure_host, ensure_streams
from ._messages import HostInfo, Job, decode_host, decode_result, encode
from ._subjects import (
    COORDINATOR_CONSUMER,
    HOSTS_BUCKET,
    JOBS_STREAM,
    RESULTS_STREAM,
    fleet_name,
    job_id,
    jobs_subject,
    results_host,
)

log = logging.getLogger("guestpool")
_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError, TimeoutError)
ResultHook = Callable[[InspectResult], None]


@dataclass
class HostTally:
    """One host's share of a round."""

    vms: int = 0
    queued: int = 0
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


class Coordinator:
    """Rounds across the hosts whose agents announce themselves in the hosts bucket."""

    def __init__(self, nc: Client, store: Store) -> None:
        self.nc, self.js, self.store = nc, nc.jetstream(), store
        self.stored = 0
        self.duplicates = 0
        #: results refused since the coordinator started, by reason: ``malformed``,
        #: ``wrong-host`` (the message names a host other than its subject's),
        #: ``not-announced`` (a VM that host did not announce, or was not sent),
        #: ``round-closed`` (a round that is not open in the store)
        self.refused: Counter[str] = Counter()
        self.known_hosts: dict[str, HostInfo] = {}
        self._consumers: set[str] = set()
        self._round: HostsRoundReport | None = None
        self._expected: dict[str, str] = {}  # VM -> host, of the round in progress
        self._round_uid = ""
        self._on_result: ResultHook | None = None
        self._changed = anyio.Event()

    # -- hosts -----------------------------------------------------------------------

    async def hosts(self) -> dict[str, HostInfo]:
        """Every host that ever announced itself (alive or not), by name."""
        kv = await self.js.key_value(HOSTS_BUCKET)
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        found = {}
        for key in keys:
            entry = await kv.get(key)
            if entry.value:
                try:
                    info = decode_host(entry.value)
                except ValueError:
                    log.warning("coordinator: unreadable heartbeat of host %s", key)
                    continue
                if info.host != key:  # the key is the host's own (server permissions)
                    log.warning("coordinator: host %s announced itself as %r; ignored", key,
                                info.host)
                    continue
                found[key] = info
        self.known_hosts = found
        return found

    async def wait_for_hosts(self, timeout: float = 10.0) -> None:
        """When no agent is heard from yet (a fresh server: the hosts bucket was
        just created), wait up to ``timeout`` seconds for one, then a heartbeat
        and a half for the others."""
        def alive(hosts: dict[str, HostInfo]) -> list[HostInfo]:
            return [i for i in hosts.values() if i.alive(time.time())]

        if alive(await self.hosts()):
            return
        with anyio.move_on_after(timeout):
            while not (heard := alive(await self.hosts())):
                await anyio.sleep(0.5)
            await anyio.sleep(1.5 * max(i.heartbeat for i in heard))

    async def watch_hosts(self, every: float = 5.0) -> None:
        """Give every announced host its job consumer, so its agents can bind."""
        while True:
            try:
                for host in await self.hosts():
                    if host not in self._consumers:
                        await ensure_host(self.js, host)
                        self._consumers.add(host)
            except _NATS_ERRORS as e:
                log.info("coordinator: hosts not read (%s); retrying", type(e).__name__)
            await anyio.sleep(every)

    # -- results -----------------------------------------------------------------------

    async def consume(self) -> None:
        """Store results as they come, for the coordinator's whole life."""
        sub = await self.js.pull_subscribe_bind(COORDINATOR_CONSUMER, RESULTS_STREAM)
        while True:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except _NATS_ERRORS as e:
                log.info("coordinator: results not fetched (%s); retrying", type(e).__name__)
                await anyio.sleep(0.5)
                continue
            senders = {results_host(msg.subject) for msg in msgs}
            if not senders <= self.known_hosts.keys():  # a host announced since we looked
                with contextlib.suppress(*_NATS_ERRORS):
                    await self.hosts()
            for msg in msgs:
                self._store(msg)
            for msg in msgs:
                with contextlib.suppress(*_NATS_ERRORS):  # if lost: delivered again,
                    await msg.ack()                        # then only acknowledged

    def _refuse(self, reason: str, host: str | None, detail: str) -> None:
        self.refused[reason] += 1
        log.warning("coordinator: refused a result from host %s (%s): %s", host or "?",
                    reason, detail)

    def _store(self, msg: Msg) -> None:
        host = results_host(msg.subject)
        try:
            jr = decode_result(msg.data)
            result = jr.inspect_result()
        except (ValueError, TypeError):
            self._refuse("malformed", host, "not a result")
            return
        if host is None or jr.host != host:
            self._refuse("wrong-host", host, f"it names host {jr.host!r}")
            return
        report = self._round
        current = report is not None and jr.round_id == report.round_id \
            and jr.round_uid == self._round_uid
        own_name, result.vm = result.vm, fleet_name(host, result.vm)
        if current:
            owner = self._expected.get(result.vm)
        else:
            info = self.known_hosts.get(host)
            owner = host if info is not None and any(
                vm.name == own_name for vm in info.vms) else None
        if owner != host:
            self._refuse("not-announced", host, f"VM {own_name!r} is not one of its "
                         + ("jobs this round" if current else "VMs"))
            return
        if not current and not self.store.round_open(jr.round_id, jr.round_uid):
            self._refuse("round-closed", host, f"round {jr.round_id} ({jr.round_uid or '?'}) "
                         "is not open in this store")
            return
        if self.store.has_result(jr.round_id, result.vm):
            self.duplicates += 1
            return
        drift = self.store.record(jr.round_id, result)
        self.stored += 1
        if not current or report is None:
            return
        report.results.append(result)
        report.drift += drift
        tally = report.hosts[host]
        if result.ok:
            tally.covered += 1
        else:
            tally.failed += 1
        if self._on_result is not None:
            self._on_result(result)
        self._changed.set()

    # -- rounds ------------------------------------------------------------------------

    async def round(self, options: RoundOptions | None = None, *,
                    stop: anyio.Event | None = None,
                    on_result: ResultHook | None = None) -> HostsRoundReport:
        """One round across every announced host, within ``options.budget``
        seconds; hosts without a recent heartbeat are reported missing and their
        VMs not reached. ``stop`` withdraws the jobs not yet started."""
        start, wall = anyio.current_time(), time.time()
        options = options or RoundOptions()
        budget = options.budget
        specs = list(resolve_specs(options.inspectors))
        infos = await self.hosts()
        live = {h: i for h, i in infos.items() if i.alive(wall)}
        report = HostsRoundReport(budget=budget, strategy=options.strategy)
        last = self.store.last_scanned()
        orders: dict[str, list[VM]] = {}
        plans = []
        for host, info in sorted(infos.items()):
            vms = [dataclasses.replace(vm, name=fleet_name(host, vm.name)) for vm in info.vms]
            orders[host] = order_fleet(vms, last)
            tally = report.hosts[host] = HostTally(vms=len(vms), missing=host not in live)
            if host in live:
                plan = plan_round(len(vms), budget, info.pool_size, info.costs,
                                  "cold" if info.strategy == "cold" else "pooled",
                                  [vm.trust_group for vm in orders[host]])
                tally.predicted = plan.predicted
                plans.append(plan)
        report.plan = _total(plans, budget)
        report.pool_size = sum(i.pool_size for i in live.values())
        report.fleet_changes = self.store.sync_fleet(
            [vm for order in orders.values() for vm in order], complete=len(live) == len(infos))
        report.round_id = self.store.start_round(budget, options.strategy, report.pool_size,
                                                 report.plan.predicted)
        self._round, self._on_result = report, on_result
        self._round_uid = self.store.round_uid(report.round_id)
        self._expected = {vm.name: h for h in live for vm in orders[h]}
        deadline = wall + budget - SHUTDOWN_RESERVE_S
        try:
            with anyio.move_on_at(start + budget - 0.5):
                async with anyio.create_task_group() as tg:
                    for host in live:
                        tg.start_soon(self._queue, report, host, orders[host], deadline, specs)
                await self._wait(report, stop)
            with anyio.move_on_after(2.0, shield=True):
                await self._withdraw(list(live))
        finally:
            self._round, self._on_result, expected = None, None, self._expected
            self._expected = {}
        done = {r.vm for r in report.results}
        for host, order in orders.items():
            missed = [vm.name for vm in order if vm.name not in done]
            report.not_reached += missed
            report.hosts[host].not_reached = len(missed)
        report.elapsed = anyio.current_time() - start
        report.stopped = bool(stop and stop.is_set())
        with anyio.move_on_after(2.0, shield=True), contextlib.suppress(*_NATS_ERRORS):
            await self.hosts()  # the heartbeats since: each host's boots and retirements
        _host_figures(report, infos, self.known_hosts)
        self.store.end_round(report.round_id, report.summary())
        log.info("round %s: %d of %d VMs answered", report.round_id, len(done), len(expected))
        return report

    async def _queue(self, report: HostsRoundReport, host: str, order: list[VM],
                     deadline: float, specs: list[Any]) -> None:
        """Publish ``host``'s jobs, stalest first (one publisher per host keeps
        the order; ids make a retried publish harmless)."""
        assert report.round_id is not None
        await _retrying(lambda: ensure_host(self.js, host))
        self._consumers.add(host)
        for vm in order:
            own_name = vm.name.removeprefix(fleet_name(host, ""))
            data = encode(Job(report.round_id, host, own_name, deadline, specs,
                              secrets.token_hex(8), self._round_uid))
            headers = {"Nats-Msg-Id": job_id(self._round_uid, host, vm.name)}
            attempts = 0

            async def publish(d: bytes = data, h: dict[str, str] = headers) -> PubAck:
                nonlocal attempts
                attempts += 1
                return await self.js.publish(jobs_subject(host), d, timeout=5.0, headers=h)

            ack = await _retrying(publish)
            if ack.duplicate and attempts == 1:  # not a retry of ours: nothing was queued
                report.hosts[host].duplicate_jobs += 1
                log.error("coordinator: the server took the job of %s on host %s for a "
                          "duplicate and did not queue it", vm.name, host)
                continue
            report.hosts[host].queued += 1

    async def _wait(self, report: HostsRoundReport, stop: anyio.Event | None) -> None:
        while len(report.results) < len(self._expected):
            if stop is not None and stop.is_set():
                await self._withdraw(list({h for h in self._expected.values()}))
                stop = None  # in-flight jobs still report, until the deadline
            self._changed = anyio.Event()
            with anyio.move_on_after(0.5):
                await self._changed.wait()

    async def _withdraw(self, hosts: list[str]) -> None:
        """Remove the round's jobs no agent has started (agents would refuse
        them past the deadline anyway)."""
        async def purge(host: str) -> None:
            try:
                await self.js.purge_stream(JOBS_STREAM, subject=jobs_subject(host))
            except _NATS_ERRORS as e:
                log.info("coordinator: jobs of %s not withdrawn (%s)", host, type(e).__name__)

        async with anyio.create_task_group() as tg:
            for host in hosts:
                tg.start_soon(purge, host)


async def _retrying(call: Callable[[], Any], pause: float = 0.5) -> Any:
    """Await ``call()`` until NATS takes it (a restarted server is waited for)."""
    while True:
        try:
            return await call()
        except _NATS_ERRORS as e:
            log.info("coordinator: NATS not answering (%s); retrying", type(e).__name__)
            await anyio.sleep(pause)


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


@asynccontextmanager
async def open_coordinator(settings: NatsSettings, store: Store) -> AsyncIterator[Coordinator]:
    """A connected coordinator with its streams set up, storing results and
    giving hosts their consumers in the background until the block ends."""
    async with connected(settings, "guestpool-coordinator") as nc:
        coordinator = Coordinator(nc, store)
        await _retrying(lambda: ensure_streams(coordinator.js))
        async with anyio.create_task_group() as tg:
            tg.start_soon(coordinator.consume)
            tg.start_soon(coordinator.watch_hosts)
            yield coordinator
            tg.cancel_scope.cancel()
