"""Pools whose appliances only pretend (the public seam ``spawn``), counting boots."""

from __future__ import annotations

import random
from typing import Any

from guestpool import Appliance, Pool
from guestpool.appliance import _protocol as msg
from guestpool.bench.simulate import Costs, SimAppliance
from guestpool.fleet._safety import SafetyPolicy

FAST = Costs(boot=(0.05, 0.0), attach=(0.005, 0.0), inspect=(0.01, 0.0), detach=(0.005, 0.0))


class EntryAppliance(SimAppliance):
    """Answers every inspection with one good ``hostname`` entry (or a failed one
    for VMs named in ``failing``)."""

    def __init__(self, costs: Costs, failing: frozenset[str] = frozenset()) -> None:
        super().__init__(costs, random.Random(1))
        self.failing = failing

    async def request(self, request: msg.Request, timeout: float) -> msg.Reply:
        reply = await super().request(request, timeout)
        if isinstance(request, msg.Inspect):
            ok = request.vm not in self.failing
            return msg.Inspected({"hostname": {
                "inspector": "hostname", "version": "1", "ok": ok,
                "value": request.vm if ok else None, "error": None if ok else "failed",
                "seconds": 0.01}})
        return reply


class CountingSpawn:
    """A ``spawn`` that counts the appliances it makes; ``refuse`` makes any use fail."""

    def __init__(self, costs: Costs = FAST, refuse: bool = False,
                 failing: frozenset[str] = frozenset()) -> None:
        self.costs, self.refuse, self.failing = costs, refuse, failing
        self.spawned = 0

    async def __call__(self) -> Appliance:
        if self.refuse:
            raise AssertionError("an appliance was spawned, but none should be needed")
        self.spawned += 1
        return EntryAppliance(self.costs, self.failing)


FOLDER_RULES = SafetyPolicy()


def fake_pool(spawn: CountingSpawn, size: int = 1, safety: SafetyPolicy | None = FOLDER_RULES,
              **kwargs: Any) -> Pool:
    """A real Pool (real safety checks by default) with pretend appliances."""
    return Pool(size, accel="tcg", safety=safety, spawn=spawn, **kwargs)
