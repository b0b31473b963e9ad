"""The ablation ladder of a trial: from the baseline, add the trial's knobs one at a time and measure every rung.

    workbench ablate experiments/quickstart.yaml --trial 5     # runs missing rungs, then draws the ladder

Each rung is a real trial run into the study `<study>-ablation` of the same store (a rung already there, with the
same configuration, is not run again), so speed-up and quality change at every rung are measured, never
interpolated. `ladder` reads the rungs back from the store; `workbench.report.ablation` draws them, and
`workbench report` draws the ladder of every trial whose rungs are all there.
"""
from __future__ import annotations

from dataclasses import fields

import pandas as pd

from workbench import paths
from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.metrics import QUALITY
from workbench.study.executors import EXECUTORS, close
from workbench.study.store import Store
from workbench.study.studies import baseline_number, folder


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


def _source(study: str, trial: int, storage: str, flag: str = "--trial") -> tuple[TrialConfig, TrialConfig, int]:
    """(baseline config, trial config, baseline trial number) of a study's trial, from the store; `flag` is the
    command-line option that named the trial (its errors name it)."""
    store = Store(storage)
    frame = store.frame(study)
    if frame.empty:
        raise ConfigError(f"study: no rows for {study!r} in {storage}; run `workbench sweep` first")
    base = baseline_number(study, storage, frame)
    if base is None:
        raise ConfigError(f"study: {study!r} has no baseline trial to start the ladder from")
    rows = {r["trial_number"]: r for r in store.rows(study)}
    if trial not in rows:
        raise ConfigError(f"{flag}: study {study!r} has no trial {trial}; its trials: {', '.join(map(str, rows))}")
    if rows[trial]["status"] != "ok":
        raise ConfigError(f"{flag}: trial {trial} of {study!r} failed ({rows[trial]['reason']}); pick a "
                          "successful one")
    if base not in rows or rows[base]["status"] != "ok":
        raise ConfigError(f"study: the baseline trial {base} of {study!r} has no successful row")
    return TrialConfig.from_dict(rows[base]["config"]), TrialConfig.from_dict(rows[trial]["config"]), base


def run_ladder(study: str, trial: int, storage: str, executor: str = "inprocess", timeout_s: int = 600,
               echo=print) -> pd.DataFrame:
    """Run the rungs of `trial` that `<study>-ablation` does not hold yet, then return the ladder."""
    baseline, target, _ = _source(study, trial, storage)
    ladder_study = study_name(study)
    store = Store(storage)
    steps = rungs(baseline, target)
    base_images = None
    out = folder(ladder_study, storage)
    try:
        for i, (label, cfg) in enumerate(steps):
            found = _find(store.rows(ladder_study), cfg)
            if found is None:
                number = max((r["trial_number"] for r in store.rows(ladder_study)), default=-1) + 1
                echo(f"rung {i} ({label}): running as trial {number} of {ladder_study!r}")
                EXECUTORS[executor](cfg.to_dict(), storage=storage, study=ladder_study, trial_number=number,
                                    baseline_dir=base_images, timeout_s=timeout_s,
                                    artifacts_dir=paths.artifacts(out, number))
                found = next(iter(store.rows(ladder_study, number)), None)
                if found is None or found["status"] != "ok":
                    reason = found["reason"] if found else "no row written"
                    raise ConfigError(f"ablation: rung {i} ({label}) failed: {reason}")
            else:
                echo(f"rung {i} ({label}): trial {found['trial_number']} of {ladder_study!r} (already measured)")
            if i == 0:
                base_images = found["artifacts"].get("images")
    finally:
        close()  # the warm executor's waiting kernel
    return ladder(study, trial, storage)


def _find(rows: list[dict], cfg: TrialConfig) -> dict | None:
    want = cfg.to_dict()
    return next((r for r in rows if r["status"] == "ok" and r["config"] == want), None)


def ladder(study: str, trial: int, storage: str, flag: str = "--trial") -> pd.DataFrame:
    """The ladder read from the store: one row per rung with its trial, latency, speed-up and quality metrics.

    Raises one line naming the first rung not measured yet (run `workbench ablate` for it)."""
    baseline, target, _ = _source(study, trial, storage, flag)
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


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
