"""Every kernel initcall and supermin insmod of one boot, as its own activity.

With ``initcall_debug`` the kernel prints ``calling  fn+0x0/0x.. [module] @ pid``
and ``initcall fn+0x0/0x.. [module] returned R after N usecs``; supermin's
mini-initrd prints ``supermin: internal insmod NAME.ko`` before loading each
module. An initcall's duration is the kernel's own figure (the console is
buffered, host arrival times are not); its start is its printk time moved to
the host clock. An insmod lasts until supermin's next line.
Levels, for pictures and tables: 0 boot phase; 1 /init step, insmod or
built-in initcall; 2 a module's initcall (it runs inside its insmod).
"""

from __future__ import annotations

import itertools
import re
import statistics
from dataclasses import dataclass

from .boot import INIT_STEPS, Pass, _kernel_start

Event = tuple[float, str, str]

_FN = r"(?P<fn>[\w.$]+)(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?(?:\s+\[(?P<mod>[\w-]+)\])?"
_CALLING = re.compile(r"^\[\s*(?P<ts>\d+\.\d+)\]\s+calling\s+" + _FN + r"\s+@\s+\d+")
_RETURNED = re.compile(r"^\[\s*(?P<ts>\d+\.\d+)\]\s+initcall\s+" + _FN
                       + r"\s+returned\s+-?\d+\s+after\s+(?P<us>\d+)\s+usecs")
_INSMOD = re.compile(r"^supermin: internal insmod (?P<path>\S+)")
_SUPERMIN = re.compile(r"^supermin: ")
_KO = re.compile(r"\.ko(\.(xz|gz|zst))?$")


@dataclass(frozen=True)
class Activity:
    """One timed thing in one boot: seconds from launch, on the host clock."""

    name: str
    kind: str  # phase, init step, insmod, initcall
    level: int
    start: float
    duration: float


def initcalls(events: list[Event], kernel_start: float | None = None) -> list[Activity]:
    """One activity per completed initcall (``calling`` … ``returned``)."""
    if kernel_start is None:
        kernel_start = _kernel_start(events)
    if kernel_start is None:
        return []
    began: dict[str, float] = {}
    out = []
    for _t, kind, line in events:
        if kind != "appliance":
            continue
        if m := _CALLING.match(line):
            began[_initcall_name(m)] = float(m["ts"])
        elif m := _RETURNED.match(line):
            name = _initcall_name(m)
            dur = int(m["us"]) / 1e6
            start = began.pop(name, float(m["ts"]) - dur)
            out.append(Activity(name, "initcall", 2 if m["mod"] else 1,
                                kernel_start + start, dur))
    return out


def _initcall_name(m: re.Match[str]) -> str:
    return f"initcall {m['fn']}" + (f" [{m['mod']}]" if m["mod"] else "")


def insmods(events: list[Event]) -> list[Activity]:
    """One activity per supermin insmod, until supermin's next line."""
    lines = [(t, line) for t, kind, line in events
             if kind == "appliance" and _SUPERMIN.match(line)]
    out = []
    for (t, line), (t_next, _) in itertools.pairwise(lines):
        if m := _INSMOD.match(line):
            module = _KO.sub("", m["path"].rsplit("/", 1)[-1])
            out.append(Activity(f"insmod {module}", "insmod", 1, t, max(0.0, t_next - t)))
    return out


def of_pass(p: Pass) -> list[Activity]:
    """Phases, /init steps, insmods and initcalls of one pass, in start order."""
    acts = [Activity(name, "phase", 0, start, dur) for name, (start, dur) in p.phases.items()]
    starts = _init_step_starts(p.events)
    acts += [Activity(f"/init: {name}", "init step", 1, starts.get(name, 0.0), dur)
             for name, dur in p.init_steps.items()]
    acts += insmods(p.events) + initcalls(p.events)
    return sorted(_unique(acts), key=lambda a: a.start)


def _init_step_starts(events: list[Event]) -> dict[str, float]:
    """When each /init step began (boot.py keeps only durations)."""
    starts = {}
    for name, start_rx, _end_rx in INIT_STEPS:
        rx = re.compile(start_rx)
        t = next((t for t, _kind, line in events if rx.search(line)), None)
        if t is not None:
            starts[name] = t
    return starts


def _unique(acts: list[Activity]) -> list[Activity]:
    """A name seen twice in one boot gets ``#2``, ``#3``… so passes line up."""
    seen: dict[str, int] = {}
    out = []
    for a in acts:
        n = seen[a.name] = seen.get(a.name, 0) + 1
        out.append(a if n == 1 else Activity(f"{a.name} #{n}", a.kind, a.level, a.start,
                                             a.duration))
    return out


@dataclass(frozen=True)
class ActivityStats:
    """One activity over the passes that had it."""

    name: str
    kind: str
    level: int
    start: float
    mean: float
    sd: float
    passes: int


def summarise(passes: list[Pass]) -> list[ActivityStats]:
    """Mean start, mean duration and sd of every activity, longest first."""
    by_name: dict[str, list[Activity]] = {}
    for p in passes:
        for a in of_pass(p):
            by_name.setdefault(a.name, []).append(a)
    stats = []
    for name, acts in by_name.items():
        durs = [a.duration for a in acts]
        stats.append(ActivityStats(name, acts[0].kind, acts[0].level,
                                   statistics.fmean(a.start for a in acts),
                                   statistics.fmean(durs),
                                   statistics.stdev(durs) if len(durs) > 1 else 0.0, len(acts)))
    return sorted(stats, key=lambda s: -s.mean)


def longest(stats: list[ActivityStats], top: int = 20) -> list[ActivityStats]:
    """The ``top`` longest activities over all levels (as upstream lists them)."""
    return sorted(stats, key=lambda s: -s.mean)[:top]
