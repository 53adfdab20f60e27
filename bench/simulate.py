"""Simulation: the real pool and dispatcher, with appliances that only sleep.

SIMULATION — no appliance boots. Sleeps are drawn from measured cost
distributions and run on trio's virtual clock (MockClock with autojump), so
"10,000 VMs, 32 appliances, 1.2 s boot" takes seconds. Everything else —
scheduling, retirements, budget cut-off — is the production code path.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

import anyio

from guestpool import VM, Appliance, Disk, Pool, RoundOptions, RoundReport, run_round
from guestpool.appliance import _protocol as msg
from guestpool.rounds._plan import Strategy
from guestpool.rounds._report import DEFAULT_BATCH

LABEL = "SIMULATION"


@dataclass
class Costs:
    """Mean and standard deviation (seconds) of each appliance operation."""

    boot: tuple[float, float] = (20.0, 2.0)
    attach: tuple[float, float] = (0.3, 0.05)
    inspect: tuple[float, float] = (3.0, 1.0)
    detach: tuple[float, float] = (0.4, 0.1)

    def draw(self, rng: random.Random, name: str) -> float:
        mean, sd = getattr(self, name)
        return max(0.01, rng.gauss(mean, sd))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(getattr(self, k)) for k in ("boot", "attach", "inspect", "detach")}


class SimAppliance(Appliance):
    """An appliance that answers after a drawn delay; no process, no qemu."""

    def __init__(self, costs: Costs, rng: random.Random) -> None:
        super().__init__()
        self.costs, self.rng = costs, rng

    async def request(self, request: msg.Request, timeout: float) -> msg.Reply:
        draw = functools.partial(self.costs.draw, self.rng)
        match request:
            case msg.Boot():
                d = draw("boot")
                await anyio.sleep(d)
                return msg.Booted(qemu_pid=0, seconds=d)
            case msg.Cold():
                d, w = draw("boot"), draw("inspect")
                await anyio.sleep(d + w)
                return msg.ColdDone(results={}, boot_seconds=d, inspect_seconds=w, qemu_pid=0)
            case msg.Attach():  # costs are per VM (a batch's share), as rounds measure them
                await anyio.sleep(sum(draw("attach") for _ in request.disks))
                return msg.Attached([f"d{i}" for i in range(len(request.disks))])
            case msg.Inspect():
                await anyio.sleep(draw("inspect"))
                return msg.Inspected({})
            case msg.Detach():
                await anyio.sleep(sum(draw("detach") for _ in request.labels))
                return msg.Detached(0)
            case msg.Ping():
                return msg.Pong(qemu_pid=0, rss_kb=0, alive=True, attached=0)
        return msg.Closed()

    async def kill(self) -> None:
        self.state = "retired"


def simulate(vms: int, pool_size: int, budget: float, costs: Costs,
             strategy: Strategy = "pooled", seed: int = 1, groups: int = 1,
             batch: int = DEFAULT_BATCH) -> RoundReport:
    """One simulated round of ``vms`` VMs in ``groups`` equal trust groups, in
    batches of ``batch`` VMs per appliance job; returns the same report a real
    round does. Attach and detach costs are per disk: a batch's share, as a real
    round's results record them."""
    rng = random.Random(seed)
    fleet = [VM(f"sim{i:06d}", (Disk(f"/simulated/{i}.raw", "raw"),),
                trust_group=f"group-{i * groups // vms}") for i in range(vms)]

    async def spawn() -> Appliance:
        return SimAppliance(costs, rng)

    async def main() -> RoundReport:
        pool = Pool(pool_size, strategy=strategy, accel="tcg", max_jobs=10**9, safety=None,
                    spawn=spawn)
        return await run_round(fleet, RoundOptions(budget=budget, inspectors=["hostname"],
                                                            batch=batch),
                               pool=pool)

    import trio.testing

    clock = trio.testing.MockClock(autojump_threshold=0)
    report: RoundReport = anyio.run(main, backend="trio", backend_options={"clock": clock})
    return report
