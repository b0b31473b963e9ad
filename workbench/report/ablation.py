"""The ablation ladder as a figure and a table: speed-up and quality change per rung (rungs measured by
`workbench.study.ablation`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from workbench.metrics import METRICS, QUALITY, error_bar, with_spread
from workbench.report.style import COLUMN_IN, PAPER, plt, save_figure, wrap
from workbench.report.tables import latex_table, markdown_table
from workbench.study.ablation import study_name


def quality_metrics(frame: pd.DataFrame, objectives: list[str] | None = None) -> list[str]:
    """The quality metrics a ladder shows: the study's quality objectives, else those measured, at most three."""
    chosen = [m for m in (objectives or []) if m in QUALITY and m in frame]
    return (chosen or [m for m in QUALITY if m in frame and frame[m].notna().any()])[:3]


def table(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The ladder as printed: rung, knob added, trial, latency (IQR), speed-up, each metric with spread and Δ."""
    out = frame[["rung", "added", "trial"]].copy()
    out["latency_s"] = [f"{r['latency_s']:.4g} (IQR {r.get('latency_iqr_s', float('nan')):.2g})"
                        for _, r in frame.iterrows()]
    out["speed-up"] = [f"{v:.2f}x" for v in frame["speedup"]]
    for m in metrics:
        out[m] = [with_spread(r, m) for _, r in frame.iterrows()]
        out[f"Δ {m}"] = [f"{v:+.4g}" for v in frame[f"delta_{m}"]]
    return out


def plot_ladder(frame: pd.DataFrame, metrics: list[str], path: Path) -> Path:
    """Speed-up and each quality metric (with its spread) per rung, rungs top to bottom, baseline first."""
    plt.rcParams.update(PAPER)
    panels = 1 + len(metrics)
    fig, axes = plt.subplots(1, panels, figsize=(COLUMN_IN * 2, 0.32 * len(frame) + 1.0), sharey=True,
                             squeeze=False, layout="constrained")
    panel_in = COLUMN_IN * 2 / panels - 0.3  # labels wrap to their panel (the first also holds the rung names)
    y = np.arange(len(frame))
    labels = [f"{r['added']}  (#{int(r['trial'])})" for _, r in frame.iterrows()]
    ax = axes[0][0]
    ax.barh(y, frame["speedup"], color="tab:blue")
    ax.axvline(1.0, color="0.3", lw=0.6)
    for yi, v in zip(y, frame["speedup"]):
        ax.annotate(f"{v:.2f}x", (v, yi), xytext=(2, 0), textcoords="offset points", va="center", fontsize=5)
    ax.set_xlim(0, frame["speedup"].max() * 1.2)  # room for the value beside the longest bar
    ax.set_xlabel(wrap("speed-up vs baseline (latency per image, ↑ better)", panel_in * 0.8))
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for ax, m in zip(axes[0][1:], metrics):
        bars = [error_bar(r, m) for _, r in frame.iterrows()]
        err = np.array([b if b else (0.0, 0.0) for b in bars]).T if any(bars) else None
        ax.errorbar(frame[m], y, xerr=err, fmt="o-", ms=3, color="tab:red", elinewidth=0.7, capsize=1.5)
        ax.axvline(frame[m].iloc[0], color="0.3", lw=0.6, ls="--")
        arrow = "↓" if METRICS[m].better == "minimize" else "↑"
        ax.set_xlabel(wrap(f"{METRICS[m].label} ({arrow} better)", panel_in))
    for ax in axes[0]:
        ax.grid(alpha=0.3, lw=0.4)
    study, trial = frame.attrs.get("study", ""), frame.attrs.get("trial", "")
    fig.suptitle(f"{study}: ablation ladder of trial {trial}, every rung measured ({study_name(study)}; "
                 f"{_n_caption(frame)})", fontsize=7)
    return save_figure(fig, path)


def write_ladder(frame: pd.DataFrame, out_dir: Path, objectives: list[str] | None = None) -> dict[str, Path]:
    """Figure (PNG, SVG, PDF) and table (CSV, markdown, LaTeX) of one ladder; returns their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trial = frame.attrs["trial"]
    metrics = quality_metrics(frame, objectives)
    stem = out_dir / f"ablation_trial-{trial:04d}"
    paths = {f"ablation_{trial}": plot_ladder(frame, metrics, stem.with_suffix(".png"))}
    paths[f"ablation_{trial}_csv"] = stem.with_suffix(".csv")
    frame.to_csv(paths[f"ablation_{trial}_csv"], index=False)
    caption = (f"Ablation ladder of trial {trial} of {frame.attrs['study']}: the baseline, then one knob added per "
               f"rung; every rung a trial measured in {study_name(frame.attrs['study'])!r} ({_n_caption(frame)}). "
               "Speed-up = baseline latency / rung latency (medians per image).")
    paths[f"ablation_{trial}_md"] = stem.with_suffix(".md")
    paths[f"ablation_{trial}_md"].write_text(markdown_table(table(frame, metrics), caption))
    paths[f"ablation_{trial}_tex"] = stem.with_suffix(".tex")
    paths[f"ablation_{trial}_tex"].write_text(latex_table(table(frame, metrics), caption,
                                                          f"tab:{frame.attrs['study']}-ablation-{trial}"))
    return paths


def _n_caption(frame: pd.DataFrame) -> str:
    """How many images each rung measured (quality changes compare at equal N)."""
    ns = sorted(frame["images"].unique()) if "images" in frame else []
    return "N = " + ", ".join(f"{n:,}" for n in ns) + " images per rung" if ns else "N unknown"
