"""The study figures: Pareto fronts with error bars, hypervolume over trials, parameter importances, image grids
and several studies' fronts overlaid."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from PIL import Image

from workbench.errors import ConfigError
from workbench.metrics import METRICS
from workbench.paths import project_root
from workbench.report.front import hypervolume_history, losses, pareto_mask
from workbench.report.style import COLUMN_IN, PAPER, error_bars, finish, plt, save_figure, wrap
from workbench.report.tables import n_caption, short_label
from workbench.study.storages import optuna_storage
from workbench.study.store import Store

_log = logging.getLogger("workbench.report")


def plot_pareto(ok: pd.DataFrame, x: str, y: str, baseline: int | None, path: Path, study: str) -> Path:
    """All trials faint with their error bars, the 2-D Pareto front highlighted and connected, the baseline starred."""
    plt.rcParams.update(PAPER)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.7))
    xerr, yerr = error_bars(ok, x), error_bars(ok, y)
    ax.errorbar(ok[x], ok[y], xerr=xerr, yerr=yerr, fmt="o", ms=3, color="0.6", alpha=0.5, elinewidth=0.6,
                capsize=1.2, label="trials")
    front = ok[pareto_mask(losses(ok, [x, y]))].sort_values(x)
    ax.plot(front[x], front[y], "-", color="tab:red", lw=1.2, drawstyle=staircase(x))
    ax.errorbar(front[x], front[y], xerr=error_bars(front, x), yerr=error_bars(front, y), fmt="o", ms=3.5,
                color="tab:red", elinewidth=0.8, capsize=1.5, label="Pareto front")
    lo, hi = ok[x].min(), ok[x].max()
    for _, r in front.iterrows():  # labels of the right-hand points go to their left, inside the axes
        left = hi > lo and (r[x] - lo) / (hi - lo) > 0.6
        ax.annotate(short_label(r), (r[x], r[y]), fontsize=5, xytext=(-2 if left else 2, 2),
                    textcoords="offset points", ha="right" if left else "left")
    if baseline is not None and baseline in set(ok["trial"]):
        b = ok[ok["trial"] == baseline].iloc[0]
        ax.scatter([b[x]], [b[y]], marker="*", s=70, color="tab:blue", zorder=5, label="baseline")
    return finish(fig, ax, x, y, f"{study}: {METRICS[y].label} vs {METRICS[x].label} ({n_caption(ok)})", path)


def staircase(x: str) -> str:
    """The front's drawstyle: the boundary of what the front's points reach, with x ascending.

    With x minimised, the value of a point holds from its x up to the next point's (steps-post); with x
    maximised, from the previous point's x up to its own (steps-pre). The y direction does not matter."""
    return "steps-post" if METRICS[x].better == "minimize" else "steps-pre"


def plot_hypervolume(ok: pd.DataFrame, objectives: list[str], path: Path, study: str) -> Path:
    trials, hv = hypervolume_history(ok, objectives)
    plt.rcParams.update(PAPER)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.2))
    ax.plot(trials, hv, "-o", ms=2.5)
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (normalised) (↑ better)")
    ax.set_title(wrap(f"{study}: hypervolume of {', '.join(objectives)} ({n_caption(ok)})", COLUMN_IN - 0.2))
    ax.grid(alpha=0.3, lw=0.4)
    return save_figure(fig, path)


