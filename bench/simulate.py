"""Simulation: the real pool and dispatcher, with appliances that only sleep.

SIMULATION — no appliance boots. Sleeps are drawn from measured cost
distributions and run on trio's virtual clock (MockClock with autojump), so
"10,000 VMs, 32 appliances, 1.2 s boot" takes seconds. Everything else —
scheduling, retirements, budget cut-off — is the production code path.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import anyio

from guestpool.appliance import Appliance
from guestpool.dispatch import RoundReport, run_round
from guestpool.fleet import VM, Disk
from guestpool.pool import Pool, Strategy

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

    costs: Costs
    rng: random.Random

    async def call(self, op: str, timeout: float, **args: Any) -> Any:
        if op == "boot":
            d = self.costs.draw(self.rng, "boot")
            await anyio.sleep(d)
            return {"qemu_pid": 0, "seconds": d}
        if op == "cold":
            d = self.costs.draw(self.rng, "boot")
            w = self.costs.draw(self.rng, "inspect")
            await anyio.sleep(d + w)
            return {"results": {}, "boot_seconds": d, "inspect_seconds": w, "qemu_pid": 0}
        if op in ("attach", "detach", "inspect"):
            await anyio.sleep(self.costs.draw(self.rng, op))
            return {}
        return {}

    @property
    def pid(self) -> int:
        return 0

    async def kill(self) -> None:
        self.state = "retired"

    async def close(self, timeout: float = 5.0) -> None:
        self.state = "retired"


def simulate(vms: int, pool_size: int, budget: float, costs: Costs,
             strategy: Strategy = "pooled", seed: int = 1, groups: int = 1) -> RoundReport:
    """One simulated round of ``vms`` VMs in ``groups`` equal trust groups; returns
    the same report a real round does."""
    rng = random.Random(seed)
    fleet = [VM(f"sim{i:06d}", (Disk(f"/simulated/{i}.raw", "raw"),),
                trust_group=f"group-{i * groups // vms}") for i in range(vms)]

    async def spawn() -> Appliance:
        app = SimAppliance(proc=None)  # type: ignore[arg-type]
        app.costs, app.rng = costs, rng
        return app

    async def main() -> RoundReport:
        pool = Pool(pool_size, strategy=strategy, accel="tcg", max_jobs=10**9, safety=None)
        pool._spawn = spawn
        return await run_round(fleet, budget=budget, pool=pool, inspectors=["hostname"])

    import trio.testing

    clock = trio.testing.MockClock(autojump_threshold=0)
    report: RoundReport = anyio.run(main, backend="trio", backend_options={"clock": clock})
    return report
