"""A fleet monitor in a dozen lines of library code: a round every INTERVAL
seconds, results and drift kept in a store, drift printed per round. The pool
stays booted between rounds, and VMs whose disks did not change are verified
unchanged without an appliance.

    .venv/bin/guestpool fleet demo /tmp/demo --count 12
    .venv/bin/python examples/monitor_fleet.py /tmp/demo/fleet.json 120 3
"""

from __future__ import annotations

import sys
from collections import Counter

import anyio

from guestpool import RoundOptions, SafetyPolicy, Store, open_source, run_periodic, run_round


async def main(fleet: str, interval: float, rounds: int) -> None:
    source = open_source(fleet)
    store = Store("/tmp/guestpool-example.db")
    options = RoundOptions(budget=interval, inspectors=["os", "packages", "users"])
    pool = options.pool(SafetyPolicy())  # each round gives it the source's policy

    async def one_round(n: int) -> None:
        report = await run_round(source, options, store=store, pool=pool)
        kinds = Counter(c["kind"] for c in report.drift)
        print(f"round {n}: {len(report.inspected)} inspected, {len(report.unchanged)} "
              f"unchanged, {len(report.failed)} failed, {len(report.not_reached)} not "
              f"reached, {report.boots} boots; drift: {dict(kinds) or 'none'}")

    async with pool.warm():
        await run_periodic(interval, one_round, rounds=rounds)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), backend="trio")
