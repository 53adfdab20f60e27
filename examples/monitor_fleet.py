"""A fleet monitor in a dozen lines of library code: a round every INTERVAL
seconds, results and drift kept in a store, drift printed per round.

    .venv/bin/guestpool fleet demo /tmp/demo --count 12
    .venv/bin/python examples/monitor_fleet.py /tmp/demo/fleet.json 120 3
"""

from __future__ import annotations

import sys
from collections import Counter

import anyio

from guestpool.dispatch import run_round
from guestpool.sources import open_source, safety_policy
from guestpool.store import Store


async def main(fleet: str, interval: float, rounds: int) -> None:
    source = open_source(fleet)
    store = Store("/tmp/guestpool-example.db")
    for n in range(1, rounds + 1):
        start = anyio.current_time()
        report = await run_round(source.load(), budget=interval, store=store,
                                 safety=safety_policy(source),
                                 inspectors=["os", "packages", "users"])
        kinds = Counter(c["kind"] for c in report.drift)
        print(f"round {n}: {len(report.covered)} covered, {len(report.failed)} failed, "
              f"{len(report.not_reached)} not reached; drift: {dict(kinds) or 'none'}")
        await anyio.sleep(max(0.0, interval - (anyio.current_time() - start)))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), backend="trio")
