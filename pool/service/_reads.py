"""The handlers' reads of the results store, off the event loop.

A read of a 10,000-VM store takes milliseconds to seconds (the read models
catch up first), and another process's lock can make SQLite wait: on the
event loop either would stall every request and the running round. Reads
therefore run on a worker thread, on a connection of their own (never the
one the round's writer uses, so a handler never sees, or waits inside, the
writer's transaction), one read at a time.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import anyio

from guestpool.store._database import Store
from guestpool.store._transactions import reporting

P = ParamSpec("P")
T = TypeVar("T")

#: seconds a read waits on another process's lock (WAL readers rarely wait at all)
READ_WAIT_S = 1.0


class StoreReads:
    """``await reads(fn, *args)`` runs ``fn(store, *args)`` on a worker thread
    with the readers' own connection to the store at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._store: Store | None = None
        self._one_at_a_time = anyio.CapacityLimiter(1)

    async def __call__(self, fn: Callable[Concatenate[Store, P], T],
                       *args: P.args, **kwargs: P.kwargs) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(self._run, fn, *args, **kwargs), limiter=self._one_at_a_time)

    def _run(self, fn: Callable[Concatenate[Store, P], T], *args: P.args,
             **kwargs: P.kwargs) -> T:
        with reporting(self.path):  # a lock or a broken file: a StoreError the app answers
            if self._store is None:  # opened on the worker thread, at the first read
                self._store = Store(self.path, busy_timeout=READ_WAIT_S)
            return fn(self._store, *args, **kwargs)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
