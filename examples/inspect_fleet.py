"""Inspect a fleet with the library API, from trio or asyncio.

    .venv/bin/guestpool fleet demo /tmp/demo --count 6
    .venv/bin/python examples/inspect_fleet.py /tmp/demo/fleet.json            # trio
    .venv/bin/python examples/inspect_fleet.py /tmp/demo/fleet.json asyncio    # asyncio
"""

from __future__ import annotations

import sys

import anyio

from guestpool import Pool, load_manifest


async def main(manifest: str) -> None:
    fleet = load_manifest(manifest)
    async with Pool(size=2) as pool, anyio.create_task_group() as tg:

        async def one(vm_index: int) -> None:
            vm = fleet.vms[vm_index]
            result = await pool.inspect(vm, ["os"])
            os_info = result.results.get("os", {}).get("value") if result.ok else result.error
            print(f"{vm.name}: {os_info}")

        for i in range(len(fleet.vms)):
            tg.start_soon(one, i)


if __name__ == "__main__":
    backend = sys.argv[2] if len(sys.argv) > 2 else "trio"
    anyio.run(main, sys.argv[1], backend=backend)