def plot_importances(study: str, storage: str, objectives: list[str], path: Path) -> Path | str:
    """Optuna's parameter importances (fANOVA, seeded) for each objective, one panel each; or why there are none.

    An objective with one value over all trials (e.g. alignment 1.0 everywhere) has no variance for fANOVA to
    apportion: its panel says so instead of bars, and the reason is logged."""
    loaded = optuna.load_study(study_name=study, storage=optuna_storage(storage))
    done = loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    varying = {k for t in done for k in t.params if len({str(u.params.get(k)) for u in done}) > 1}
    if len(done) < 3 or not varying:
        return f"parameter importances need 3 or more complete trials with a varying parameter ({len(done)} complete)"
    plt.rcParams.update(PAPER)
    fig, axes = plt.subplots(1, len(objectives), figsize=(COLUMN_IN * 2, 1.9), squeeze=False, layout="constrained")
    for i, (metric, ax) in enumerate(zip(objectives, axes[0])):
        ax.set_title(f"{metric} ({METRICS[metric].better[:3]})")
        values = {t.values[i] for t in done}
        if len(values) == 1:
            why = (f"{metric} is constant over the {len(done)} trials\n({next(iter(values)):.4g} in every one):\n"
                   "no variance for fANOVA to apportion")
        else:
            try:
                scores = optuna.importance.get_param_importances(
                    loaded, target=lambda t, i=i: t.values[i],
                    evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
                why = None
            except RuntimeError as e:  # fANOVA's trees found no variance to split (e.g. one outlying trial)
                why = f"{metric}: fANOVA found no importances\n({e})"
        if why:
            _log.warning("importances of %s: %s; panel left without bars", study, why.replace("\n", " "))
            ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=5.5, transform=ax.transAxes, wrap=False)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        names = list(scores)[::-1]
        ax.barh(names, [scores[n] for n in names], color="tab:blue")
        ax.set_xlim(0, 1)
        ax.set_xlabel("importance (fANOVA)")
    fig.suptitle(f"{study}: which knobs matter for each objective ({len(done)} trials)", fontsize=7)
    return save_figure(fig, path)


def plot_image_grid(frame: pd.DataFrame, trials: list[int], path: Path, study: str, images: int = 8) -> Path | str:
    """One row per chosen trial (baseline first, then the Pareto set), the same seeds and prompts in each column."""
    rows = frame.set_index("trial")
    folders = {t: rows.loc[t, "artifacts"].get("images") for t in trials if t in rows.index}
    folders = {t: project_root() / f for t, f in folders.items() if f}  # a sweep's rows: paths relative to the project
    folders = {t: f for t, f in folders.items() if f.is_dir()}
    if not folders:
        return "no trial images on disk"
    common = sorted(set.intersection(*(set(p.name for p in f.glob("seed*.png")) for f in folders.values())))[:images]
    if not common:
        return "the chosen trials share no seed"
    plt.rcParams.update(PAPER)
    fig, axes = plt.subplots(len(folders), len(common), figsize=(COLUMN_IN * 2, 0.95 * len(folders) + 0.3),
                             squeeze=False, layout="constrained")
    for r, (trial, folder) in enumerate(folders.items()):
        for c, name in enumerate(common):
            ax = axes[r][c]
            ax.imshow(np.asarray(Image.open(folder / name).convert("RGB")))
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"#{trial}\n{short_label(rows.loc[trial])}", fontsize=5)
            if r == 0:
                ax.set_title(name.removesuffix(".png"), fontsize=5)
    fig.suptitle(f"{study}: the same seeds and prompts across trials (first row: baseline)", fontsize=7)
    return save_figure(fig, path)


def plot_overlay(studies: list[str], storage: str, x: str, y: str, path: Path) -> Path:
    """Several studies' trials and Pareto fronts on one set of axes, e.g. steps x CFG against compression.

    Quality numbers compare only at equal N: studies of different N are refused with one line."""
    frames = {}
    for name in studies:
        frame = Store(storage).frame(name)
        ok = frame[frame["status"] == "ok"].dropna(subset=[c for c in (x, y) if c in frame]) if len(frame) else frame
        if ok.empty or not {x, y} <= set(ok.columns):
            raise ConfigError(f"compare: study {name!r} has no successful trial with {x} and {y} in {storage}")
        frames[name] = ok
    ns = {name: n_caption(ok) for name, ok in frames.items()}
    if len(set(ns.values())) > 1:
        raise ConfigError("compare: the studies measured different N (" + "; ".join(f"{k}: {v}" for k, v in ns.items())
                          + "); quality compares only at equal N")
    plt.rcParams.update(PAPER)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.7))
    for i, (name, ok) in enumerate(frames.items()):
        colour = f"C{i}"
        ax.errorbar(ok[x], ok[y], xerr=error_bars(ok, x), yerr=error_bars(ok, y), fmt="o", ms=2.5, color=colour,
                    alpha=0.35, elinewidth=0.5, capsize=1)
        front = ok[pareto_mask(losses(ok, [x, y]))].sort_values(x)
        ax.plot(front[x], front[y], "-o", ms=3, color=colour, drawstyle=staircase(x),
                label=f"{name} ({len(ok)} trials)")
    return finish(fig, ax, x, y, f"{METRICS[y].label} vs {METRICS[x].label} ({next(iter(ns.values()))})", path)
