"""Rounds on an interval: the one loop behind ``guestpool monitor``, the service's
scheduled scans and library callers."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable

import anyio


async def run_periodic(
    interval: float,
    one_round: Callable[[int], Awaitable[object]],
    *,
    rounds: int | None = None,
    stop: anyio.Event | None = None,
) -> int:
    """Call ``one_round(n)`` for n = 1, 2, ... every ``interval`` seconds, start to
    start, until ``rounds`` are done or ``stop`` is set; the number of rounds run.

    A round that takes longer than the interval is followed at once by the next.
    ``stop`` ends the waiting at once; the round in progress decides itself how
    to finish (``run_round`` lets in-flight jobs finish and starts no new ones).
    """
    stop = stop or anyio.Event()
    n = 0
    while not stop.is_set() and (rounds is None or n < rounds):
        n += 1
        started = anyio.current_time()
        await one_round(n)
        if rounds is not None and n >= rounds:
            break
        with anyio.move_on_after(max(0.0, interval - (anyio.current_time() - started))):
            await stop.wait()
    return n


async def stop_on_signals(stop: anyio.Event, on_signal: Callable[[str], None] | None = None
                          ) -> None:
    """Set ``stop`` at the first SIGINT or SIGTERM (run it in a task group)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for sig in signals:
            if on_signal is not None:
                on_signal(signal.Signals(sig).name)
            stop.set()
            return
