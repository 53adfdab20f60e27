"""The capacity plan: how much of a fleet one round covers, from measured costs.

See DESIGN.md, "Throughput model": pooled VMs(T) ≈ P·(T − B)/J, cold P·T/(B + J).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Strategy = Literal["pooled", "cold"]
SHUTDOWN_RESERVE_S = 2.0
# Costs assumed by a store with no history: TCG, 2 cores, os+filesystems, measured
# 2026-11-22 (bench/README.md). Every round then replaces them with its own.
DEFAULT_COSTS = {"boot": 18.0, "job": 1.6}


@dataclass
class Plan:
    """How much of the fleet a round should cover, from measured costs."""

    vms: int
    budget: float
    pool_size: int
    boot: float
    job: float
    predicted: int
    needed_pool: int
    #: whether boot and job costs come from this store's past rounds, not defaults
    measured: bool = False
    #: changes of trust group along the dispatch order (each costs appliance boots)
    group_switches: int = 0

    @property
    def fits(self) -> bool:
        return self.predicted >= self.vms

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"fits": self.fits}


def plan_round(vms: int, budget: float, pool_size: int, costs: Mapping[str, float],
               strategy: Strategy = "pooled", groups: Sequence[str] | None = None) -> Plan:
    """VMs(T) ≈ P·(T − B)/J pooled, P·T/(B + J) cold (J: per-VM job time of one appliance).

    ``groups`` are the VMs' trust groups in dispatch order: pooled, each change
    of group retires and reboots the appliances that move over, min(P, group
    size) boots of appliance time that no VM gets.
    """
    boot = costs.get("boot", DEFAULT_COSTS["boot"])
    job_key = f"job-{strategy}" if f"job-{strategy}" in costs else "job"
    job = costs.get(job_key, DEFAULT_COSTS["job"])
    usable = max(0.0, budget - SHUTDOWN_RESERVE_S)
    runs = _runs(groups) if groups and strategy == "pooled" else [vms]
    if strategy == "cold":
        predicted = min(vms, pool_size * math.floor(usable / (boot + job)))  # whole VMs
        needed = math.ceil(vms * (boot + job) / usable) if usable else 1
    else:
        predicted, needed = _pooled_fit(runs, usable, pool_size, boot, job)
    return Plan(vms, budget, pool_size, boot, job, predicted, max(1, needed),
                measured="boot" in costs and job_key in costs, group_switches=len(runs) - 1)


def _pooled_fit(runs: list[int], usable: float, pool_size: int, boot: float, job: float
                ) -> tuple[int, int]:
    """(VMs this pool covers, appliances full coverage needs) when every change of
    trust group after the first run costs min(P, run length) boots."""
    def switches(p: int) -> float:
        return sum(min(p, size) for size in runs[1:]) * boot

    predicted, spent, capacity = 0, 0.0, pool_size * max(0.0, usable - boot)
    for i, size in enumerate(runs):
        spent += min(pool_size, size) * boot if i else 0.0
        take = min(size, max(0, int((capacity - spent) // job)))
        predicted, spent = predicted + take, spent + take * job
        if take < size:
            break
    if usable <= boot:
        return predicted, 1
    # switches(p) grows with p up to the longest run, then stays: search that far
    vms = sum(runs)
    least = max(1, math.ceil(vms * job / (usable - boot)))
    longest = max(runs, default=1)
    needed = next((p for p in range(least, max(least, longest) + 1)
                   if p * (usable - boot) >= vms * job + switches(p)),
                  math.ceil((vms * job + switches(longest)) / (usable - boot)))
    return predicted, needed


def _runs(groups: Sequence[str]) -> list[int]:
    """Lengths of the runs of equal consecutive trust groups."""
    return [len(list(run)) for _, run in itertools.groupby(groups)]
