"""Axes a reader can read in a paper: byte axes in SI units whatever their range, point labels
that never print over each other, and a check that every axis kept its tick labels.

Matplotlib's log axis labels only powers of ten, so bytes spanning less than a decade (346 MB vs
365 MB) showed no number at all; here such a range gets a linear axis, a range of a few decades
labels 1-2-5 steps, and a wide one labels the decades.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from miet_fed.units import UNITS, human_bytes

#: Decades up to which 1, 2 and 5 times a power of ten are all labelled.
DENSE_DECADES = 3


def figure(width: float = 7.0, height: float = 4.5, ncols: int = 1) -> tuple[Any, Any]:
    """A Figure without pyplot: no global state, no GUI backend (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def bytes_formatter() -> Any:
    """Tick labels such as 250 kB, 4 MB, 1.2 GB: the SI units of the tables and `miet-fed cost`,
    with more digits where three would make neighbouring ticks read the same (100.1, 100.2 MB)."""
    from matplotlib.ticker import Formatter

    class BytesFormatter(Formatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return human_bytes(x) if x >= 0 else ""

        def format_ticks(self, values: Any) -> list[str]:
            labels = [self(v) for v in values]
            shown = [v for v in values if v > 0]
            if len(set(labels)) == len(labels) or len(shown) < 2:
                return labels
            exp = min(max(int(math.log10(max(shown)) // 3), 0), len(UNITS) - 1)
            ordered = sorted(shown)
            step = min(b - a for a, b in zip(ordered, ordered[1:], strict=False)) / 1000**exp
            digits = max(0, -math.floor(math.log10(step))) if step > 0 else 3
            return [f"{v / 1000**exp:.{digits}f} {UNITS[exp]}" if v >= 0 else "" for v in values]

    return BytesFormatter()


def bytes_axis(ax: Any, values: pd.Series, axis: str = "x") -> str:
    """Choose the scale from the data and label its ticks in bytes; returns the scale's name for
    the axis label ("log scale", ...)."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

    values = pd.to_numeric(values, errors="coerce").dropna()
    positive = values[values > 0]
    target = ax.xaxis if axis == "x" else ax.yaxis
    set_scale = ax.set_xscale if axis == "x" else ax.set_yscale
    if len(positive) and len(positive) < len(values):
        set_scale("symlog", linthresh=float(positive.min()))
        scale = "symlog scale: 0 = none counted"
    elif len(positive) and positive.max() >= 10 * positive.min():
        set_scale("log")
        decades = math.log10(positive.max() / positive.min())
        subs = (1.0, 2.0, 5.0) if decades <= DENSE_DECADES else (1.0,)
        target.set_major_locator(LogLocator(base=10, subs=subs))
        scale = "log scale"
    else:
        set_scale("linear")
        target.set_major_locator(MaxNLocator(nbins=6))
        scale = "linear scale"
    target.set_major_formatter(bytes_formatter())
    target.set_minor_formatter(NullFormatter())
    return scale


def bytes_ticks(ax: Any, axis: str = "y") -> None:
    """SI byte labels on an axis whose scale is already set (e.g. bars from zero)."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(bytes_formatter())


def place_labels(ax: Any, points: list[tuple[float, float, str]], fontsize: int = 7) -> int:
    """Annotate points without overlap: each label tries a few offsets around its point and is
    left out (returns how many) when none is free; the caller lists those in a table."""
    fig = ax.figure
    fig.canvas.draw()  # settle the layout first: boxes are compared in display space
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    taken: list[Any] = [legend.get_window_extent(renderer)] if legend is not None else []
    offsets = [(4, 3), (4, -10), (-4, 3), (-4, -10), (4, 12), (4, -19), (-4, 12), (-4, -19)]
    dropped = 0
    for x, y, text in points:
        placed = False
        for dx, dy in offsets:
            ann = ax.annotate(
                text,
                (x, y),
                xytext=(dx, dy),
                textcoords="offset points",
                fontsize=fontsize,
                ha="left" if dx > 0 else "right",
            )
            ann.set_in_layout(False)  # placing a label must not move the axes it was placed on
            box = ann.get_window_extent(renderer).expanded(1.05, 1.1)
            inside = fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)
            if inside and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                placed = True
                break
            ann.remove()
        dropped += not placed
    return dropped


def tick_labels(ax: Any) -> dict[str, list[str]]:
    """The tick labels a reader sees inside each axis's view, after drawing."""
    ax.figure.canvas.draw()
    out = {}
    for name, axis, (lo, hi) in (
        ("x", ax.xaxis, sorted(ax.get_xlim())),
        ("y", ax.yaxis, sorted(ax.get_ylim())),
    ):
        seen = []
        for tick in axis.get_major_ticks() + axis.get_minor_ticks():
            loc = tick.get_loc()
            shown = [t for t in (tick.label1, tick.label2) if t.get_visible()]  # twin: label2
            label = shown[0].get_text() if shown else ""
            if lo <= loc <= hi and label.strip():
                seen.append(label)
        out[name] = seen
    return out
