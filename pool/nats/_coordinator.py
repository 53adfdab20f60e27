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
import functools
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
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

from guestpool.store._database import Store
from guestpool.store._results import InspectResult
from guestpool.store._transactions import StoreError

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


@dataclass
class CurrentRound:
    """The round in progress, as the coordinator needs it to route its results."""

    round_id: int
    uid: str
    #: VM (``HOST:NAME``) -> the host it was queued to
    expected: dict[str, str]
    #: called with (host, result) for each of this round's results, once each
    deliver: Callable[[str, InspectResult], None]
    #: whether the results delivered so far are committed (the round's writer stores
    #: them off the event loop); a result is acknowledged only then
    stored: Callable[[], Awaitable[bool]]
    #: this round's VMs delivered already: a copy delivered again before its
    #: original is committed is not stored twice
    delivered: set[str] = field(default_factory=set)


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
        self.current: CurrentRound | None = None
        #: late results (a round a killed coordinator left open), written one at a time
        self._writes = anyio.CapacityLimiter(1)

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
            taken = [msg for msg in msgs if await self._store(msg)]
            now = self.current
            if now is not None and not await now.stored():
                continue  # not committed yet (a locked store): sent again, then deduplicated
            for msg in taken:
                with contextlib.suppress(*_NATS_ERRORS):  # if lost: delivered again,
                    await msg.ack()                        # then only acknowledged

    def _refuse(self, reason: str, host: str | None, detail: str) -> None:
        self.refused[reason] += 1
        log.warning("coordinator: refused a result from host %s (%s): %s", host or "?",
                    reason, detail)

    async def _store(self, msg: Msg) -> bool:
        """Take one result (or refuse it); False when it could not be stored now
        and must not be acknowledged (NATS delivers it again)."""
        host = results_host(msg.subject)
        try:
            jr = decode_result(msg.data)
            result = jr.inspect_result()
        except (ValueError, TypeError):
            self._refuse("malformed", host, "not a result")
            return True
        if host is None or jr.host != host:
            self._refuse("wrong-host", host, f"it names host {jr.host!r}")
            return True
        now = self.current
        current = now is not None and jr.round_id == now.round_id and jr.round_uid == now.uid
        own_name, result.vm = result.vm, fleet_name(host, result.vm)
        if current:
            assert now is not None
            owner = now.expected.get(result.vm)
        else:
            info = self.known_hosts.get(host)
            owner = host if info is not None and any(
                vm.name == own_name for vm in info.vms) else None
        if owner != host:
            self._refuse("not-announced", host, f"VM {own_name!r} is not one of its "
                         + ("jobs this round" if current else "VMs"))
            return True
        if not current and not self.store.round_open(jr.round_id, jr.round_uid):
            self._refuse("round-closed", host, f"round {jr.round_id} ({jr.round_uid or '?'}) "
                         "is not open in this store")
            return True
        if (current and now is not None and result.vm in now.delivered) \
                or self.store.has_result(jr.round_id, result.vm):
            self.duplicates += 1
            return True
        self.stored += 1
        if current:  # the round stores it, with its drift, and reports it
            assert now is not None
            now.delivered.add(result.vm)
            now.deliver(host, result)
        else:  # a round a killed coordinator left open; the write may wait on a lock
            try:
                await anyio.to_thread.run_sync(functools.partial(
                    self.store.record, jr.round_id, result, once=True), limiter=self._writes)
            except StoreError as e:
                self.stored -= 1
                log.warning("coordinator: a late result of %s not stored yet (%s): it is "
                            "delivered again", result.vm, e)
                return False
        return True

    # -- the round in progress (``HostsTarget`` drives it) ----------------------------

    async def queue(self, host: str, batches: list[list[str]], deadline: float,
                    specs: list[Any]) -> tuple[int, int, int]:
        """Publish the current round's jobs of ``host``, one per batch of its own
        VM names, in order (one publisher per host keeps it; ids make a retried
        publish harmless); ``deadline`` is wall-clock. Returns the jobs queued, their
        VMs, and the VMs the server refused as duplicates."""
        now = self.current
        assert now is not None
        await _retrying(lambda: ensure_host(self.js, host))
        self._consumers.add(host)
        jobs = queued = duplicates = 0
        for batch in batches:
            name = batch[0]
            data = encode(Job(now.round_id, host, name, deadline, specs,
                              secrets.token_hex(8), now.uid, batch[1:]))
            headers = {"Nats-Msg-Id": job_id(now.uid, host, name)}
            attempts = 0

            async def publish(d: bytes = data, h: dict[str, str] = headers) -> PubAck:
                nonlocal attempts
                attempts += 1
                return await self.js.publish(jobs_subject(host), d, timeout=5.0, headers=h)

            ack = await _retrying(publish)
            if ack.duplicate and attempts == 1:  # not a retry of ours: nothing was queued
                duplicates += len(batch)
                log.error("coordinator: the server took the job of %s on host %s for a "
                          "duplicate and did not queue it", ", ".join(batch), host)
                continue
            jobs += 1
            queued += len(batch)
        return jobs, queued, duplicates

    async def withdraw(self, hosts: list[str]) -> None:
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
