"""Figures and tables from the store: Pareto fronts, hypervolume over trials, the Pareto set as CSV and markdown,
and the ablation ladders measured by `workbench ablate` (workbench.ablation).

    workbench report experiments/quickstart.yaml      # or a study name
"""
from __future__ import annotations

import itertools
import logging
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from workbench.errors import ConfigError  # noqa: E402
from workbench.metrics import METRICS, SPREAD_COLUMNS, axis_label, error_bar, with_spread  # noqa: E402
from workbench.storages import optuna_storage  # noqa: E402
from workbench.store import Store  # noqa: E402
from workbench.trial import RESULTS  # noqa: E402


_log = logging.getLogger("workbench.report")
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


def pareto_mask(losses: np.ndarray) -> np.ndarray:
    """Non-dominated rows of a loss matrix (all objectives minimised)."""
    n = len(losses)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(losses <= losses[i], axis=1) & np.any(losses < losses[i], axis=1)
        keep[i] = not dominated.any()
    return keep


def losses(frame: pd.DataFrame, objectives: list[str]) -> np.ndarray:
    """Objective values turned into losses (maximised metrics negated)."""
    sign = np.array([1.0 if METRICS[m].better == "minimize" else -1.0 for m in objectives])
    return frame[objectives].to_numpy(dtype=float) * sign


