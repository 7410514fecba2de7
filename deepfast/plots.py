"""Plots as PNG files, drawn with matplotlib (imported on first use, with its file-only Agg backend):
the training curves of a run (one panel per logged metric, by epoch) and curves of y against x.

matplotlib is a dependency of deepfast, imported only here and only when a plot is drawn, so that
``import deepfast`` and training stay as fast without it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

# Columns of a metrics row that are not curves.
NOT_CURVES = ("epoch", "time", "lr")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Writes the figure as a PNG atomically (a temporary file renamed) and closes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


def training_curves(
    rows: Sequence[Mapping[str, float]], path: str | Path, title: str = "", columns: Sequence[str] | None = None
) -> Path:
    """The metrics of a run (rows as in metrics.jsonl: {"epoch": e, name: value, ...}) as a PNG: one
    small panel per column (default: every numeric column but epoch, time and lr, in order), value by
    epoch. Returns ``path``. ValueError without rows or columns."""
    if not rows:
        raise ValueError("rows is empty: a run logs one row per finished epoch")
    if columns is None:
        columns = [
            k
            for k in dict.fromkeys(k for row in rows for k in row)
            if k not in NOT_CURVES and all(isinstance(row.get(k, 0.0), (int, float)) for row in rows)
        ]
    if not columns:
        raise ValueError("no columns to plot")
    plt = _pyplot()
    cols = min(len(columns), 4)
    lines = math.ceil(len(columns) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(2.6 * cols, 2.0 * lines + 0.4), squeeze=False)
    for ax, name in zip(axes.flat, columns):
        points = [(row["epoch"], row[name]) for row in rows if name in row]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("epoch", fontsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def line_panels(panels: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """Side-by-side panels of curves as a PNG. Each panel: {"x": [...], "curves": {label: [y, ...]},
    "xlabel": str, "ylabel": str, optional "ylim": (lo, hi)}; every curve has one y per x."""
    if not panels:
        raise ValueError("panels is empty")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for label, ys in panel["curves"].items():
            if len(ys) != len(panel["x"]):
                raise ValueError(f"curve {label!r} has {len(ys)} values for {len(panel['x'])} x")
            ax.plot(panel["x"], ys, marker="o", markersize=3, label=label)
        ax.set_xlabel(panel["xlabel"])
        ax.set_ylabel(panel["ylabel"])
        if "ylim" in panel:
            ax.set_ylim(*panel["ylim"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
