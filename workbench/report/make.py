"""Every figure and table of a study from the store: `workbench report` and the report notebook call this.

    workbench report experiments/quickstart.yaml      # or a study name

Reads rows and draws; imports neither torch nor diffusers (a finished study reports in seconds).
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path

from workbench import paths
from workbench.errors import ConfigError
from workbench.metrics import SPREAD_COLUMNS, with_spread
from workbench.report.ablation import write_ladder
from workbench.report.figures import plot_hypervolume, plot_image_grid, plot_importances, plot_pareto
from workbench.report.front import losses, pareto_mask
from workbench.report.tables import by_image_count, knob_columns, latex_table, markdown_table, n_caption, spread_legend
from workbench.study.ablation import complete_ladders, ladder
from workbench.study.store import Store
from workbench.study.studies import baseline_number, objectives as study_objectives

_log = logging.getLogger("workbench.report")


def make_report(study: str, storage: str, objectives: list[str] | None = None,
                pairs: list[tuple[str, str]] | None = None, out_dir: Path | None = None) -> dict[str, Path]:
    """Write every figure and table for a study; returns their paths by name."""
    frame = Store(storage).frame(study)
    if frame.empty:
        raise ConfigError(f"study: no rows for {study!r} in {storage}; run `workbench sweep` first")
    objectives = study_objectives(study, storage, objectives)
    ok = frame[frame["status"] == "ok"]
    ok = ok.dropna(subset=objectives).sort_values("trial").reset_index(drop=True) if set(objectives) <= set(ok) else ok[:0]
    if ok.empty:
        raise ConfigError(f"study: {study!r} has no successful trial to plot ({len(frame)} failed)")
    out = Path(out_dir or paths.figures(study))
    out.mkdir(parents=True, exist_ok=True)
    baseline = baseline_number(study, storage)
    pairs = pairs or list(itertools.combinations(objectives, 2))
    written: dict[str, Path] = {}
    by_n = by_image_count(ok)
    for x, y in pairs:
        for suffix, rows in by_n.items():  # quality at different N is never drawn on one front
            name = f"pareto_{x}_vs_{y}{suffix}"
            written[name] = plot_pareto(rows, x, y, baseline, out / f"{name}.png", study)
    if len(ok) >= 1:
        written["hypervolume"] = plot_hypervolume(ok, objectives, out / "hypervolume.png", study)
    importances = plot_importances(study, storage, objectives, out / "importances.png")
    if isinstance(importances, Path):
        written["importances"] = importances
    else:
        _log.warning("no importances figure for %s: %s", study, importances)
    chosen = ([baseline] if baseline in set(ok["trial"]) else []) + [
        int(t) for t in ok[pareto_mask(losses(ok, objectives))].sort_values(objectives[0])["trial"] if t != baseline]
    grid = plot_image_grid(frame, chosen[:8], out / "images.png", study)
    if isinstance(grid, Path):
        written["images"] = grid
    else:
        _log.warning("no image grid for %s: %s", study, grid)
    front = ok[pareto_mask(losses(ok, objectives))]
    knobs = [c for c in front.columns if c in knob_columns(front)]
    shown = objectives + [c for c in ("latency_s", "fid", "kid", "cmmd", "clip_score", "align_mean")
                          if c in front.columns and c not in objectives]
    front = front.sort_values(objectives[0])
    table = front[["trial"] + knobs + shown + [c for c in front.columns if c in SPREAD_COLUMNS]]
    written["pareto_csv"] = out / "pareto_set.csv"
    table.to_csv(written["pareto_csv"], index=False)
    printed = front[["trial"] + knobs].copy()
    for metric in shown:
        printed[metric] = [with_spread(r, metric) for _, r in front.iterrows()]
    written["pareto_md"] = out / "pareto_set.md"
    caption = (f"Pareto set of {study} ({len(front)} of {len(ok)} successful trials; {len(frame) - len(ok)} failed; "
               f"{n_caption(ok)}). Spreads: {spread_legend(shown)}.")
    written["pareto_md"].write_text(markdown_table(printed, caption))
    written["pareto_tex"] = out / "pareto_set.tex"
    written["pareto_tex"].write_text(latex_table(printed, caption, f"tab:{study}-pareto"))
    for trial in complete_ladders(study, storage):  # measured by `workbench ablate`; read back, never run here
        written.update(write_ladder(ladder(study, trial, storage), out, objectives))
    return written
