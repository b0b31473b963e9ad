"""One figure style for a two-column paper: sizes, fonts, error bars, axis labels, and PNG + SVG + PDF output."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from workbench.metrics import axis_label, error_bar  # noqa: E402

COLUMN_IN = 3.4  # one column of a two-column paper (inches)
PAPER = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
         "ytick.labelsize": 6, "axes.linewidth": 0.6, "lines.linewidth": 1.0, "savefig.dpi": 300,
         "savefig.bbox": "tight", "pdf.fonttype": 42, "svg.fonttype": "none"}  # editable text in PDF and SVG
FORMATS = (".png", ".svg", ".pdf")


def save_figure(fig, path: Path) -> Path:
    """Write the figure as PNG, SVG and PDF side by side (same stem); returns the PNG's path."""
    for suffix in FORMATS:
        fig.savefig(path.with_suffix(suffix))
    plt.close(fig)
    return path.with_suffix(".png")


def wrap(text: str, width_in: float, size: float = PAPER["axes.labelsize"]) -> str:
    """Text broken into lines that fit `width_in` inches at `size` points (a DejaVu Sans character averages
    ~0.55 em), so a long label wraps instead of widening a figure beyond its column."""
    return "\n".join(textwrap.wrap(text, max(12, int(width_in * 72 / (0.55 * size)))))


def finish(fig, ax, x: str, y: str, title: str, path: Path) -> Path:
    """Axis labels with units and direction, title, grid and legend; then save in every format."""
    ax.set_xlabel(wrap(axis_label(x), COLUMN_IN - 0.6))
    ax.set_ylabel(wrap(axis_label(y), fig.get_figheight() - 0.5))
    ax.set_title(wrap(title, COLUMN_IN - 0.2, PAPER["axes.titlesize"]))
    ax.grid(alpha=0.3, lw=0.4)
    ax.legend()
    return save_figure(fig, path)


def error_bars(frame: pd.DataFrame, metric: str):
    """A 2 x N array of (below, above) error bar lengths, or None where the metric has no spread."""
    bars = [error_bar(r, metric) for _, r in frame.iterrows()]
    if not any(bars):
        return None
    return np.array([b if b else (0.0, 0.0) for b in bars]).T
