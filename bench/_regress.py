"""Is this run slower than a saved baseline? Phase by phase, with intervals.

A phase regresses when the 95% bootstrap interval of (new − base) lies wholly
above zero *and* the mean delta exceeds both ``fail_over`` (a fraction of the
base mean) and ``min_delta`` seconds. Both conditions matter: with a handful
of passes the interval alone flags millisecond shifts in tiny phases, and a
threshold alone flags noise in big ones.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from guestpool import GuestpoolError

from .boot import Pass, bootstrap_ci

EXIT_REGRESSION = 1  # 0: no regression; 2: an error (guestpool's usual code)


@dataclass(frozen=True)
class Delta:
    """One phase (or TOTAL) of a new run against a baseline."""

    phase: str
    base_mean: float
    new_mean: float
    delta: float
    lo: float
    hi: float
    regression: bool
    improvement: bool

    @property
    def real(self) -> bool:
        """The interval excludes zero: the change is not noise at 95%."""
        return self.lo > 0.0 or self.hi < 0.0

    @property
    def relative(self) -> float:
        return self.delta / self.base_mean if self.base_mean else 0.0


def parse_threshold(text: str) -> float:
    """``5%`` or ``0.05`` into a fraction; a clear error for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if not m:
        raise GuestpoolError(f"--fail-over takes a percentage like 5% or a fraction like "
                             f"0.05, got {text!r}")
    value = float(m[1]) / (100 if m[2] else 1)
    if not 0 <= value < 10:
        raise GuestpoolError(f"--fail-over {text!r} is out of range (0% to 1000%)")
    return value


def compare_runs(base: list[Pass], new: list[Pass], fail_over: float = 0.05,
                 min_delta: float = 0.05) -> list[Delta]:
    """Every phase both runs have, plus TOTAL, as a :class:`Delta`."""
    if len(base) < 2 or len(new) < 2:
        raise GuestpoolError(f"comparing needs at least 2 passes on each side (baseline "
                             f"{len(base)}, this run {len(new)}); use --passes 2 or more")
    names = [n for n in dict.fromkeys(n for p in base for n in p.phases)
             if any(n in p.phases for p in new)]
    series = [(n, [p.phases[n][1] for p in base if n in p.phases],
               [p.phases[n][1] for p in new if n in p.phases]) for n in names]
    series.append(("TOTAL", [p.total for p in base], [p.total for p in new]))
    out = []
    for name, a, b in series:
        if len(a) < 2 or len(b) < 2:
            continue
        delta, lo, hi = bootstrap_ci(a, b)
        base_mean, new_mean = statistics.fmean(a), statistics.fmean(b)
        big = abs(delta) > max(fail_over * base_mean, min_delta)
        out.append(Delta(name, base_mean, new_mean, delta, lo, hi,
                         regression=lo > 0.0 and delta > 0 and big,
                         improvement=hi < 0.0 and delta < 0 and big))
    return out


def missing_phases(base: list[Pass], new: list[Pass]) -> tuple[list[str], list[str]]:
    """Phases only the baseline has, and only the new run has (a marker moved)."""
    a = list(dict.fromkeys(n for p in base for n in p.phases))
    b = list(dict.fromkeys(n for p in new for n in p.phases))
    return [n for n in a if n not in b], [n for n in b if n not in a]


def config_changes(base: dict[str, object], new: dict[str, object]) -> list[str]:
    """``key: old → new`` for every setting or host fact that differs."""
    return [f"{k}: {base.get(k, '-')} → {new.get(k, '-')}"
            for k in sorted(set(base) | set(new)) if base.get(k) != new.get(k)]


def mean_load(passes: list[Pass]) -> float | None:
    """Mean 1-minute load average at the passes' starts (None for old runs)."""
    loads = [float(line.split()[1]) for p in passes for _t, kind, line in p.events
             if kind == "mark" and line.startswith("@loadavg ")]
    return statistics.fmean(loads) if loads else None
