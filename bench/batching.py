"""Does attaching several VMs to one appliance at once lower the per-VM cost?

One appliance, booted once; the same VMs inspected with each batch size in
turn; per-VM cost = wall time of the jobs / VMs (boot excluded).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence

import anyio

from guestpool import VM, Pool
from guestpool.rounds._dispatch import take_batch


async def measure_batching(vms: Sequence[VM], sizes: Sequence[int],
                           inspectors: Sequence[str] | None) -> list[dict[str, float]]:
    """One row per entry of ``sizes``, in order (repeat sizes, e.g. 2,1,4,1,2, to see
    the run-to-run spread)."""
    fleet = [dataclasses.replace(vm, trust_group="bench") for vm in vms]
    out: list[dict[str, float]] = []
    async with Pool(1, max_jobs=10**6) as pool:
        for size in sizes:
            queue = deque(fleet)
            start = anyio.current_time()
            done = batches = 0
            while queue:
                chunk = take_batch(queue, size)
                results = await pool.inspect_batch(chunk, inspectors)
                done += sum(r.ok for r in results)
                batches += 1
            elapsed = anyio.current_time() - start
            out.append({"size": size, "vms": done, "batches": batches, "seconds": elapsed,
                        "per_vm": elapsed / max(done, 1)})
    return out
