"""Small bar charts as inline SVG, rendered on the server: no script, no assets.

A chart is a list of bars (one per round), each a stack of segments; every
bar carries a <title> (its exact figures, for a mouse or a screen reader)
and the chart a text summary in ``aria-label``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

W, H = 460, 190
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 14, 34


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    color: str


def _nice_max(top: float) -> float:
    """The smallest 4 × (1, 2, 2.5 or 5 × 10^k) at or above ``top``: round ticks."""
    if top <= 0:
        return 1.0
    step = top / 4
    exp = 10.0 ** math.floor(math.log10(step))
    for nice in (1.0, 2.0, 2.5, 5.0, 10.0):
        if nice * exp >= step:
            return 4 * nice * exp
    return 40 * exp


def _fmt(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v:.0f}%"
    return f"{v:.3g} {unit}".strip()


def bar_chart(title: str, labels: Sequence[str], series: Sequence[Series], unit: str = "",
              ymax: float | None = None, empty: str = "no finished round yet",
              overlay: bool = False, tips: Sequence[str] | None = None,
              axis: str = "round") -> str:
    """Stacked bars, one per label; ``None`` values are drawn as gaps. With
    ``overlay`` each series is drawn from the axis, the first behind (a p95 behind
    its p50). ``tips`` name each bar in its hover title (default: its label)."""
    e = html.escape
    if not labels or all(v is None for s in series for v in s.values):
        return f"<figure class='chart'><figcaption>{e(title)}</figcaption><p>{e(empty)}</p>" \
               "</figure>"
    stacks = [[s.values[i] or 0.0 for s in series] for i in range(len(labels))]
    totals = [max(v, default=0.0) if overlay else sum(v) for v in stacks]
    top = ymax if ymax is not None else _nice_max(max(totals, default=0))
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / len(labels)
    bar = max(2.0, min(28.0, slot * 0.7))
    parts = [f"<svg viewBox='0 0 {W} {H}' width='100%' role='img' "
             f"aria-label='{e(title)}: {e(_summary(labels, series, unit))}'>"]
    for k in range(5):  # grid and y ticks
        y = TOP + plot_h - plot_h * k / 4
        parts.append(f"<line x1='{LEFT}' x2='{W - RIGHT}' y1='{y:.1f}' y2='{y:.1f}' "
                     f"class='grid'/><text x='{LEFT - 4}' y='{y + 4:.1f}' text-anchor='end' "
                     f"class='tick'>{e(_fmt(top * k / 4, unit))}</text>")
    step = max(1, math.ceil(len(labels) / 12))
    for i, label in enumerate(labels):
        x = LEFT + slot * i + (slot - bar) / 2
        base: float = TOP + plot_h
        tip = [tips[i] if tips else label] + [f"{s.name}: {_fmt(s.values[i] or 0, unit)}"
                                              for s in series if s.values[i] is not None]
        parts.append(f"<g><title>{e(' · '.join(tip))}</title>")
        for s in series:
            value = s.values[i]
            if value is None or value <= 0:
                continue
            h = plot_h * min(value, top) / top
            base = (TOP + plot_h if overlay else base) - h
            parts.append(f"<rect x='{x:.1f}' y='{base:.1f}' width='{bar:.1f}' "
                         f"height='{h:.1f}' fill='{s.color}'/>")
        parts.append("</g>")
        if i % step == 0:
            parts.append(f"<text x='{x + bar / 2:.1f}' y='{H - BOTTOM + 14}' "
                         f"text-anchor='middle' class='tick'>{e(label)}</text>")
    parts.append(f"<text x='{LEFT + plot_w / 2:.0f}' y='{H - 4}' text-anchor='middle' "
                 f"class='tick'>{e(axis)}</text></svg>")
    legend = "".join(f"<li><span class='swatch' style='background:{s.color}'></span>"
                     f"{e(s.name)}</li>" for s in series) if len(series) > 1 else ""
    return (f"<figure class='chart'><figcaption>{e(title)}</figcaption>{''.join(parts)}"
            f"{f'<ul class=legend>{legend}</ul>' if legend else ''}</figure>")


def _summary(labels: Sequence[str], series: Sequence[Series], unit: str) -> str:
    """The latest bar in words, for the chart's accessible name."""
    i = len(labels) - 1
    figures = [f"{s.name} {_fmt(s.values[i] or 0, unit)}" for s in series
               if s.values[i] is not None]
    return f"{len(labels)} rounds; latest ({labels[i]}): {', '.join(figures) or 'no data'}"
