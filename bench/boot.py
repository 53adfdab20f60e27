"""Appliance boot, phase by phase, over several passes (after upstream's boot-analysis).

Each pass boots a real appliance with verbose console capture and every
library, appliance and trace event timestamped on the host's monotonic clock.
Events are mapped to phases by the first line that marks each phase's end;
phases are contiguous, so they sum to the measured total by construction.
The kernel's own printk times date the kernel's start (its first console line
arrives late, buffered).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from guestpool import GuestpoolError, SetupError
from guestpool.appliance._accel import resolve_accel

BOOT_ANALYSIS_APPEND = "guestfs_boot_analysis=1 ignore_loglevel initcall_debug"

# (phase, regex of the line that ends it). A phase whose marker never shows up
# is merged into the next one, so the sum still equals the total.
PHASES: list[tuple[str, str]] = [
    ("library set-up", r"begin building supermin appliance"),
    ("supermin check/build", r"finished building supermin appliance"),
    ("qemu feature detection", r"finished testing qemu features"),
    ("qemu start", r"SeaBIOS \(version"),
    ("BIOS + kernel load", r"@kernel-start"),
    ("kernel", r"Run /init as init process|supermin: .*starting up"),
    ("supermin mini-initrd", r"supermin: chroot"),
    ("/init", r"^\+ guestfsd|guestfsd --verbose"),
    ("guestfsd start", r"appliance is up"),
    ("shutdown", r"@closed"),
]
# Sub-phases of /init, from the script's xtrace: (name, start regex, end regex)
INIT_STEPS: list[tuple[str, str, str]] = [
    ("udev", r"^\+ /\S*udevd --daemon", r"^\+ udevadm settle"),
    ("udev settle", r"^\+ udevadm settle", r"^\+ shopt -s nullglob|^\+ ip addr"),
    ("mdadm", r"^\+ mdadm -As --auto=yes --no-degraded", r"^\+ mkdir -p /tmp/lvm"),
    ("lvm", r"^\+ lvm pvscan|^\+ lvm vgchange", r"^\+ mdadm -As --auto=yes --run"),
    ("ldmtool", r"^\+ ldmtool", r"^\+ test"),
]
VARIANT_KEYS = {"memsize": int, "smp": int, "accel": str, "append": str, "cachedir": str,
                "machine": str, "cpu": str, "kernel": str, "modules": str}
_PRINTK = re.compile(r"^\[\s*(\d+\.\d+)\]")


@dataclass
class Pass:
    variant: str
    events: list[tuple[float, str, str]] = field(default_factory=list)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # name -> start, dur
    init_steps: dict[str, float] = field(default_factory=dict)
    total: float = 0.0


def check_variant(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Validate a variant's settings: unknown keys and bad values are errors."""
    out = {}
    for key, value in settings.items():
        if key not in VARIANT_KEYS:
            raise GuestpoolError(f"variant {name!r}: unknown setting {key!r}; known: "
                                 f"{', '.join(VARIANT_KEYS)}")
        try:
            out[key] = VARIANT_KEYS[key](value)
        except (TypeError, ValueError):
            raise GuestpoolError(f"variant {name!r}: {key}={value!r} is not "
                                 f"{VARIANT_KEYS[key].__name__}") from None
    if out.get("accel") not in (None, "kvm", "tcg"):
        raise GuestpoolError(f"variant {name!r}: accel must be kvm or tcg")
    return out


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,key=value`` (``--compare``) into a checked variant."""
    name, _, rest = text.partition(":")
    if not rest:
        rest, name = name, name
    settings: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise GuestpoolError(f"variant {text!r}: expected key=value, got {item!r}")
        settings[key.strip()] = value.strip()
    return name, check_variant(name, settings)


class ConsoleLines:
    """Whole console lines from chunks that may end mid-line, each dated when
    its first byte arrived."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._text = ""

    def feed(self, now: float, chunk: str) -> list[tuple[float, str]]:
        lines = []
        pieces = chunk.replace("\r", "").split("\n")
        for i, piece in enumerate(pieces):
            if self._start is None:
                self._start = now
            self._text += piece
            if i < len(pieces) - 1:  # a newline ended this piece
                lines.append((self._start, self._text))
                self._start, self._text = None, ""
        return lines

    def flush(self) -> list[tuple[float, str]]:
        """The last line, if the console stopped without a newline."""
        if self._start is None or not self._text:
            return []
        line = [(self._start, self._text)]
        self._start, self._text = None, ""
        return line


