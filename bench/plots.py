"""Plots: VMs per budget against boot time, and boot timelines per variant."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

POOL_SIZES = (1, 2, 4, 8, 16, 32, 64)


def throughput_curves(path: Path, *, budget: float, attach_detach: float, work: float,
                      cold_work: float, points: Sequence[dict[str, Any]] = (),
                      title_note: str = "") -> list[Path]:
    """VMs per budget for boot times 0.1–30 s, cold vs pooled, P = 1…64 (log axes)."""
    boots = np.logspace(-1, np.log10(30), 200)
    fig, ax = plt.subplots(figsize=(10, 6.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(POOL_SIZES)))
    for p, color in zip(POOL_SIZES, colors, strict=True):
        cold = p * budget / (boots + cold_work)
        pooled = p * np.clip(budget - boots, 0, None) / (attach_detach + work)
        ax.plot(boots, pooled, color=color, lw=2, label=f"pooled, P={p}")
        ax.plot(boots, cold, color=color, lw=1.2, ls="--", label=f"cold, P={p}")
    for pt in points:
        marker = "o" if pt["strategy"] == "pooled" else "s"
        ax.scatter([pt["boot"]], [pt["vms"]], marker=marker, s=90, color="red", zorder=5,
                   edgecolor="black")
        ax.annotate(f"{pt['label']}: {pt['vms']}", (pt["boot"], pt["vms"]),
                    textcoords="offset points", xytext=(8, -4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("appliance boot time B (s)")
    ax.set_ylabel(f"VMs inspected per {budget:.0f} s budget")
    ax.set_title(f"How boot time bounds fleet throughput (A+W = {attach_detach + work:.1f} s "
                 f"pooled, W = {cold_work:.1f} s cold){title_note}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(ncol=2, fontsize=7, loc="lower left")
    fig.tight_layout()
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    for p_ in out:
        fig.savefig(p_, dpi=110)
    plt.close(fig)
    return out


def timeline_bars(path: Path, variants: dict[str, list[tuple[str, float]]]) -> list[Path]:
    """One stacked horizontal bar per variant: mean duration of each boot phase."""
    names = list(dict.fromkeys(n for phases in variants.values() for n, _ in phases))
    colors = plt.cm.tab20(np.linspace(0, 1, max(len(names), 2)))
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.9 * len(variants)))
    for row, phases in enumerate(variants.values()):
        left = 0.0
        for name, dur in phases:
            ax.barh(row, dur, left=left, color=colors[names.index(name)],
                    label=name if row == 0 else None, edgecolor="white")
            if dur > 0.6:
                ax.text(left + dur / 2, row, f"{dur:.1f}", ha="center", va="center", fontsize=7)
            left += dur
    ax.set_yticks(range(len(variants)), list(variants))
    ax.set_xlabel("seconds since launch (mean over passes)")
    ax.set_title("Appliance boot timeline by phase")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    for p_ in out:
        fig.savefig(p_, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
