"""Every figure and table of a study from the store: `workbench report` and the report notebook call this.

    workbench report experiments/quickstart.yaml      # or a study name

Reads rows and draws; imports neither torch nor diffusers. A report is redrawn only when its inputs changed (the
study's rows and ablation rungs, objectives, pairs, this package's code): `report.json` beside the figures records
them, so reporting a finished study again costs a read of the store (`force=True` redraws).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
from pathlib import Path

import matplotlib

from workbench import paths
from workbench.errors import ConfigError
from workbench.metrics import SPREAD_COLUMNS, with_spread
from workbench.report.ablation import write_ladder
from workbench.report.confirm import pareto_columns, write_confirm
from workbench.report.figures import plot_hypervolume, plot_image_grid, plot_importances, plot_pareto
from workbench.report.front import losses, pareto_mask
from workbench.report.tables import by_image_count, knob_columns, latex_table, markdown_table, n_caption, spread_legend
from workbench.study.ablation import complete_ladders, ladder, study_name
from workbench.study.confirm import study_name as confirm_name
from workbench.study.store import Store
from workbench.study.studies import baseline_number, folder, objectives as study_objectives

_log = logging.getLogger("workbench.report")


def _digest(store: Store, study: str, objectives: list[str], pairs) -> str:
    """What the report is drawn from: every row of the study, its ablation and its confirmation (their write
    times), the objectives and pairs asked for, the code of this package and matplotlib's version."""
    rows = [(r["study"], r["trial_number"], r["status"], r["written_at"])
            for s in (study, study_name(study), confirm_name(study)) for r in store.rows(s)]
    code = sorted((f.name, f.read_bytes()) for f in Path(__file__).parent.glob("*.py"))
    blob = json.dumps([rows, objectives, pairs, matplotlib.__version__, [(n, hashlib.sha256(b).hexdigest())
                                                                         for n, b in code]], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_report(study: str, storage: str, objectives: list[str] | None = None,
                pairs: list[tuple[str, str]] | None = None, out_dir: Path | None = None,
                force: bool = False) -> dict[str, Path]:
    """Write every figure and table for a study (unless they are there and their inputs unchanged); returns their
    paths by name."""
    store = Store(storage)
    frame = store.frame(study)
    if frame.empty:
        raise ConfigError(f"study: no rows for {study!r} in {storage}; run `workbench sweep` first")
    objectives = study_objectives(study, storage, objectives)
    ok = frame[frame["status"] == "ok"]
    ok = ok.dropna(subset=objectives).sort_values("trial").reset_index(drop=True) if set(objectives) <= set(ok) else ok[:0]
    if ok.empty:
        raise ConfigError(f"study: {study!r} has no successful trial to plot ({len(frame)} failed)")
    out = Path(out_dir or paths.figures(folder(study, storage)))
    out.mkdir(parents=True, exist_ok=True)
    digest, record = _digest(store, study, objectives, pairs), out / "report.json"
    if not force and record.is_file():
        before = json.loads(record.read_text())
        kept = {name: Path(p) for name, p in before.get("paths", {}).items()}
        if before.get("digest") == digest and kept and all(p.is_file() for p in kept.values()):
            _log.info("report of %s: inputs unchanged since %s, figures kept", study, record)
            return kept
    written = _draw(study, storage, frame, ok, objectives, pairs, out)
    record.write_text(json.dumps({"digest": digest, "paths": {k: str(v) for k, v in written.items()}}, indent=1))
    return written


def _draw(study: str, storage: str, frame, ok, objectives: list[str], pairs, out: Path) -> dict[str, Path]:
    """Every figure and table, drawn now."""
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
    confirmed = pareto_columns(study, storage, front)  # `workbench confirm`'s columns, when it has run
    written["pareto_csv"] = out / "pareto_set.csv"
    table.join(confirmed).to_csv(written["pareto_csv"], index=False)
    printed = front[["trial"] + knobs].copy()
    for metric in shown:
        printed[metric] = [with_spread(r, metric) for _, r in front.iterrows()]
    printed = printed.join(confirmed)
    written["pareto_md"] = out / "pareto_set.md"
    caption = (f"Pareto set of {study} ({len(front)} of {len(ok)} successful trials; {len(frame) - len(ok)} failed; "
               f"{n_caption(ok)}). Spreads: {spread_legend(shown)}." + (
                   " Confirmed columns: `workbench confirm` on held-out seeds, the speed-up from interleaved rounds "
                   "and Δ from paired bootstrap, each with its 95 % interval (confirm.md)." if len(confirmed.columns)
                   else ""))
    written["pareto_md"].write_text(markdown_table(printed, caption))
    written["pareto_tex"] = out / "pareto_set.tex"
    written["pareto_tex"].write_text(latex_table(printed, caption, f"tab:{study}-pareto"))
    written.update(write_confirm(study, storage, ok, baseline, out))
    for trial in complete_ladders(study, storage):  # measured by `workbench ablate`; read back, never run here
        written.update(write_ladder(ladder(study, trial, storage), out, objectives))
    return written