def boot_once(variant: str, settings: dict[str, Any]) -> Pass:
    """Boot one appliance with full event capture, shut it down, map the phases.

    Console output arrives in chunks that may end mid-line; lines are
    reassembled so that no marker or initcall line is cut in two.
    """
    import guestfs

    p = Pass(variant)
    t0 = time.monotonic()
    console = ConsoleLines()
    # other work on the host slows a TCG boot; keep the load with the pass
    p.events.append((0.0, "mark", f"@loadavg {os.getloadavg()[0]:.2f}"))

    def on_event(ev: int, _eh: int, buf: Any, _arr: Any) -> None:
        text = buf.decode("utf-8", "replace") if isinstance(buf, bytes) else str(buf or "")
        now = time.monotonic() - t0
        kind = guestfs.event_to_string(ev)
        if kind == "appliance":
            p.events.extend((t, kind, line) for t, line in console.feed(now, text))
        else:
            p.events.extend((now, kind, line) for line in text.splitlines() or [""])

    env = _variant_env(settings)
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        g = guestfs.GuestFS(python_return_dict=True)
        g.set_backend("direct")
        if (settings.get("accel") or resolve_accel().accel) == "tcg":
            g.set_backend_settings(["force_tcg"])
        if settings.get("memsize"):
            g.set_memsize(settings["memsize"])
        if settings.get("smp"):
            g.set_smp(settings["smp"])
        if settings.get("machine"):
            g.config("-machine", settings["machine"])
        if settings.get("cpu"):
            g.config("-cpu", settings["cpu"])
        g.set_append(" ".join(filter(None, [BOOT_ANALYSIS_APPEND, settings.get("append")])))
        g.set_verbose(True)
        g.set_trace(True)
        g.set_event_callback(on_event, guestfs.EVENT_ALL)
        g.add_drive_scratch(1024 * 1024)
        try:
            g.launch()
        except RuntimeError as e:
            raise SetupError(f"appliance failed to boot (variant {variant!r}): {e}") from e
        g.shutdown()
        g.close()
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    p.events.extend((t, "appliance", line) for t, line in console.flush())
    p.events.sort(key=lambda e: e[0])
    p.events.append((time.monotonic() - t0, "mark", "@closed"))
    _map_phases(p)
    return p


def _variant_env(settings: dict[str, Any]) -> dict[str, str]:
    """Environment for libguestfs and supermin: cache folder, kernel and modules.

    supermin only rebuilds an appliance older than its inputs, and the
    kernel's path is not one of them: a variant with its own kernel gets its
    own cache folder unless it names one.
    """
    env = {}
    cachedir = settings.get("cachedir")
    if settings.get("kernel"):
        env["SUPERMIN_KERNEL"] = settings["kernel"]
        if not cachedir:
            tag = re.sub(r"[^A-Za-z0-9_.-]", "_", settings["kernel"])
            cachedir = os.path.join(tempfile.gettempdir(), f"guestpool-boot-kernel-{tag}")
    if settings.get("modules"):
        env["SUPERMIN_MODULES"] = settings["modules"]
    if cachedir:
        os.makedirs(cachedir, exist_ok=True)
        env["LIBGUESTFS_CACHEDIR"] = cachedir
    return env


def _kernel_start(events: list[tuple[float, str, str]]) -> float | None:
    """Host time at which the kernel's printk clock read zero."""
    starts = [t - float(m.group(1)) for t, kind, line in events
              if kind == "appliance" and (m := _PRINTK.match(line))]
    return min(starts) if starts else None


def _map_phases(p: Pass) -> None:
    events = list(p.events)
    ks = _kernel_start(events)
    if ks is not None:
        events.append((ks, "mark", "@kernel-start"))
        events.sort(key=lambda e: e[0])
    p.total = events[-1][0]
    start, i = 0.0, 0
    pending: list[str] = []
    for name, pattern in PHASES:
        rx = re.compile(pattern)
        j = next((k for k in range(i, len(events)) if rx.search(events[k][2])), None)
        pending.append(name)
        if j is None:
            continue  # merged into the next phase
        end = events[j][0]
        label = " + ".join(pending)
        p.phases[label] = (start, max(0.0, end - start))
        start, i, pending = end, j, []
    for name, s_rx, e_rx in INIT_STEPS:
        s = next((t for t, _, line in events if re.search(s_rx, line)), None)
        e = next((t for t, _, line in events if s is not None and t >= s
                  and re.search(e_rx, line) and not re.search(s_rx, line)), None)
        if s is not None and e is not None:
            p.init_steps[name] = e - s


