"""A round's results go to the store off the event loop, in order, and are never lost.

Inspection does not wait for storage: a result is queued and the writer task
commits it in a worker thread on a connection of its own. A store another
process holds locked makes the writer wait and try again while the round goes
on; a store that fails otherwise (a full disk) stops the writing, not the
round. What is still unwritten when the round ends goes to the store's journal
(``guestpool.store._journal``), replayed into the store at the next start.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import anyio

from guestpool.store._database import Store
from guestpool.store._drift import Change
from guestpool.store._journal import entry, spool
from guestpool.store._results import InspectResult
from guestpool.store._transactions import StoreError

from ._report import RoundReport

ResultHook = Callable[[InspectResult], None]

log = logging.getLogger(__name__)
#: how long one write waits on another process's lock before the writer looks again
BUSY_WAIT_S = 1.0
RETRY_S = 0.5


class ResultWriter:
    """Commits queued results of round ``round_id`` (run :meth:`run` in a task group)."""

    def __init__(self, path: Path, round_id: int | None, context: str | None,
                 on_written: Callable[[InspectResult, list[Change]], None]) -> None:
        self.path, self._round, self._context = path, round_id, context
        self._on_written = on_written
        self._queue: deque[tuple[InspectResult, str | None, float]] = deque()
        self._changed = anyio.Event()
        self._store: Store | None = None
        #: why writing stopped (a store that fails for another reason than a lock)
        self.error: StoreError | None = None
        #: the first time a lock made the writer wait
        self.waited: str | None = None
        #: waiting on another process's lock now (the last write found it busy)
        self.busy = False
        self.running = True

    def put(self, result: InspectResult, kind: str | None) -> None:
        self._queue.append((result, kind, time.time()))  # stored with when it came
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def unwritten(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Write until cancelled; a busy store is retried, another failure stops."""
        try:
            while True:
                if not self._queue or self.error is not None:
                    await self._changed.wait()
                    continue
                result, kind, at = self._queue[0]
                try:
                    changes = await anyio.to_thread.run_sync(self._write, result, kind, at)
                except Exception as e:
                    if not isinstance(e, StoreError) or not e.busy:
                        self.error = e if isinstance(e, StoreError) else StoreError(
                            f"results store {self.path}: {type(e).__name__}: {e}")
                        log.warning("round %s: %s; results go to the journal", self._round,
                                    self.error)
                        self._wake()
                        continue
                    if self.waited is None:
                        self.waited = str(e)
                        log.warning("round %s: %s; the round goes on, its results wait",
                                    self._round, e)
                    if not self.busy:
                        self.busy = True
                        self._wake()
                    await anyio.sleep(RETRY_S)
                    continue
                self.busy = False
                self._queue.popleft()
                self._on_written(result, changes)
                self._wake()
        finally:
            self.running = False
            self._wake()  # nobody waits for a writer that is gone
            if self._store is not None:
                self._store.close()

    def _write(self, result: InspectResult, kind: str | None, at: float) -> list[Change]:
        if self._store is None:  # this thread's own connection, short lock waits
            self._store = Store(self.path, busy_timeout=BUSY_WAIT_S)
        return self._store.record(self._round, result, self._context, kind, once=True, at=at)

    async def drain(self, until: float, bounded: bool = False) -> None:
        """Wait until every queued result is written or writing failed; while the
        store is locked by another process, only until ``until``
        (``anyio.current_time()``). Writes that make progress are waited for: each
        takes milliseconds, or at most ``BUSY_WAIT_S`` on a lock. ``bounded``: never
        past ``until``."""
        while self._queue and self.error is None and self.running:
            if (self.busy or bounded) and anyio.current_time() >= until:
                return
            with anyio.move_on_at(until if self.busy or bounded else math.inf):
                await self._changed.wait()

    def spool(self) -> Path | None:
        """Put what is still queued into the journal; where it went (None: nothing)."""
        if not self._queue:
            return None
        where = spool(self.path, (entry(self._round, r, self._context, k, at)
                                   for r, k, at in self._queue))
        kept, self._queue = self._queue, deque()
        count = len(kept)
        self._wake()
        for result, _, _ in kept:  # safe in the journal: reported now
            self._on_written(result, [])
        log.warning("round %s: %d results could not be stored (%s); kept in %s and stored "
                    "at the next start", self._round, count,
                    self.error or self.waited, where)
        return where


class Delivery:
    """What a target calls with each result of the round: counted in the report at
    once, queued for the store, and passed to ``on_result`` once it is safe
    (committed, or kept in the journal): a scan killed at any moment loses nothing
    it reported. :meth:`stored` waits until those delivered so far are written."""

    def __init__(self, report: RoundReport, writer: ResultWriter | None,
                 kind_of: Callable[[InspectResult], str], on_result: ResultHook | None) -> None:
        self._report, self._writer, self._kind_of = report, writer, kind_of
        self._on_result = on_result

    def __call__(self, result: InspectResult) -> None:
        self._report.results.append(result)
        if self._writer is not None:
            self._writer.put(result, self._kind_of(result))
        elif self._on_result is not None:
            self._on_result(result)

    async def stored(self, timeout: float = 5.0) -> bool:
        """Whether every result delivered so far is in the store within ``timeout``
        seconds (a result is acknowledged to its sender only then)."""
        if self._writer is None:
            return True
        await self._writer.drain(anyio.current_time() + timeout, bounded=True)
        return self._writer.unwritten == 0