def hypervolume_history(frame: pd.DataFrame, objectives: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hypervolume of the Pareto set after each trial, objectives normalised to [0, 1] over all trials.

    Reference point: 1.1 in every normalised dimension (10 % beyond the worst value seen).
    """
    from optuna._hypervolume import compute_hypervolume

    loss = losses(frame, objectives)
    lo, hi = loss.min(0), loss.max(0)
    norm = (loss - lo) / np.where(hi > lo, hi - lo, 1.0)
    ref = np.full(len(objectives), 1.1)
    hv = [compute_hypervolume(norm[: i + 1][pareto_mask(norm[: i + 1])], ref) for i in range(len(norm))]
    return frame["trial"].to_numpy(), np.array(hv)


def _objectives_of(study: str, storage: str, explicit: list[str] | None) -> list[str]:
    if explicit:
        return explicit
    import optuna

    try:
        return list(optuna.load_study(study_name=study, storage=optuna_storage(storage)).user_attrs["objectives"])
    except Exception as e:  # noqa: BLE001 - missing study or missing objectives attribute
        raise ConfigError(f"study: no Optuna study {study!r} with objectives in {storage} ({type(e).__name__}); "
                          "run `workbench sweep` first or pass --objectives") from None


def make_report(study: str, storage: str, objectives: list[str] | None = None,
                pairs: list[tuple[str, str]] | None = None, out_dir: Path | None = None) -> dict[str, Path]:
    """Write every figure and table for a study; returns their paths by name."""
    frame = Store(storage).frame(study)
    if frame.empty:
        raise ConfigError(f"study: no rows for {study!r} in {storage}; run `workbench sweep` first")
    objectives = _objectives_of(study, storage, objectives)
    ok = frame[frame["status"] == "ok"]
    ok = ok.dropna(subset=objectives).sort_values("trial").reset_index(drop=True) if set(objectives) <= set(ok) else ok[:0]
    if ok.empty:
        raise ConfigError(f"study: {study!r} has no successful trial to plot ({len(frame)} failed)")
    out = Path(out_dir or RESULTS / "figures" / study)
    out.mkdir(parents=True, exist_ok=True)
    baseline = _baseline_number(study, storage)
    pairs = pairs or list(itertools.combinations(objectives, 2))
    paths: dict[str, Path] = {}
    by_n = _by_image_count(ok)
    for x, y in pairs:
        for suffix, rows in by_n.items():  # quality at different N is never drawn on one front
            name = f"pareto_{x}_vs_{y}{suffix}"
            paths[name] = plot_pareto(rows, x, y, baseline, out / f"{name}.png", study)
    if len(ok) >= 1:
        paths["hypervolume"] = plot_hypervolume(ok, objectives, out / "hypervolume.png", study)
    importances = plot_importances(study, storage, objectives, out / "importances.png")
    if isinstance(importances, Path):
        paths["importances"] = importances
    else:
        _log.warning("no importances figure for %s: %s", study, importances)
    chosen = ([baseline] if baseline in set(ok["trial"]) else []) + [
        int(t) for t in ok[pareto_mask(losses(ok, objectives))].sort_values(objectives[0])["trial"] if t != baseline]
    grid = plot_image_grid(frame, chosen[:8], out / "images.png", study)
    if isinstance(grid, Path):
        paths["images"] = grid
    else:
        _log.warning("no image grid for %s: %s", study, grid)
    front = ok[pareto_mask(losses(ok, objectives))]
    knobs = [c for c in front.columns if c in _knob_columns(front)]
    shown = objectives + [c for c in ("latency_s", "fid", "kid", "cmmd", "clip_score", "align_mean")
                          if c in front.columns and c not in objectives]
    front = front.sort_values(objectives[0])
    table = front[["trial"] + knobs + shown + [c for c in front.columns if c in SPREAD_COLUMNS]]
    paths["pareto_csv"] = out / "pareto_set.csv"
    table.to_csv(paths["pareto_csv"], index=False)
    printed = front[["trial"] + knobs].copy()
    for metric in shown:
        printed[metric] = [with_spread(r, metric) for _, r in front.iterrows()]
    paths["pareto_md"] = out / "pareto_set.md"
    caption = (f"Pareto set of {study} ({len(front)} of {len(ok)} successful trials; {len(frame) - len(ok)} failed; "
               f"{_n_caption(ok)}). Spreads: {_spread_legend(shown)}.")
    paths["pareto_md"].write_text(markdown_table(printed, caption))
    paths["pareto_tex"] = out / "pareto_set.tex"
    paths["pareto_tex"].write_text(latex_table(printed, caption, f"tab:{study}-pareto"))
    from workbench.ablation import complete_ladders, ladder, write_ladder
    for trial in complete_ladders(study, storage):  # measured by `workbench ablate`; read back, never run here
        paths.update(write_ladder(ladder(study, trial, storage), out, objectives))
    return paths


def _image_counts(ok: pd.DataFrame) -> pd.Series:
    """Images per trial (the length of each row's seed list)."""
    from workbench.config import parse_seeds

    return ok["seeds"].map(lambda s: len(parse_seeds(s)))


def _by_image_count(ok: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows grouped by images per trial: {"": rows} for one N, {"_N16": ..., "_N64": ...} for several."""
    if "seeds" not in ok:
        return {"": ok}
    n = _image_counts(ok)
    if n.nunique() <= 1:
        return {"": ok}
    return {f"_N{k}": ok[n == k] for k in sorted(n.unique())}


def _n_caption(ok: pd.DataFrame) -> str:
    """How many images each trial measured: quality numbers compare only at equal N."""
    ns = sorted(_image_counts(ok).unique()) if "seeds" in ok else []
    return "N = " + ", ".join(f"{n:,}" for n in ns) + " images per trial" if ns else "N unknown"


def _spread_legend(metrics: list[str]) -> str:
    from workbench.metrics import SPREADS

    words = {"fid": "FID [95 % bootstrap interval]", "kid": "KID ± sd over subsets", "cmmd": "CMMD ± sd over subsets",
             "clip_score": "CLIP score ± standard error", "align_mean": "alignment [95 % interval]",
             "psnr": "PSNR ± standard error", "ssim": "SSIM ± standard error"}
    return "; ".join(words.get(m, m) for m in metrics if m in SPREADS) or "none"


def _knob_columns(frame: pd.DataFrame) -> list[str]:
    from dataclasses import fields

    from workbench.config import TrialConfig

    varying = [f.name for f in fields(TrialConfig) if f.name in frame and frame[f.name].nunique() > 1]
    return varying or ["scheduler", "steps"]


def _baseline_number(study: str, storage: str) -> int | None:
    import optuna

    try:
        trials = optuna.load_study(study_name=study, storage=optuna_storage(storage)).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - a store without an Optuna study: no baseline marker
        return None
    return next((t.number for t in trials if t.user_attrs.get("baseline")), None)


def plot_pareto(ok: pd.DataFrame, x: str, y: str, baseline: int | None, path: Path, study: str) -> Path:
    """All trials faint with their error bars, the 2-D Pareto front highlighted and connected, the baseline starred."""
    plt.rcParams.update(PAPER)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.7))
    xerr, yerr = _errors(ok, x), _errors(ok, y)
    ax.errorbar(ok[x], ok[y], xerr=xerr, yerr=yerr, fmt="o", ms=3, color="0.6", alpha=0.5, elinewidth=0.6,
                capsize=1.2, label="trials")
    front = ok[pareto_mask(losses(ok, [x, y]))].sort_values(x)
    ax.plot(front[x], front[y], "-", color="tab:red", lw=1.2, drawstyle=_staircase(x))
    ax.errorbar(front[x], front[y], xerr=_errors(front, x), yerr=_errors(front, y), fmt="o", ms=3.5,
                color="tab:red", elinewidth=0.8, capsize=1.5, label="Pareto front")
    lo, hi = ok[x].min(), ok[x].max()
    for _, r in front.iterrows():  # labels of the right-hand points go to their left, inside the axes
        left = hi > lo and (r[x] - lo) / (hi - lo) > 0.6
        ax.annotate(_short_label(r), (r[x], r[y]), fontsize=5, xytext=(-2 if left else 2, 2),
                    textcoords="offset points", ha="right" if left else "left")
    if baseline is not None and baseline in set(ok["trial"]):
        b = ok[ok["trial"] == baseline].iloc[0]
        ax.scatter([b[x]], [b[y]], marker="*", s=70, color="tab:blue", zorder=5, label="baseline")
    return _finish(fig, ax, x, y, f"{study}: {METRICS[y].label} vs {METRICS[x].label} ({_n_caption(ok)})", path)


def _staircase(x: str) -> str:
    """The front's drawstyle: the boundary of what the front's points reach, with x ascending.

    With x minimised, the value of a point holds from its x up to the next point's (steps-post); with x
    maximised, from the previous point's x up to its own (steps-pre). The y direction does not matter."""
    return "steps-post" if METRICS[x].better == "minimize" else "steps-pre"


def wrap(text: str, width_in: float, size: float = PAPER["axes.labelsize"]) -> str:
    """Text broken into lines that fit `width_in` inches at `size` points (a DejaVu Sans character averages
    ~0.55 em), so a long label wraps instead of widening a figure beyond its column."""
    return "\n".join(textwrap.wrap(text, max(12, int(width_in * 72 / (0.55 * size)))))


def _finish(fig, ax, x: str, y: str, title: str, path: Path) -> Path:
    """Axis labels with units and direction, title, grid and legend; then save in every format."""
    ax.set_xlabel(wrap(axis_label(x), COLUMN_IN - 0.6))
    ax.set_ylabel(wrap(axis_label(y), fig.get_figheight() - 0.5))
    ax.set_title(wrap(title, COLUMN_IN - 0.2, PAPER["axes.titlesize"]))
    ax.grid(alpha=0.3, lw=0.4)
    ax.legend()
    return save_figure(fig, path)


def _errors(frame: pd.DataFrame, metric: str):
    """A 2 x N array of (below, above) error bar lengths, or None where the metric has no spread."""
    bars = [error_bar(r, metric) for _, r in frame.iterrows()]
    if not any(bars):
        return None
    return np.array([b if b else (0.0, 0.0) for b in bars]).T


def _short_label(r) -> str:
    parts = [str(r.get("scheduler", ""))]
    if "steps" in r:
        parts.append(f"{int(r['steps'])} st")
    if "cfg_scale" in r:
        parts.append(f"cfg {r['cfg_scale']:.3g}")
    ratio = r.get("prune_ratio")
    if ratio and ratio == ratio:  # compression knobs, where the trial uses them (NaN: a study without them)
        parts.append(f"prune {ratio:g}")
    if isinstance(r.get("quant"), str) and r["quant"] != "none":
        parts.append(str(r["quant"]).upper() + (f" keep {r['quant_keep']:g}" if r.get("quant_keep") else ""))
    return " ".join(parts)


def plot_hypervolume(ok: pd.DataFrame, objectives: list[str], path: Path, study: str) -> Path:
    trials, hv = hypervolume_history(ok, objectives)
    plt.rcParams.update(PAPER)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.2))
    ax.plot(trials, hv, "-o", ms=2.5)
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (normalised) (↑ better)")
    ax.set_title(wrap(f"{study}: hypervolume of {', '.join(objectives)} ({_n_caption(ok)})", COLUMN_IN - 0.2))
    ax.grid(alpha=0.3, lw=0.4)
    return save_figure(fig, path)


def plot_importances(study: str, storage: str, objectives: list[str], path: Path) -> Path | str:
    """Optuna's parameter importances (fANOVA, seeded) for each objective, one panel each; or why there are none.

    An objective with one value over all trials (e.g. alignment 1.0 everywhere) has no variance for fANOVA to
    apportion: its panel says so instead of bars, and the reason is logged."""
    import optuna

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
    from PIL import Image

    from workbench.storages import project_root

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
                ax.set_ylabel(f"#{trial}\n{_short_label(rows.loc[trial])}", fontsize=5)
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
    ns = {name: _n_caption(ok) for name, ok in frames.items()}
    if len(set(ns.values())) > 1:
        raise ConfigError("compare: the studies measured different N (" + "; ".join(f"{k}: {v}" for k, v in ns.items())
                          + "); quality compares only at equal N")
    plt.rcParams.update(PAPER)
    fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.7))
    for i, (name, ok) in enumerate(frames.items()):
        colour = f"C{i}"
        ax.errorbar(ok[x], ok[y], xerr=_errors(ok, x), yerr=_errors(ok, y), fmt="o", ms=2.5, color=colour,
                    alpha=0.35, elinewidth=0.5, capsize=1)
        front = ok[pareto_mask(losses(ok, [x, y]))].sort_values(x)
        ax.plot(front[x], front[y], "-o", ms=3, color=colour, drawstyle=_staircase(x),
                label=f"{name} ({len(ok)} trials)")
    return _finish(fig, ax, x, y, f"{METRICS[y].label} vs {METRICS[x].label} ({next(iter(ns.values()))})", path)


def latex_table(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule) with the caption above, ready for \\input."""
    def tex(v) -> str:
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("Δ", r"$\Delta$")):
            text = text.replace(a, b)
        return text

    rows = [" & ".join(tex(c) for c in frame.columns) + r" \\"]
    rows += [" & ".join(tex(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{tex(caption)}}}",
                      f"\\label{{{label}}}", r"\begin{tabular}{" + "l" * len(frame.columns) + "}", r"\toprule",
                      rows[0], r"\midrule", *rows[1:], r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def markdown_table(frame: pd.DataFrame, caption: str) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(frame.columns) + " |\n|" + "---|" * len(frame.columns) + "\n"
    body = "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in frame.itertuples(index=False))
    return f"{caption}\n\n{head}{body}"
