"""What the pool hands back: one VM's result, and the counters of a pool's life."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stats:
    """Counters the dispatcher, CLI and bench read. Times are seconds."""

    boots: int = 0
    boot_seconds: list[float] = field(default_factory=list)
    attaches: int = 0
    detaches: int = 0
    jobs: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retirements: Counter[str] = field(default_factory=Counter)
    job_phases: list[dict[str, float]] = field(default_factory=list)


#: the timings keys a job's own time is made of, by strategy: attach to detach on a
#: pooled appliance, the inspection alone on a cold one (its boot is counted apart)
JOB_STEPS = {"pooled": ("attach", "inspect", "detach"), "cold": ("inspect",)}


def own_seconds(timings: dict[str, float], strategy: str) -> float:
    """A job's own seconds, without waiting for an appliance (``timings["wait"]``):
    what the VM cost the appliance that inspected it."""
    return sum(timings.get(k, 0.0) for k in JOB_STEPS.get(strategy, JOB_STEPS["pooled"]))


def ran_job(timings: dict[str, float]) -> bool:
    """Whether a result's VM reached an appliance (a VM refused before that, or
    verified unchanged, ran no job and has no job time)."""
    return "job" in timings or "inspect" in timings


def percentiles(values: Sequence[float]) -> dict[str, float] | None:
    """p50 and p95 (nearest rank) of some seconds; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, -(-95 * len(ordered) // 100) - 1)
    return {"p50": round(statistics.median(ordered), 3), "p95": round(ordered[rank], 3)}



@dataclass
class InspectResult:
    """What one VM's inspection produced. ``results`` maps inspector -> entry
    (``{"inspector", "version", "ok", "value" | "error", "seconds"}``)."""

    vm: str
    ok: bool
    results: dict[str, Any] = field(default_factory=dict)
    #: ``{"kind": "image" | "appliance", "message"}`` when ``ok`` is false
    error: dict[str, str] | None = None
    appliance: int | None = None
    qemu_pid: int | None = None
    strategy: str = "pooled"
    attempts: int = 0
    #: the error of the first attempt when the job was tried again (a batch that fell
    #: back to one VM at a time, an appliance that died or froze)
    first_error: dict[str, str] | None = None
    #: seconds: ``job`` (the VM's own job, :func:`own_seconds`), ``wait`` (for an
    #: appliance), the steps (attach, inspect, detach; boot when cold) and ``total``
    #: (from the job's start to its end, waiting included)
    timings: dict[str, float] = field(default_factory=dict)
    #: inside ``inspect``: seconds spent finding filesystems (discover), OS roots
    #: (probe), mounting (mount) and closing what was opened (release)
    steps: dict[str, float] = field(default_factory=dict)
    #: "possibly inconsistent" when the VM was running and read without its lock
    live: str | None = None
    #: the VM's disk files as they were before this inspection read them
    #: (``_fingerprint``); None when the safety checks were off
    fingerprint: list[dict[str, Any]] | None = None
    #: for a VM verified unchanged: when ``results`` were really inspected
    #: (they are carried forward from then); None: inspected now
    inspected_at: float | None = None

    @property
    def state(self) -> str:
        """``inspected``, ``unchanged`` (results carried forward) or ``failed``."""
        if not self.ok:
            return "failed"
        return "unchanged" if self.inspected_at is not None else "inspected"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"state": self.state}
