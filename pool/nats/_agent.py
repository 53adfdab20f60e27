"""The agent: one per hypervisor. Keeps its pool warm, announces its fleet and
capacity, and runs the jobs the coordinator queues for its host.

Every job goes through :meth:`Pool.inspect`, the code a one-host round uses
(safety checks, trust groups, retries). At most ``pool.size`` jobs are held at
once, so a job waits in the stream, not in a busy agent. A job is acknowledged
only after its result is in the results stream (published under a
de-duplication id), so an agent killed at any moment loses nothing: the jobs it
held are delivered again. Their reply subjects are kept in a small state file,
and a restarted agent hands them back at once (a NAK) instead of waiting for
the acknowledgement deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import Error as JetStreamError

from guestpool._errors import GuestpoolError
from guestpool._paths import data_dir
from guestpool.fleet._model import VM
from guestpool.fleet._sources import Source
from guestpool.inspectors._registry import resolve_specs
from guestpool.inspectors._specs import InspectorSpec
from guestpool.rounds._fingerprint import Fingerprint, current_digest
from guestpool.rounds._pool import Pool
from guestpool.rounds._report import RoundOptions

from ._connect import ACK_WAIT_S, NatsSettings, connected
from ._messages import HostInfo, JobResult, decode_job, encode, wire_result
from ._subjects import (
    HOSTS_BUCKET,
    JOBS_STREAM,
    check_host,
    host_consumer,
    result_id,
    results_subject,
)

log = logging.getLogger("guestpool")
#: seconds between re-reads of the local fleet source
FLEET_REFRESH_S = 30.0
_NATS_ERRORS = (nats.errors.Error, JetStreamError, OSError, TimeoutError)


class _InFlight:
    """Reply subjects of the jobs this agent holds, kept on disk (see module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.subjects: set[str] = set()

    def left_by_last_run(self) -> list[str]:
        try:
            return list(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return []

    def clear(self) -> None:
        self.subjects.clear()
        self._save()

    def add(self, subject: str) -> None:
        self.subjects.add(subject)
        self._save()

    def discard(self, subject: str) -> None:
        self.subjects.discard(subject)
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(self.subjects)))
        tmp.replace(self.path)


@dataclass
class AgentStats:
    jobs_done: int = 0
    jobs_expired: int = 0
    redelivered_done: int = 0
    job_seconds: list[float] = field(default_factory=list)