@dataclass
class PhaseStats:
    name: str
    start: float
    mean: float
    sd: float
    share: float
    samples: list[float]


def summarise(passes: list[Pass]) -> tuple[list[PhaseStats], dict[str, PhaseStats], float, float]:
    """Per-phase mean start, mean duration, sd and share of the mean total."""
    totals = [p.total for p in passes]
    mean_total = statistics.fmean(totals)
    sd_total = statistics.stdev(totals) if len(totals) > 1 else 0.0
    names = list(dict.fromkeys(n for p in passes for n in p.phases))
    phases = []
    for name in names:
        durs = [p.phases[name][1] for p in passes if name in p.phases]
        starts = [p.phases[name][0] for p in passes if name in p.phases]
        phases.append(PhaseStats(name, statistics.fmean(starts), statistics.fmean(durs),
                                 statistics.stdev(durs) if len(durs) > 1 else 0.0,
                                 statistics.fmean(durs) / mean_total, durs))
    steps = {}
    for name in dict.fromkeys(n for p in passes for n in p.init_steps):
        durs = [p.init_steps[name] for p in passes if name in p.init_steps]
        steps[name] = PhaseStats(name, 0.0, statistics.fmean(durs),
                                 statistics.stdev(durs) if len(durs) > 1 else 0.0,
                                 statistics.fmean(durs) / mean_total, durs)
    return phases, steps, mean_total, sd_total


def run_passes(variants: dict[str, dict[str, Any]], passes: int, warmup: int = 3,
               progress: Callable[[str], None] | None = None) -> list[Pass]:
    """Warm-up boots, then ``passes`` boots per variant, interleaved A B A B …"""
    if passes < 1:
        raise GuestpoolError(f"--passes must be at least 1, got {passes}")
    for name, settings in variants.items():
        for _ in range(warmup):
            if progress:
                progress(f"warm-up boot ({name})")
            boot_once(name, settings)
    out = []
    for i in range(passes):
        for name, settings in variants.items():
            p = boot_once(name, settings)
            out.append(p)
            if progress:
                progress(f"pass {i + 1}/{passes} ({name}): {p.total:.2f} s")
    return out


def bootstrap_ci(a: list[float], b: list[float], iterations: int = 10_000,
                 seed: int = 1) -> tuple[float, float, float]:
    """Mean of b − a and its 95% bootstrap percentile interval."""
    import numpy as np

    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a), np.asarray(b)
    da = rng.choice(xa, (iterations, len(xa))).mean(axis=1)
    db = rng.choice(xb, (iterations, len(xb))).mean(axis=1)
    diffs = db - da
    return float(xb.mean() - xa.mean()), float(np.percentile(diffs, 2.5)), float(
        np.percentile(diffs, 97.5))


def compare(passes: list[Pass], base: str, other: str) -> list[dict[str, Any]]:
    """Per-phase (and total) delta of ``other`` against ``base`` with a 95% interval."""
    pa = [p for p in passes if p.variant == base]
    pb = [p for p in passes if p.variant == other]
    rows = []
    names = list(dict.fromkeys(n for p in pa + pb for n in p.phases))
    series = [(n, [p.phases[n][1] for p in pa if n in p.phases],
               [p.phases[n][1] for p in pb if n in p.phases]) for n in names]
    series.append(("TOTAL", [p.total for p in pa], [p.total for p in pb]))
    for name, a, b in series:
        if len(a) < 2 or len(b) < 2:
            continue
        delta, lo, hi = bootstrap_ci(a, b)
        rows.append({"phase": name, "base_mean": statistics.fmean(a),
                     "other_mean": statistics.fmean(b), "delta": delta, "ci95": [lo, hi],
                     "real": not (lo <= 0.0 <= hi)})
    return rows


def fmt_pm(mean: float, sd: float) -> str:
    return f"{mean:6.3f} ± {sd:5.3f}"
