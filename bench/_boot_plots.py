"""Boot pictures: activities at their level, deltas with intervals, history."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ._activities import ActivityStats
from ._baselines import SavedRun

# rows of the timeline, top to bottom: (label, kind, level)
ROWS = [("phases", "phase", 0), ("/init steps", "init step", 1), ("insmods", "insmod", 1),
        ("initcalls, built-in", "initcall", 1), ("initcalls, modules", "initcall", 2)]
KIND_COLOURS = {"phase": "#4c72b0", "init step": "#dd8452", "insmod": "#55a868",
                "initcall": "#c44e52"}
VERDICT_COLOURS = {"slower": "#c0392b", "faster": "#27ae60", "noise": "#95a5a6"}


def _save(fig: Figure, path: Path) -> list[Path]:
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    for p in out:
        fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def activities(path: Path, variant: str, stats: list[ActivityStats], total: float,
               top: int = 20) -> list[Path]:
    """Above: every activity at its level on the boot's time axis, the longest
    labelled. Below: the ``top`` longest activities, mean ± sd, longest first."""
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(13, 11), height_ratios=[1, 1.5])
    ranked = sorted((s for s in stats if s.kind != "phase"), key=lambda s: -s.mean)
    labelled = {s.name: i for i, s in enumerate(ranked[:8])}
    for row, (_label, kind, level) in enumerate(ROWS):
        mine = sorted((s for s in stats if s.kind == kind and s.level == level),
                      key=lambda s: -s.mean)
        for s in mine:
            width = max(s.mean, total / 5000)  # a 0 µs initcall still shows as a tick
            ax.barh(row, width, left=s.start, height=0.7, color=KIND_COLOURS[kind],
                    edgecolor="white" if kind == "phase" else "none", linewidth=0.5)
            if kind == "phase" and s.mean > total / 25:
                ax.text(s.start + s.mean / 2, row, s.name, ha="center", va="center",
                        fontsize=6.5, color="white")
            elif s.name in labelled:
                ax.annotate(f"{_short(s.name)} {s.mean * 1000:.0f} ms",
                            (s.start + s.mean, row), fontsize=6.5, textcoords="offset points",
                            xytext=(3, 12 if labelled[s.name] % 2 else -16),
                            arrowprops={"arrowstyle": "-", "lw": 0.5})
    counts = [sum(1 for s in stats if s.kind == kind and s.level == level)
              for _label, kind, level in ROWS]
    ax.set_yticks(range(len(ROWS)), [f"{r[0]} ({n})" for r, n in zip(ROWS, counts, strict=True)])
    ax.invert_yaxis()
    ax.set_xlim(0, total * 1.01)
    ax.set_xlabel("seconds since launch (mean start and duration over passes)")
    ax.set_title(f"Appliance boot, every activity at its level: {variant}")
    ax.grid(True, axis="x", alpha=0.3)
    longest = sorted(stats, key=lambda s: -s.mean)[:top]
    y = range(len(longest))
    bx.barh(y, [s.mean for s in longest], xerr=[s.sd for s in longest],
            color=[KIND_COLOURS[s.kind] for s in longest], capsize=2)
    bx.set_yticks(y, [f"{s.name} (L{s.level})" for s in longest], fontsize=7)
    bx.invert_yaxis()
    for i, s in enumerate(longest):
        bx.text(s.mean + s.sd, i, f"  {s.mean:.3f} ± {s.sd:.3f} s", va="center", fontsize=6.5)
    bx.set_xlabel("seconds (mean ± sd)")
    bx.set_title(f"{len(longest)} longest activities over all levels")
    bx.legend(handles=[Patch(color=c, label=k) for k, c in KIND_COLOURS.items()],
              loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _short(name: str) -> str:
    return name.removeprefix("initcall ").removeprefix("insmod ")


def deltas(path: Path, title: str, rows: Sequence[tuple[str, float, float, float, str]]
           ) -> list[Path]:
    """One line per phase: delta and its 95% interval; colour says which are real.

    ``rows``: (phase, delta, lo, hi, verdict) with verdict slower, faster or noise.
    """
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * len(rows)))
    for i, (_name, delta, lo, hi, verdict) in enumerate(rows):
        colour = VERDICT_COLOURS[verdict]
        ax.errorbar(delta, i, xerr=[[delta - lo], [hi - delta]], fmt="o", color=colour,
                    capsize=4, lw=2 if verdict != "noise" else 1)
        ax.text(hi, i, f"  {delta:+.3f} s [{lo:+.3f}, {hi:+.3f}]"
                + ("" if verdict == "noise" else f"  {verdict.upper()}"),
                va="center", fontsize=7, color=colour)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("difference of mean duration, seconds (95% bootstrap interval)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(x=0.35)
    fig.tight_layout()
    return _save(fig, path)


def history(path: Path, runs: list[SavedRun], phase: str) -> list[Path]:
    """Mean ± sd of one phase for every saved run over time, one series per name."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for name in dict.fromkeys(r.name for r in runs):
        mine = [r for r in runs if r.name == name and phase in r.summary]
        if not mine:
            continue
        when = [r.saved_at / 86400 for r in mine]  # matplotlib's dates: days since 1970
        ax.errorbar(when, [r.summary[phase]["mean"] for r in mine],
                    yerr=[r.summary[phase]["sd"] for r in mine], fmt="o-", capsize=4,
                    label=name)
        for r, t in zip(mine, when, strict=True):
            ax.annotate(f"#{r.id}", (t, r.summary[phase]["mean"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=7)
    ax.xaxis_date()
    ax.set_ylabel(f"{phase}: seconds (mean ± sd over passes)")
    ax.set_title(f"Boot history: {phase}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _save(fig, path)