class Agent:
    """One host's agent (see the module docstring); :func:`run_agent` runs it."""

    def __init__(self, nc: Client, host: str, source: Source | None, pool: Pool, *,
                 vms: list[VM] | None = None, heartbeat: float = 2.0,
                 state_dir: Path | None = None) -> None:
        self.nc, self.js = nc, nc.jetstream()
        self.host, self.source, self.pool = check_host(host), source, pool
        self.vms: dict[str, VM] = {vm.name: vm for vm in vms or []}
        self.heartbeat = heartbeat
        self.id = uuid.uuid4().hex[:12]
        self.ready = False
        self.stats = AgentStats()
        self._done: set[str] = set()  # result ids published by this run
        #: VM -> the fingerprint of its last good inspection by this run, and the
        #: digest of those files as the last heartbeat found them
        self._prints: dict[str, Fingerprint] = {}
        self._digests: dict[str, str] = {}
        state = state_dir or data_dir()
        state.mkdir(parents=True, exist_ok=True)
        self.inflight = _InFlight(state / f"agent-{host}.inflight.json")
        self._slots = anyio.Semaphore(pool.size)
        #: the consumer's acknowledgement deadline (read when bound)
        self.ack_wait = ACK_WAIT_S

    # -- inventory and heartbeat ---------------------------------------------------

    async def load_fleet(self) -> None:
        if self.source is not None:
            vms = await anyio.to_thread.run_sync(self.source.load)
            self.vms = {vm.name: vm for vm in vms}

    def info(self) -> HostInfo:
        stats, strategy = self.pool.stats, self.pool.strategy
        costs = {}
        if stats.boot_seconds:
            costs["boot"] = sum(stats.boot_seconds) / len(stats.boot_seconds)
        if self.stats.job_seconds:
            recent = self.stats.job_seconds[-200:]
            costs[f"job-{strategy}"] = sum(recent) / len(recent)
        return HostInfo(self.host, time.time(), self.heartbeat, self.pool.size, strategy, costs,
                        list(self.vms.values()), self.ready, self.id, stats.boots,
                        dict(stats.retirements), self.pool.accel if stats.boots else "",
                        dict(self._digests))

    def disk_digests(self) -> dict[str, str]:
        """Each inspected VM's disk files as they are now (the coordinator verifies
        it unchanged against what it recorded); file metadata only: a thread."""
        out = {}
        for name, files in list(self._prints.items()):
            now = current_digest(files) if name in self.vms else None
            if now is not None:
                out[name] = now
        return out

    async def announce(self) -> None:
        """Publish inventory and capacity every heartbeat, re-reading the fleet
        every FLEET_REFRESH_S; a server away is waited for."""
        kv = None
        last_load = anyio.current_time()
        while True:
            try:
                if kv is None:
                    kv = await self.js.key_value(HOSTS_BUCKET)
                self._digests = await anyio.to_thread.run_sync(self.disk_digests)
                await kv.put(self.host, encode(self.info()))
            except _NATS_ERRORS as e:
                log.info("agent %s: heartbeat not sent (%s); retrying", self.host, e)
                kv = None if not isinstance(e, TimeoutError) else kv
            await anyio.sleep(self.heartbeat)
            if anyio.current_time() - last_load >= FLEET_REFRESH_S:
                last_load = anyio.current_time()
                try:
                    await self.load_fleet()
                except GuestpoolError as e:
                    log.warning("agent %s: fleet not re-read: %s", self.host, e)

    # -- jobs ------------------------------------------------------------------------

    async def hand_back_orphans(self) -> None:
        """NAK the jobs a killed run of this agent held: delivered again now."""
        for subject in self.inflight.left_by_last_run():
            await self.nc.publish(subject, b"-NAK")
        self.inflight.clear()

    async def take_jobs(self) -> None:
        """Pull one job whenever an appliance slot is free, until cancelled."""
        sub = await self.js.pull_subscribe_bind(host_consumer(self.host), JOBS_STREAM)
        bound = False
        async with anyio.create_task_group() as tg:
            while True:
                if not bound:
                    with contextlib.suppress(*_NATS_ERRORS):
                        self.ack_wait = (await sub.consumer_info()).config.ack_wait or ACK_WAIT_S
                        bound = True
                await self._slots.acquire()
                try:
                    msgs = await sub.fetch(1, timeout=2.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    self._slots.release()
                    continue
                except _NATS_ERRORS as e:  # no consumer yet, server away: wait
                    self._slots.release()
                    log.info("agent %s: waiting for jobs (%s)", self.host, e)
                    await anyio.sleep(1.0)
                    continue
                tg.start_soon(self._run_job, msgs[0])

    async def _run_job(self, msg: Msg) -> None:
        try:
            await self._job(msg)
        finally:
            self._slots.release()

    async def _job(self, msg: Msg) -> None:
        try:
            job = decode_job(msg.data)
        except ValueError:
            log.warning("agent %s: dropping a malformed job", self.host)
            await msg.term()
            return
        rids = {name: result_id(job.round_id, self.host, name, job.nonce) for name in job.vms}
        if set(rids.values()) <= self._done:  # delivered again after our ack was lost
            self.stats.redelivered_done += 1
            await msg.ack()
            return
        if job.host != self.host or time.time() >= job.deadline:
            self.stats.jobs_expired += job.host == self.host
            await msg.term()  # never started past its round's deadline
            return
        self.inflight.add(msg.reply)
        settled = False
        try:
            results = await self._inspect(job.vms, job.inspectors, job.deadline, msg)
            if results is None:  # the round's deadline came first: not reached
                self.stats.jobs_expired += 1
                await msg.term()
            else:
                for result in results:
                    rid = rids[str(result["vm"])]
                    await self._publish(JobResult(job.round_id, self.host, result,
                                                  job.round_uid), rid)
                    self._done.add(rid)
                await msg.ack()
                self.stats.jobs_done += 1
            settled = True
        finally:
            if not settled:  # the agent is stopping: hand the job back now
                with anyio.move_on_after(2, shield=True), contextlib.suppress(*_NATS_ERRORS):
                    await msg.nak()
            self.inflight.discard(msg.reply)

    async def _inspect(self, names: list[str], inspectors: list[InspectorSpec],
                       deadline: float, msg: Msg) -> list[dict[str, object]] | None:
        """The VMs' results (several: attached together, as one host batches), or
        None when the round's deadline came first."""
        unknown = [{"vm": name, "ok": False, "error": {
            "kind": "image", "message": f"VM {name} is not in host {self.host}'s fleet"}}
            for name in names if name not in self.vms]
        vms = [self.vms[name] for name in names if name in self.vms]
        if not vms:
            return unknown
        specs = resolve_specs(inspectors, allow_paths=False)  # registered names only
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._keep_alive, msg)
            with anyio.move_on_after(deadline - time.time()):
                results = [await self.pool.inspect(vms[0], specs)] if len(vms) == 1 \
                    else await self.pool.inspect_batch(vms, specs)
                for result in results:
                    if result.ok and result.fingerprint:
                        self._prints[result.vm] = result.fingerprint
                    else:
                        self._prints.pop(result.vm, None)
                    self.stats.job_seconds.append(sum(
                        result.timings.get(k, 0.0) for k in ("attach", "inspect", "detach")))
                tg.cancel_scope.cancel()
                return [*unknown, *(wire_result(r) for r in results)]
            tg.cancel_scope.cancel()
        return None

    async def _keep_alive(self, msg: Msg) -> None:
        """In-progress acknowledgements while a job waits or runs."""
        while True:
            await anyio.sleep(self.ack_wait / 4)
            with contextlib.suppress(*_NATS_ERRORS):
                await msg.in_progress()

    async def _publish(self, result: JobResult, rid: str) -> None:
        """Into the results stream, retried until the server has it (the id makes
        a repeat harmless)."""
        data = encode(result)
        subject = results_subject(self.host)
        while True:
            try:
                await self.js.publish(subject, data, timeout=5.0, headers={"Nats-Msg-Id": rid})
                return
            except _NATS_ERRORS as e:
                log.info("agent %s: result %s not yet published (%s); retrying", self.host,
                         rid, type(e).__name__)
                await anyio.sleep(0.5)

    async def run(self, stop: anyio.Event | None = None) -> None:
        """Announce, boot the pool, take jobs; until ``stop`` (or cancellation)."""
        stop = stop or anyio.Event()
        await self.load_fleet()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.announce)
            tg.start_soon(self._serve, stop)
            await stop.wait()
            tg.cancel_scope.cancel()

    async def _serve(self, stop: anyio.Event) -> None:
        async with self.pool:
            self.ready = True
            await self.hand_back_orphans()
            await self.take_jobs()


async def run_agent(settings: NatsSettings, host: str, source: Source,
                    options: RoundOptions | None = None, *, pool: Pool | None = None,
                    stop: anyio.Event | None = None, heartbeat: float = 2.0,
                    state_dir: Path | None = None) -> None:
    """Run ``host``'s agent until ``stop`` is set: ``source`` is its local fleet;
    ``pool`` (not yet entered) replaces the one ``options`` describe (a test or
    the bench passes one with simulated appliances). Runs on anyio's asyncio
    backend (nats-py is asyncio)."""
    check_host(host)
    if pool is None:
        options = options or RoundOptions()
        await anyio.to_thread.run_sync(source.load)  # the safety policy needs it read
        pool = options.pool(options.safety(source))
    async with connected(settings, f"guestpool-agent-{host}-{os.getpid()}", host) as nc:
        await Agent(nc, host, source, pool, heartbeat=heartbeat, state_dir=state_dir).run(stop)
