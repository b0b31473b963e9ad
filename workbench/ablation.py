"""The ablation ladder of a trial: from the baseline, add the trial's knobs one at a time and measure every rung.

    workbench ablate experiments/quickstart.yaml --trial 5     # runs missing rungs, then draws the ladder

Each rung is a real trial run into the study `<study>-ablation` of the same store (a rung already there, with the
same configuration, is not run again), so speed-up and quality change at every rung are measured, never
interpolated. The figure and table read the rungs back from the store; `workbench report` draws the ladder of
every trial whose rungs are all there.
"""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.metrics import METRICS, error_bar, with_spread
from workbench.store import Store

QUALITY = ("fid", "kid", "cmmd", "clip_score", "align_mean", "psnr", "ssim")


def study_name(study: str) -> str:
    """Where a study's rungs go: `<study>-ablation`, in the same store."""
    return f"{study}-ablation"


def rungs(baseline: TrialConfig, target: TrialConfig, order: list[str] | None = None) -> list[tuple[str, TrialConfig]]:
    """(label, config) from the baseline to the target, one knob added per rung in TrialConfig's field order.

    A knob that is not valid alone on its rung (e.g. recovery_steps before prune_ratio) joins the next knob's rung."""
    base, goal = baseline.to_dict(), target.to_dict()
    changed = [k for k in (order or [f.name for f in fields(TrialConfig)]) if base[k] != goal[k]]
    out = [("baseline", baseline)]
    values, pending = dict(base), []
    for name in changed:
        values[name] = goal[name]
        pending.append(name)
        try:
            cfg = TrialConfig.from_dict(values, where="ablation")
        except ConfigError:
            continue  # not valid on its own: add the next knob with it
        out.append(("+ " + ", ".join(f"{k}={_fmt(goal[k])}" for k in pending), cfg))
        pending = []
    if pending:
        TrialConfig.from_dict(values, where="ablation")  # raises the reason the last knobs never became valid
    return out


def _source(study: str, trial: int, storage: str) -> tuple[TrialConfig, TrialConfig, int]:
    """(baseline config, trial config, baseline trial number) of a study's trial, from the store."""
    from workbench.browse import baseline_number

    store = Store(storage)
    frame = store.frame(study)
    if frame.empty:
        raise ConfigError(f"study: no rows for {study!r} in {storage}; run `workbench sweep` first")
    base = baseline_number(study, storage, frame)
    if base is None:
        raise ConfigError(f"study: {study!r} has no baseline trial to start the ladder from")
    rows = {r["trial_number"]: r for r in store.rows(study)}
    if trial not in rows:
        raise ConfigError(f"--trial: study {study!r} has no trial {trial}; its trials: {', '.join(map(str, rows))}")
    if rows[trial]["status"] != "ok":
        raise ConfigError(f"--trial: trial {trial} of {study!r} failed ({rows[trial]['reason']}); pick a "
                          "successful one")
    if base not in rows or rows[base]["status"] != "ok":
        raise ConfigError(f"study: the baseline trial {base} of {study!r} has no successful row")
    return TrialConfig.from_dict(rows[base]["config"]), TrialConfig.from_dict(rows[trial]["config"]), base


def run_ladder(study: str, trial: int, storage: str, executor: str = "inprocess", timeout_s: int = 600,
               echo=print) -> pd.DataFrame:
    """Run the rungs of `trial` that `<study>-ablation` does not hold yet, then return the ladder."""
    from workbench.executors import EXECUTORS
    from workbench.trial import RESULTS

    baseline, target, _ = _source(study, trial, storage)
    ladder_study = study_name(study)
    store = Store(storage)
    steps = rungs(baseline, target)
    base_images = None
    for i, (label, cfg) in enumerate(steps):
        found = _find(store.rows(ladder_study), cfg)
        if found is None:
            number = max((r["trial_number"] for r in store.rows(ladder_study)), default=-1) + 1
            echo(f"rung {i} ({label}): running as trial {number} of {ladder_study!r}")
            EXECUTORS[executor](cfg.to_dict(), storage=storage, study=ladder_study, trial_number=number,
                                baseline_dir=base_images, timeout_s=timeout_s,
                                artifacts_dir=RESULTS / "artifacts" / ladder_study / f"trial-{number:04d}")
            found = next(iter(store.rows(ladder_study, number)), None)
            if found is None or found["status"] != "ok":
                reason = found["reason"] if found else "no row written"
                raise ConfigError(f"ablation: rung {i} ({label}) failed: {reason}")
        else:
            echo(f"rung {i} ({label}): trial {found['trial_number']} of {ladder_study!r} (already measured)")
        if i == 0:
            base_images = found["artifacts"].get("images")
    return ladder(study, trial, storage)


def _find(rows: list[dict], cfg: TrialConfig) -> dict | None:
    want = cfg.to_dict()
    return next((r for r in rows if r["status"] == "ok" and r["config"] == want), None)


def ladder(study: str, trial: int, storage: str) -> pd.DataFrame:
    """The ladder read from the store: one row per rung with its trial, latency, speed-up and quality metrics.

    Raises one line naming the first rung not measured yet (run `workbench ablate` for it)."""
    baseline, target, _ = _source(study, trial, storage)
    rows = Store(storage).rows(study_name(study))
    records = []
    for i, (label, cfg) in enumerate(rungs(baseline, target)):
        found = _find(rows, cfg)
        if found is None:
            raise ConfigError(f"ablation: rung {i} ({label}) of trial {trial} is not in {study_name(study)!r}; run "
                              f"`workbench ablate {study} --trial {trial}`")
        records.append({"rung": i, "added": label, "trial": found["trial_number"], "images": len(cfg.seed_list),
                        **found["metrics"]})
    frame = pd.DataFrame.from_records(records)
    frame["speedup"] = frame["latency_s"].iloc[0] / frame["latency_s"]
    for m in QUALITY:
        if m in frame:
            frame[f"delta_{m}"] = frame[m] - frame[m].iloc[0]
    frame.attrs.update(study=study, trial=trial)
    return frame


def complete_ladders(study: str, storage: str) -> list[int]:
    """Trials of `study` whose every rung is in `<study>-ablation` (what `workbench report` draws).

    Left out: the baseline (a ladder of one rung) and a trial whose ladder is the first rungs of another's (e.g.
    a trial that only changed the scheduler, when a trial that changed scheduler and steps was ablated)."""
    store = Store(storage)
    ablated = [r for r in store.rows(study_name(study)) if r["status"] == "ok"]
    if not ablated:
        return []
    complete = {}
    for row in store.rows(study):
        if row["status"] == "ok" and _find(ablated, TrialConfig.from_dict(row["config"])) is not None:
            try:
                complete[row["trial_number"]] = list(ladder(study, row["trial_number"], storage)["trial"])
            except ConfigError:
                continue
    return [t for t, steps in complete.items() if len(steps) > 1 and not any(
        len(other) > len(steps) and other[:len(steps)] == steps for other in complete.values())]


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
    import matplotlib.pyplot as plt

    from workbench.report import COLUMN_IN, PAPER, save_figure, wrap

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
    from workbench.report import latex_table, markdown_table

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


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
