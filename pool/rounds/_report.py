"""What a round is told (:class:`RoundOptions`) and what it reports
(:class:`RoundReport`), whatever its target: the local pool or hosts over NATS."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guestpool.fleet._safety import SafetyPolicy
from guestpool.fleet._sources import Source, safety_policy
from guestpool.store._results import InspectResult, own_seconds, percentiles, ran_job

from ._plan import Plan, Strategy
from ._pool import EventHook, InspectorChoice, Pool
from ._unchanged import DEFAULT_MAX_AGE_S

#: two VMs of one trust group per appliance at once: 8-11% more VMs per second
#: under TCG since hot-plugs no longer re-probe every disk (bench/README.md)
DEFAULT_BATCH = 2


@dataclass(frozen=True)
class RoundOptions:
    """Everything a round can be told, in one value: the CLI's scan and monitor,
    the service and library callers build one of these and nothing else."""

    #: seconds the round may take, pool start included
    budget: float = 300.0
    #: inspectors to run (None: ``os`` and ``filesystems``)
    inspectors: Sequence[InspectorChoice] | None = None
    #: appliances (None: from cores and memory)
    pool_size: int | None = None
    strategy: Strategy = "pooled"
    #: "kvm", "tcg", or None to probe (cached)
    accel: str | None = None
    #: VMs attached to one appliance at once (compatible VMs only)
    batch: int = DEFAULT_BATCH
    #: accept raw-declared images that carry another format's header
    allow_format_mismatch: bool = False
    #: folders a source's disks may also be in (beyond its own)
    allow_paths: tuple[str, ...] = ()
    #: OSV folder: with a store, the covered VMs are matched at the round's end
    #: and their findings kept as history (``_findings``)
    osv: str | None = None
    #: with a store, verify VMs unchanged since their last good inspection and
    #: carry their results forward instead of inspecting them (``_unchanged``)
    skip_unchanged: bool = True
    #: seconds after which a VM is inspected again even if its disks did not change
    max_age: float = DEFAULT_MAX_AGE_S

    def safety(self, source: Source) -> SafetyPolicy:
        """The safety policy for ``source`` (after ``source.load()``) with these options."""
        return safety_policy(source, self.allow_format_mismatch, self.allow_paths)

    def pool(self, safety: SafetyPolicy | None, on_event: EventHook | None = None) -> Pool:
        """The pool these options describe (not yet entered)."""
        return Pool(self.pool_size, strategy=self.strategy, accel=self.accel,
                    on_event=on_event, safety=safety)


@dataclass
class RoundReport:
    budget: float
    elapsed: float = 0.0
    pool_size: int = 0
    strategy: str = "pooled"
    accel: str = ""
    round_id: int | None = None
    plan: Plan | None = None
    results: list[InspectResult] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)
    boot_seconds: list[float] = field(default_factory=list)
    #: boots that finished during this round
    boots: int = 0
    #: boots over the pool's life so far: a warm pool's replacements that
    #: finished between rounds show here, not in any round's ``boots``
    pool_boots: int = 0
    #: appliances retired during the round, by reason (trust-group-switch, error, ...)
    retirements: dict[str, int] = field(default_factory=dict)
    drift: list[dict[str, Any]] = field(default_factory=list)
    #: VMs that appeared, disappeared or changed disks since the last round (with a store)
    fleet_changes: dict[str, list[str]] = field(default_factory=dict)
    stopped: bool = False
    #: open findings by severity after the round (with ``options.osv`` and a store)
    findings: dict[str, int] | None = None
    #: why the covered VMs could not be matched (an OSV folder that went bad)
    findings_error: str | None = None
    #: why VMs were inspected rather than verified unchanged: never (no good
    #: inspection on record), inspectors (other inspectors or policy), max-age, changed
    reinspect: dict[str, int] = field(default_factory=dict)
    #: VMs whose disk files changed since their last good inspection, and how
    changed_disks: dict[str, str] = field(default_factory=dict)
    #: seconds of the round's phases: prepare (read the fleet, verify unchanged VMs,
    #: plan, store the carried results), dispatch (the jobs), finish (close, costs,
    #: findings): the round's own overhead is prepare + finish
    phases: dict[str, float] = field(default_factory=dict)
    #: results the store did not take by the round's end (locked or full), kept in
    #: ``journal`` and stored at the next start; ``store_error``: what the store did
    #: during the round (locked by another process for a while, full), if anything
    journaled: int = 0
    journal: str | None = None
    store_error: str | None = None

    @property
    def covered(self) -> list[InspectResult]:
        """Inspected this round or verified unchanged."""
        return [r for r in self.results if r.ok]

    @property
    def inspected(self) -> list[InspectResult]:
        return [r for r in self.results if r.state == "inspected"]

    @property
    def unchanged(self) -> list[InspectResult]:
        return [r for r in self.results if r.state == "unchanged"]

    @property
    def failed(self) -> list[InspectResult]:
        return [r for r in self.results if not r.ok]

    @property
    def overrun(self) -> float:
        return max(0.0, self.elapsed - self.budget)

    def summary(self) -> dict[str, Any]:
        return {
            "round": self.round_id, "budget_s": self.budget, "elapsed_s": round(self.elapsed, 2),
            "overrun_s": round(self.overrun, 2), "pool": self.pool_size,
            "strategy": self.strategy, "accel": self.accel, "boots": self.boots,
            "boot_mean_s": round(sum(self.boot_seconds) / len(self.boot_seconds), 2)
            if self.boot_seconds else None,
            "pool_boots": self.pool_boots,
            "predicted": self.plan.predicted if self.plan else None,
            "covered": len(self.covered), "inspected": len(self.inspected),
            "unchanged": len(self.unchanged), "failed": len(self.failed),
            "not_reached": len(self.not_reached), "drift_changes": len(self.drift),
            "stopped_early": self.stopped, "retirements": dict(sorted(self.retirements.items())),
            **{f"vms_{k}": len(v) for k, v in self.fleet_changes.items()},
            "phases_s": {k: round(v, 3) for k, v in self.phases.items()},
            **({"journaled": self.journaled, "journal": self.journal}
               if self.journaled else {}),
            **({"store_error": self.store_error} if self.store_error else {}),
            **({"verify_s": {"total": round(sum(verify), 3), **(percentiles(verify) or {})}}
               if (verify := [r.timings.get("verify", 0.0) for r in self.unchanged]) else {}),
            "job_steps_median_s": job_steps(self.covered),
            "job_s": percentiles([own_seconds(r.timings, self.strategy)
                                  for r in self.results if ran_job(r.timings)]),
            "wait_s": percentiles([r.timings.get("wait", 0.0)
                                   for r in self.results if ran_job(r.timings)]),
            **({"findings": self.findings} if self.findings is not None else {}),
            **({"findings_error": self.findings_error} if self.findings_error else {}),
            **({"reinspect": dict(sorted(self.reinspect.items()))} if self.reinspect else {}),
            **({"oldest_carried_s": round(time.time() - min(
                r.inspected_at or 0.0 for r in self.unchanged), 1)} if self.unchanged else {}),
        }


def job_steps(results: Sequence[InspectResult]) -> dict[str, float]:
    """Median seconds of each step of a pooled job: attach, then inside the
    inspection discover, probe, mount, the inspectors' own reading, release,
    then detach (where every 100 ms of a job goes)."""
    rows = []
    for r in results:
        if "attach" not in r.timings:
            continue
        inner = sum(r.steps.values())
        rows.append({"attach": r.timings["attach"], **r.steps,
                     "inspectors": max(0.0, r.timings.get("inspect", 0.0) - inner),
                     "detach": r.timings.get("detach", 0.0),
                     "job": own_seconds(r.timings, "pooled")})
    order = ("attach", "discover", "probe", "mount", "inspectors", "release", "detach", "job")
    return {k: round(statistics.median(row.get(k, 0.0) for row in rows), 3)
            for k in order} if rows else {}


def job_seconds(r: InspectResult, strategy: str) -> float:
    """What one VM's job cost its appliance (a cold job: its inspection only)."""
    return own_seconds(r.timings, strategy)
