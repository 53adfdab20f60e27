"""The service's scheduler: runs queued scans one after another, each a round.

The pool stays booted between the rounds of one fleet (a keeper task holds it
warm); a scan of another fleet, another trust domain, closes it first and
starts a new one, so an appliance never serves two fleets and only one pool's
appliances use memory at a time."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from guestpool._errors import GuestpoolError
from guestpool.fleet._safety import SafetyPolicy
from guestpool.fleet._sources import open_source
from guestpool.inspectors._registry import resolve_specs
from guestpool.rounds._pool import Pool
from guestpool.rounds._report import RoundOptions, RoundReport
from guestpool.rounds._round import run_round
from guestpool.store import _fleetview as fleetview
from guestpool.store._database import Store
from guestpool.store._journal import replay
from guestpool.store._results import InspectResult

from ._metrics import Metrics

if TYPE_CHECKING:
    from guestpool.nats import Coordinator
from ._osv_state import OsvState
from ._queue import ScanQueue
from ._reads import StoreReads

log = logging.getLogger("guestpool")


@dataclass
class Service:
    """State shared by the HTTP handlers and the scheduler."""

    store: Store
    queue: ScanQueue
    #: the fleets this service may scan, by name: requests name one, never a path
    fleets: dict[str, str]
    token: str | None
    open_reads: bool = False
    paused: bool = False
    options: RoundOptions = field(default_factory=RoundOptions)
    metrics: Metrics = field(default_factory=Metrics)
    pool: Pool | None = None
    running: str | None = None
    cancel: anyio.Event | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    wake: anyio.Event = field(default_factory=anyio.Event)
    allow_remote_libvirt: bool = False
    #: Host headers a request may carry when there is no token (the bind address)
    hosts: frozenset[str] = frozenset()
    #: the OSV folder (``options.osv``) and its index, for /vulns
    vulns: OsvState = field(default_factory=OsvState)
    #: with ``serve --nats``: the coordinator; scans then
    #: run across the agents' hosts (``_nats_hosts``)
    coordinator: Coordinator | None = None
    #: each host's share of the last round across hosts
    host_tallies: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the fleet ``pool`` is kept warm for
    warm_fleet: str | None = None
    #: (set to let the warm pool's keeper close it, set by the keeper once closed)
    _keeper_events: tuple[anyio.Event, anyio.Event] | None = None
    _keepers: TaskGroup | None = None
    #: the handlers' reads of the store, off the event loop on their own connection
    reads: StoreReads = field(init=False)
    _queue_unreadable: bool = False

    def __post_init__(self) -> None:
        self.reads = StoreReads(self.store.path)
        if self.vulns.folder is None:
            self.vulns.folder = self.options.osv
        replay(self.store)  # results a locked or full store did not take
        self.store.close_interrupted()  # rounds a killed service or scan left open
        fleetview.refresh(self.store)  # the read models' tables made now, not in a request
        finished = next((r["summary"] for r in self.store.recent_rounds(20) if r["summary"]),
                        None)
        if finished is not None:  # the gauges of the last round, across a restart
            self.metrics.set_round(finished)

    def default_fleet(self) -> str | None:
        """The fleet a request that names none scans: the only one configured."""
        return next(iter(self.fleets)) if len(self.fleets) == 1 else None

    # -- scheduling ----------------------------------------------------------------

    def estimate_start(self, scan_id: str) -> float:
        """Seconds from now until this scan can start (budgets of those ahead)."""
        wait = 0.0
        for s in self.queue.queued_ahead(scan_id):
            budget = float(s["request"].get("budget", self.options.budget))
            if s["state"] == "running" and s["started"]:
                wait += max(0.0, budget - (time.time() - s["started"]))
            else:
                wait += budget
        return wait

    async def scheduler(self) -> None:
        async with anyio.create_task_group() as keepers:
            self._keepers = keepers
            while True:
                scan = None if self.paused else await self._next_queued()
                if scan is None:
                    with anyio.move_on_after(1.0):
                        await self.wake.wait()
                    self.wake = anyio.Event()
                    continue
                await self._run(scan)

    async def _next_queued(self) -> dict[str, Any] | None:
        """The next scan, or None while another process holds the store's file
        locked (asked again a second later; the service goes on meanwhile)."""
        try:
            scan = await anyio.to_thread.run_sync(self.queue.next_queued)
        except sqlite3.OperationalError as e:
            if not self._queue_unreadable:  # once per episode, not every second
                log.warning("the scan queue cannot be read (%s): trying again", e)
            self._queue_unreadable = True
            return None
        self._queue_unreadable = False
        return scan

    async def _warm_pool(self, fleet: str, options: RoundOptions, safety: SafetyPolicy
                         ) -> Pool:
        """The pool kept booted for ``fleet``'s rounds: the one already warm, or a
        new one once the pool of another fleet is closed (its qemus gone first)."""
        if self.pool is not None and self.pool.running and self.warm_fleet == fleet:
            return self.pool
        if self._keeper_events is not None:
            release, closed = self._keeper_events
            release.set()
            await closed.wait()
        assert self._keepers is not None, "the scheduler is not running"
        pool = options.pool(safety, on_event=self.metrics.on_event)
        self._keeper_events = (anyio.Event(), anyio.Event())
        self.pool, self.warm_fleet = pool, fleet
        await self._keepers.start(self._keep_warm, pool, *self._keeper_events)
        return pool

    @staticmethod
    async def _keep_warm(pool: Pool, release: anyio.Event, closed: anyio.Event,
                         task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold ``pool`` booted until ``release``; a pool that fails is logged and
        the next round starts another."""
        try:
            async with pool.warm():
                task_status.started()
                await release.wait()
        except Exception:
            log.exception("the warm pool failed; the next scan starts a new one")
        finally:
            closed.set()

    def kick(self) -> None:
        self.wake.set()

    async def _run(self, scan: dict[str, Any]) -> None:
        req = scan["request"]
        self.running, self.cancel = scan["id"], anyio.Event()
        self.queue.start(scan["id"])
        try:
            await self._round(scan["id"], req, self.cancel)
        except GuestpoolError as e:
            self.queue.update(scan["id"], state="failed", finished=time.time(),
                              errors=[{"kind": "scan", "message": str(e)}])
        except Exception as e:  # one scan's failure must not stop the service
            log.exception("scan %s failed", scan["id"])
            self.queue.update(scan["id"], state="failed", finished=time.time(),
                              errors=[{"kind": "internal",
                                       "message": f"{type(e).__name__}: {e}"[:500]}])
        finally:
            self.running, self.cancel = None, None

    async def _round(self, scan_id: str, req: dict[str, Any], cancel: anyio.Event) -> None:
        if self.coordinator is not None:
            return await self._hosts_round(scan_id, req, cancel)
        name = req.get("fleet") or self.default_fleet()
        if name not in self.fleets:
            raise GuestpoolError(f"fleet {name!r} is not configured for this service")
        source = open_source(self.fleets[name], allow_remote_libvirt=self.allow_remote_libvirt)
        vms = await anyio.to_thread.run_sync(source.load)
        if req.get("vms"):
            wanted = set(req["vms"])
            vms = [v for v in vms if v.name in wanted]
        on_result = self.progress_hook(scan_id, len(vms))
        options = self.scan_options(req)
        safety = options.safety(source)
        pool = await self._warm_pool(name, options, safety)
        self.metrics.pool_size.set(pool.size)
        report: RoundReport = await run_round(vms, options, store=self.store, pool=pool,
                                              safety=safety, stop=cancel, on_result=on_result,
                                              whole_fleet=not req.get("vms"))
        self.finish(scan_id, cancel, report)

    async def _hosts_round(self, scan_id: str, req: dict[str, Any],
                               cancel: anyio.Event) -> None:
        """One scan as a round across hosts (the request's budget and inspectors)."""
        from guestpool.nats import HostsRoundReport, HostsTarget

        assert self.coordinator is not None
        on_result = self.progress_hook(
            scan_id, sum(len(i.vms) for i in self.coordinator.known_hosts.values()))
        report = await run_round(HostsTarget(self.coordinator), self.scan_options(req),
                                 store=self.store, stop=cancel, on_result=on_result)
        assert isinstance(report, HostsRoundReport)
        self.host_tallies = {h: t.to_dict() for h, t in report.hosts.items()}
        self.progress["total"] = len(report.results) + len(report.not_reached)
        self.finish(scan_id, cancel, report)

    # -- shared by one-host rounds and rounds across hosts (``_nats_hosts``) ----------------

    def progress_hook(self, scan_id: str, total: int) -> Callable[[InspectResult], None]:
        """Start the scan's progress at ``total`` VMs; the hook counts each result."""
        self.progress = {"total": total, "done": 0, "covered": 0, "failed": 0,
                         "unchanged": 0}
        self.queue.update(scan_id, progress=self.progress)
        errors: list[dict[str, Any]] = []

        def on_result(r: InspectResult) -> None:
            self.progress["done"] += 1
            self.progress["covered" if r.ok else "failed"] += 1
            self.progress["unchanged"] += r.state == "unchanged"
            if not r.ok:
                errors.append({"vm": r.vm, **(r.error or {})})
            self.queue.note_progress(scan_id, self.progress, errors[-100:])

        return on_result

    def scan_options(self, req: dict[str, Any]) -> RoundOptions:
        """The service's round options with the request's budget and inspectors."""
        return dataclasses.replace(
            self.options, budget=float(req.get("budget", self.options.budget)),
            inspectors=(resolve_specs(req["inspectors"], allow_paths=False)
                        if req.get("inspectors") else self.options.inspectors))

    def finish(self, scan_id: str, cancel: anyio.Event, report: RoundReport) -> None:
        summary = report.summary()
        self.queue.update(scan_id, state="cancelled" if cancel.is_set() else "done",
                          finished=time.time(), summary=summary, progress=self.progress)
        self.metrics.set_round(summary)
