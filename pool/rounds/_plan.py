"""The capacity plan: how much of a fleet one round covers, from measured costs.

See pool/README.md, "Throughput model": pooled VMs(T) ≈ P·(T − B)/J, cold P·T/(B + J).
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Strategy = Literal["pooled", "cold"]
SHUTDOWN_RESERVE_S = 2.0
# Costs assumed by a store with no history: TCG, 2 cores, os+filesystems, batches
# of two; job = the mean per-VM job of two fresh 300 s rounds over the 1,000-VM
# demo fleet (0.88 and 0.91 s, 2026-12-03, bench/README.md "Budgeted rounds over
# 1,000 VMs"). Every round then replaces them.
DEFAULT_COSTS = {"boot": 18.0, "job": 0.9, "unchanged": 0.002}
#: A logical volume as the VM names it (``/dev/VG/LV``, ``/dev/mapper/VG-LV``).
_LV = re.compile(r"/dev/(?!disk/)[^/]+/[^/]+")


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
    #: VMs verified unchanged before dispatch (in ``vms`` and ``predicted``)
    unchanged: int = 0
    #: how many of the VMs to inspect had a measured cost for their kind
    by_kind: int = 0
    #: the pool was already booted (kept warm from an earlier round)
    warm: bool = False

    @property
    def fits(self) -> bool:
        return self.predicted >= self.vms

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"fits": self.fits}


def vm_kind(results: Mapping[str, Any], disks: int) -> str:
    """A VM's kind for the plan, from its inspector entries: distro, LVM or not,
    disk count (``debian/plain/1d``); ``?`` where the inspectors did not say."""
    os_value = (results.get("os") or {}).get("value") or {}
    distro = os_value.get("distro") or os_value.get("type") or "?"
    filesystems = (results.get("filesystems") or {}).get("value")
    if isinstance(filesystems, list):
        devices = [str(f.get("device", "")) for f in filesystems if isinstance(f, dict)]
        lvm = "lvm" if any(_LV.fullmatch(d) for d in devices) else "plain"
    else:
        lvm = "?"
    return f"{distro}/{lvm}/{disks}d"


def plan_round(vms: int, budget: float, pool_size: int, costs: Mapping[str, float],
               strategy: Strategy = "pooled", groups: Sequence[str] | None = None, *,
               kinds: Sequence[str | None] | None = None, unchanged: int = 0,
               warm: bool = False) -> Plan:
    """VMs(T) ≈ P·(T − B)/J pooled, P·T/(B + J) cold (J: per-VM job time of one appliance).

    ``vms`` are the VMs to inspect. ``groups`` are their trust groups in dispatch
    order: pooled, each change of group retires and reboots the appliances that
    move over, min(P, group size) boots of appliance time that no VM gets.
    ``kinds`` (same order; ``vm_kind`` of each VM's last result, None if
    unknown) price each VM at its kind's measured job time (``job-pooled:KIND``)
    where there is one, else at the mean. ``unchanged`` VMs were verified on the
    host before dispatch at the measured ``unchanged`` cost each; they count as
    covered. A ``warm`` pool is booted already: no boot at the round's start.
    """
    boot = costs.get("boot", DEFAULT_COSTS["boot"])
    job_key = f"job-{strategy}" if f"job-{strategy}" in costs else "job"
    mean_job = costs.get(job_key, DEFAULT_COSTS["job"])
    priced = [costs.get(f"job-{strategy}:{k}") if k else None for k in (kinds or [None] * vms)]
    jobs = [mean_job if c is None else c for c in priced]
    job = sum(jobs) / len(jobs) if jobs else mean_job
    usable = max(0.0, budget - SHUTDOWN_RESERVE_S
                 - unchanged * costs.get("unchanged", DEFAULT_COSTS["unchanged"]))
    runs = _runs(groups) if groups and strategy == "pooled" else [vms]
    if strategy == "cold":
        predicted = min(vms, pool_size * math.floor(usable / (boot + job)))  # whole VMs
        needed = math.ceil(vms * (boot + job) / usable) if usable else 1
        switched = 0
    else:
        needed = _needed_pool(runs, jobs, usable, boot, warm)
        predicted, switched = _affinity_fit(list(groups or [""] * vms)[:len(jobs)], jobs,
                                            usable, pool_size, boot, warm)
    return Plan(vms + unchanged, budget, pool_size, boot, job, predicted + unchanged,
                max(1, needed), measured="boot" in costs and job_key in costs,
                group_switches=switched, unchanged=unchanged,
                by_kind=sum(c is not None for c in priced), warm=warm)


def _needed_pool(runs: list[int], jobs: list[float], usable: float, boot: float,
                 warm: bool = False) -> int:
    """Appliances full coverage needs when VM i costs ``jobs[i]`` and every change
    of trust group after the first run costs min(P, run length) boots (an upper
    bound: with affinity, an appliance that keeps its group pays none); a warm
    pool pays no boot at the start."""
    def switches(p: int) -> float:
        return sum(min(p, size) for size in runs[1:]) * boot

    start = 0.0 if warm else boot
    if usable <= start:
        return 1
    # switches(p) grows with p up to the longest run, then stays: search that far
    work = sum(jobs)
    least = max(1, math.ceil(work / (usable - start)))
    longest = max(runs, default=1)
    return next((p for p in range(least, max(least, longest) + 1)
                 if p * (usable - start) >= work + switches(p)),
                math.ceil((work + switches(longest)) / (usable - start)))


def _affinity_fit(groups: list[str], jobs: list[float], usable: float, pool_size: int,
                  boot: float, warm: bool = False) -> tuple[int, int]:
    """(VMs covered, trust-group switches) when the round dispatches as
    ``pool/rounds/_dispatch.py`` does: each appliance keeps its trust group, and one
    without a group (or whose group is done) takes the group fewest appliances
    serve, paying a boot if it served another; no switch is started that
    cannot finish a job in the time left. VM i costs ``jobs[i]``."""
    queues: dict[str, deque[float]] = {}
    for group, cost in zip(groups, jobs, strict=True):
        queues.setdefault(group, deque()).append(cost)
    order = {g: i for i, g in enumerate(queues)}
    serving: Counter[str] = Counter()
    start = 0.0 if warm else boot
    free = [(start, i, "") for i in range(pool_size)]  # (time free, appliance, its group)
    heapq.heapify(free)
    covered = switches = 0
    while free:
        t, app, group = heapq.heappop(free)
        if not queues.get(group):
            if group:
                serving[group] -= 1
            left = [g for g, q in queues.items() if q]
            if not left:
                continue
            new = min(left, key=lambda g: (serving[g], order[g]))
            if group:
                if t + boot + queues[new][0] > usable:
                    continue
                t, switches = t + boot, switches + 1
            group = new
            serving[group] += 1
        if t + queues[group][0] > usable:
            continue  # this appliance's next job does not fit: it is done
        t += queues[group].popleft()
        covered += 1
        heapq.heappush(free, (t, app, group))
    return covered, switches


def _runs(groups: Sequence[str]) -> list[int]:
    """Lengths of the runs of equal consecutive trust groups."""
    return [len(list(run)) for _, run in itertools.groupby(groups)]
