"""Confirmation: a sweep's Pareto set measured again on held-out seeds at a larger N, every point against the baseline.

    workbench confirm experiments/quickstart.yaml            # the Pareto set; --trials 3,7 for chosen trials

A sweep keeps the best of many noisy trials, so its front leans toward lucky draws, and a latency timed once on a
shared machine moves by several per cent with the load. Confirming a point (docs/methodology.md):

1. quality: the point and the baseline run again as trials of `<study>-confirm` (under their sweep trial numbers)
   on the first `n` seeds above every seed the sweep's rows used, through the experiment's executor, each keeping
   its per-image quality evidence (`per_image`);
2. speed: both pipelines built once in this process and warmed up, then timed on the same batches in `rounds`
   rounds of alternating order (A B, B A, ...); the speed-up is the median of the per-round ratios with its
   order-statistic 95 % interval (`workbench.measure.spread.median_interval`);
3. quality differences: paired bootstrap over image indices (`workbench.measure.paired`);
4. a verdict against the tolerances the experiment states (`confirm:` in its YAML).

The baseline is confirmed against a second build of itself, the A/A control: its verdict must be "not resolved".
Trials and timings already stored are never run again; changed tolerances only recompute the verdicts. Timing
runs in this process whatever the executor, because candidate and baseline must share one process, one device and
one warm state; the quality trials go through the executor (papermill or in-process).
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from tqdm.auto import tqdm

from workbench import paths
from workbench.config import TrialConfig, parse_seeds
from workbench.errors import ConfigError, did_you_mean
from workbench.measure.spread import median_interval, median_rounds_needed
from workbench.metrics import METRICS, PAIRED, QUALITY
from workbench.study.executors import EXECUTORS
from workbench.study.storages import optuna_storage
from workbench.study.store import Store
from workbench.study.studies import baseline_number, folder

FASTER_EQUAL = "confirmed faster at equal quality"
TRADE_OFF = "confirmed trade-off"
SLOWER = "confirmed slower"
NOT_RESOLVED = "not resolved"
KEYS = ("n", "rounds", "speedup", "tolerance")


@dataclass(frozen=True)
class Settings:
    """How a confirmation measures and judges (the experiment's `confirm:` block)."""
    n: int = 256             # images per trial on the held-out seeds (the sweep's quickstart uses 32)
    rounds: int = 10         # interleaved timing rounds per point (a 95 % interval of their median needs 6)
    speedup: float = 1.05    # a point is faster only if its speed-up interval lies above this
    tolerance: dict = field(default_factory=dict)  # metric -> how much worse still counts as equal quality

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def parse_settings(data, objectives: list[str] | tuple = ()) -> Settings:
    """The `confirm:` block of an experiment, validated (one line naming the field); without tolerances, every
    quality objective gets tolerance 0 (equal quality then means: not worse, at 95 %)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("confirm: write a mapping, e.g. confirm: {n: 256, rounds: 10, tolerance: {fid: 5}}")
    for key in data:
        if key not in KEYS:
            raise ConfigError(f"confirm.{key}: unknown key" + did_you_mean(str(key), KEYS))
    n, rounds, speedup = data.get("n", Settings.n), data.get("rounds", Settings.rounds), data.get("speedup",
                                                                                                   Settings.speedup)
    check_counts(n, rounds, "confirm.")
    if isinstance(speedup, bool) or not isinstance(speedup, (int, float)) or speedup < 1:
        raise ConfigError(f"confirm.speedup: the smallest speed-up worth claiming, a number >= 1 (e.g. 1.05), "
                          f"got {speedup!r}")
    tolerance = data.get("tolerance")
    if tolerance is None:
        tolerance = {m: 0.0 for m in objectives if m in PAIRED}
    if not isinstance(tolerance, dict):
        raise ConfigError("confirm.tolerance: write a mapping of metric: how much worse still counts as equal, "
                          "e.g. {fid: 5, align_mean: 0.05}")
    for metric, value in tolerance.items():
        if metric not in PAIRED:
            hint = did_you_mean(str(metric), PAIRED) or f"; one of {', '.join(PAIRED)}"
            raise ConfigError(f"confirm.tolerance.{metric}: not a metric confirm compares pairwise" + hint)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"confirm.tolerance.{metric}: how much worse still counts as equal, a number >= 0 in "
                              f"{METRICS[metric].label} units, got {value!r}")
    return Settings(n=n, rounds=rounds, speedup=float(speedup), tolerance={k: float(v) for k, v in tolerance.items()})


def check_counts(n, rounds, where: str = "--") -> None:
    """Images and rounds: whole numbers large enough for the intervals confirm reports."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 4:
        raise ConfigError(f"{where}n: images per trial, a whole number >= 4 (FID, KID and CMMD need 4), got {n!r}")
    need = median_rounds_needed()
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < need:
        raise ConfigError(f"{where}rounds: timing rounds, a whole number >= {need} (a 95 % interval of a median "
                          f"needs {need}), got {rounds!r}")


def study_name(study: str) -> str:
    """Where a study's confirmation goes: `<study>-confirm`, in the same store."""
    return f"{study}-confirm"


def held_out_seeds(rows: list[dict], n: int) -> str:
    """The first n seeds above every seed any row of the sweep used: disjoint from the sweep's by construction."""
    used = [s for r in rows for s in parse_seeds(r["config"].get("seeds", "0"))]
    first = max(used, default=-1) + 1
    return f"{first}-{first + n - 1}"


@dataclass(frozen=True)
class Point:
    """A sweep trial to confirm: its number (the same in `<study>-confirm`) and its configuration on the held-out
    seeds, keeping per-image evidence."""
    trial: int
    config: TrialConfig


def pareto_set(study: str, storage: str) -> list[int]:
    """The sweep's Pareto set as Optuna keeps it (`study.best_trials`, feasible trials only)."""
    try:
        loaded = optuna.load_study(study_name=study, storage=optuna_storage(storage))
    except KeyError:
        raise ConfigError(f"study: {study!r} is not an Optuna study in {storage}; name the trials with --trials") \
            from None
    return sorted(t.number for t in loaded.best_trials)


def plan(study: str, storage: str, settings: Settings, trials: list[int] | None = None,
         baseline: int | None = None) -> tuple[Point, list[Point]]:
    """(baseline, points to confirm: the baseline first, as its own A/A control); every check before any work.
    `baseline` names the anchor where the study has no Optuna baseline (an ablation ladder's first rung)."""
    rows = {r["trial_number"]: r for r in Store(storage).rows(study)}
    if not rows:
        raise ConfigError(f"study: no rows for {study!r} in {storage}; run `workbench sweep` first")
    base = baseline if baseline is not None else baseline_number(study, storage)
    if base is None or base not in rows or rows[base]["status"] != "ok":
        raise ConfigError(f"study: {study!r} has no successful baseline trial to confirm against")
    chosen = pareto_set(study, storage) if trials is None else trials
    for number in chosen:
        if number not in rows:
            raise ConfigError(f"--trials: study {study!r} has no trial {number}; its trials: "
                              f"{', '.join(map(str, sorted(rows)))}")
        if rows[number]["status"] != "ok":
            raise ConfigError(f"--trials: trial {number} of {study!r} failed ({rows[number]['reason']}); pick a "
                              "successful one")
    seeds = held_out_seeds(list(rows.values()), settings.n)

    def point(number: int) -> Point:
        return Point(number, TrialConfig.from_dict({**rows[number]["config"], "seeds": seeds, "per_image": True},
                                                   where=f"trial {number}"))

    return point(base), [point(t) for t in sorted({base, *chosen})]


def run_confirm(study: str, storage: str, settings: Settings, trials: list[int] | None = None,
                executor: str = "inprocess", timeout_s: int = 1800, echo=print, progress: bool = True,
                baseline: int | None = None) -> pd.DataFrame:
    """Measure what `<study>-confirm` does not hold yet (quality trials, then interleaved timing and paired
    differences), judge every point, and return `results`. An ablation ladder is confirmed as the study
    `<study>-ablation` with its rungs as `trials` and its first rung as `baseline`."""
    base, points = plan(study, storage, settings, trials, baseline)
    echo = tqdm.write if progress else echo  # lines above the progress bars, not through them
    target, store = study_name(study), Store(storage)
    seeds = base.config.seeds
    echo(f"confirming {len(points)} point(s) of {study!r} into {target!r}: N = {settings.n} on held-out seeds "
         f"{seeds} (the sweep used seeds up to {parse_seeds(seeds)[0] - 1}), {settings.rounds} interleaved rounds")
    measured: dict[int, dict] = {}
    first = [base] + [p for p in points if p.trial != base.trial]  # the others' fidelity needs the baseline's images
    for p in tqdm(first, desc="quality trials", unit="trial", disable=not progress, leave=False):
        row = _stored(store, target, p)
        if row is None:
            echo(f"#{p.trial}: {settings.n} images on the held-out seeds, trial {p.trial} of {target!r}")
            images = None if p.trial == base.trial else measured[base.trial]["artifacts"]["images"]
            EXECUTORS[executor](p.config.to_dict(), storage=storage, study=target, trial_number=p.trial,
                                baseline_dir=images, artifacts_dir=paths.artifacts(folder(target, storage), p.trial),
                                timeout_s=timeout_s)
            row = next(iter(store.rows(target, p.trial)), None)
            if row is None or row["status"] != "ok":
                raise ConfigError(f"confirm: trial {p.trial} failed on the held-out seeds: "
                                  f"{row['reason'] if row else 'no row written'}")
        measured[p.trial] = row
    anchor = _identity(measured[base.trial])
    todo = []
    for p in points:
        entry = measured[p.trial]["protocols"].get("confirm")
        if entry and entry.get("rounds") == settings.rounds and entry.get("baseline_measured") == anchor:
            judged = verdict(entry, settings)
            if (entry["verdict"], entry["reason"]) != judged or entry["settings"] != _as_dict(settings):
                entry.update(verdict=judged[0], reason=judged[1], settings=_as_dict(settings))
                store.write(target, p.trial, measured[p.trial])  # tolerances changed: nothing is measured again
        else:
            todo.append(p)
    if todo:
        _time_and_compare(base, todo, measured, settings, store, target, anchor, echo, progress)
    return results(study, storage)


def _stored(store: Store, target: str, p: Point) -> dict | None:
    """The point's quality trial if `<study>-confirm` holds it with this configuration (else it is measured)."""
    row = next(iter(store.rows(target, p.trial)), None)
    return row if row and row["status"] == "ok" and row["config"] == p.config.to_dict() else None


def _identity(row: dict) -> list:
    """Which measurement of the baseline a comparison was made against (a re-measured baseline voids it)."""
    return [row["config"]["seeds"], row["timings"].get("total_s")]


def _as_dict(settings: Settings) -> dict:
    return dataclasses.asdict(settings)


def _resolve(path: str) -> Path:
    """A row's artifact path: as written, or from the project root (a sweep's relative paths)."""
    return Path(path) if Path(path).exists() else paths.project_root() / path


def _time_and_compare(base: Point, todo: list[Point], measured: dict, settings: Settings, store: Store,
                      target: str, anchor: list, echo, progress: bool) -> None:
    """Time every point against the baseline in interleaved rounds, compare their images pairwise, write the
    verdict into the point's row of `<study>-confirm`."""
    import torch

    from workbench.measure import cost, paired, quality  # heavy: torch (only when something is measured)
    from workbench.models import resolve_device  # heavy: torch, diffusers
    from workbench.trial import build_pipeline, plan as trial_plan, generate  # heavy: torch, diffusers

    device = resolve_device(base.config.device)
    reference = quality.fid_reference(base.config, settings.n)
    evidence_b = _evidence(measured[base.trial])
    real = None
    if evidence_b is not None and not isinstance(reference, str):
        real = quality.reference_evidence(base.config, reference, settings.n, device, paths.fid_reference())
    base_pipe, _ = build_pipeline(base.config, device)
    base_work = trial_plan(base.config, base_pipe)

    def caller(pipe, cfg, work):
        full = [b for b in work.batches if len(b) == len(work.batches[0])]

        def call(r: int) -> None:
            idx = full[r % len(full)]
            generate(pipe, cfg, [work.prompts[i] for i in idx], [work.seeds[i] for i in idx], work.resolution, device)
        call.images = [len(full[r % len(full)]) for r in range(settings.rounds)]
        return call

    for p in todo:
        label = "the baseline against a second build of itself (A/A)" if p.trial == base.trial else "the baseline"
        echo(f"#{p.trial}: timing against {label}, {settings.rounds} interleaved rounds")
        pipe, _ = build_pipeline(p.config, device)  # for the A/A control a second, separate build
        calls = [caller(pipe, p.config, trial_plan(p.config, pipe)), caller(base_pipe, base.config, base_work)]
        for call in calls:  # one warm-up batch each, never timed
            call(0)
        with tqdm(total=settings.rounds, desc=f"timing #{p.trial}", unit="round", disable=not progress,
                  leave=False) as bar:
            times = cost.interleaved(calls, settings.rounds, device, progress=bar.update)
        pipe = None
        per_image = np.array([[t / calls[i].images[r] for i, t in enumerate(row)] for r, row in enumerate(times)])
        ratios = per_image[:, 1] / per_image[:, 0]
        lo, hi = median_interval(ratios)
        row = measured[p.trial]
        evidence = _evidence(row)
        if real is None or evidence is None:
            deltas, why = {}, (reference if isinstance(reference, str) else "quality not measured (quality: false)")
        else:
            deltas, why = paired.compare(evidence, evidence_b, *real), None
        entry = {"against": base.trial, "baseline_measured": anchor, "n": settings.n, "seeds": p.config.seeds,
                 "rounds": settings.rounds, "order": "candidate first in even rounds, baseline first in odd ones",
                 "per_round_s_per_image": per_image.tolist(), "ratios": ratios.tolist(),
                 "speedup": {"median": float(np.median(ratios)), "lo": lo, "hi": hi,
                             "spread": "95 % order-statistic interval of the median of per-round ratios"},
                 "latency_interleaved_s": float(np.median(per_image[:, 0])),
                 "baseline_latency_interleaved_s": float(np.median(per_image[:, 1])),
                 "deltas": deltas, "deltas_absent": why, "resamples": paired.RESAMPLES,
                 "delta_spread": "95 % paired bootstrap interval over image indices (same seeds and prompts)",
                 "load": list(os.getloadavg()), "timed_at": time.time(), "device": str(device),
                 "threads": torch.get_num_threads(),
                 "settings": _as_dict(settings)}
        entry["verdict"], entry["reason"] = verdict(entry, settings)
        row["metrics"].update(speedup=entry["speedup"]["median"], speedup_lo=lo, speedup_hi=hi,
                              latency_interleaved_s=entry["latency_interleaved_s"])
        for metric, d in deltas.items():
            row["metrics"].update({f"delta_{metric}": d["delta"], f"delta_{metric}_lo": d["lo"],
                                   f"delta_{metric}_hi": d["hi"]})
        row["protocols"]["confirm"] = entry
        store.write(target, p.trial, row)
        echo(f"#{p.trial}: {describe(entry)}")


def _evidence(row: dict) -> dict | None:
    """A trial's per-image quality evidence (`per_image.npz`), or None where it kept none (quality off)."""
    path = row["artifacts"].get("per_image")
    if not path or not _resolve(path).is_file():
        return None
    with np.load(_resolve(path)) as data:
        return {k: data[k] for k in data.files}


def verdict(entry: dict, settings: Settings) -> tuple[str, str]:
    """(verdict, reason) of one point from its intervals: faster only if the speed-up interval lies above
    `settings.speedup`; equal quality only if every tolerated metric's difference interval stays within its
    tolerance on the worse side; a trade-off when quality is resolved the other way; otherwise not resolved."""
    s = entry["speedup"]
    speed = "faster" if s["lo"] > settings.speedup else "slower" if s["hi"] < 1 / settings.speedup else None
    deltas = entry.get("deltas") or {}
    judged = {}
    for metric, tol in settings.tolerance.items():
        if metric not in deltas:
            judged[metric] = (None, f"Δ {metric} not measured")
            continue
        d = deltas[metric]
        sign = 1.0 if METRICS[metric].better == "minimize" else -1.0
        worse_lo, worse_hi = sorted((sign * d["lo"], sign * d["hi"]))  # > 0: worse than the baseline
        text = f"Δ {metric} {d['delta']:+.3g} [{d['lo']:+.3g}, {d['hi']:+.3g}]"
        if worse_hi <= tol:
            judged[metric] = ("equal" if worse_hi >= 0 else "better", f"{text} within tolerance {tol:g}")
        elif worse_lo > tol:
            judged[metric] = ("worse", f"{text} beyond tolerance {tol:g}")
        else:
            judged[metric] = (None, f"{text} straddles tolerance {tol:g}")
    speed_text = f"speed-up {s['median']:.3g}x [{s['lo']:.3g}, {s['hi']:.3g}]"
    states = [state for state, _ in judged.values()]
    unresolved = [why for state, why in judged.values() if state is None]
    if speed is None:
        return NOT_RESOLVED, f"{speed_text} does not clear {settings.speedup:g}x either way" + \
            "".join(f"; {why}" for _, why in judged.values())
    if speed == "slower" and "better" in states:
        return TRADE_OFF, f"slower, {speed_text}; " + "; ".join(why for _, why in judged.values())
    if unresolved:
        return NOT_RESOLVED, f"{speed} ({speed_text}), but " + "; ".join(unresolved)
    if speed == "slower":
        return SLOWER, f"{speed_text}" + "".join(f"; {why}" for _, why in judged.values())
    if "worse" in states:
        return TRADE_OFF, f"faster, {speed_text}; " + "; ".join(why for _, why in judged.values())
    if not judged:  # no tolerance stated and no quality objective: nothing to call equal
        return "confirmed faster (quality not judged)", speed_text
    return FASTER_EQUAL, f"{speed_text}; " + "; ".join(why for _, why in judged.values())


def describe(entry: dict) -> str:
    """One line: speed-up with its interval, the verdict and why."""
    return f"{entry['verdict']}: {entry['reason']}"


def results(study: str, storage: str) -> pd.DataFrame:
    """The confirmed points of a study read from `<study>-confirm`, one row each: configuration, speed-up and
    paired differences with their intervals, verdict and reason (empty when nothing is confirmed yet). No torch."""
    frame = Store(storage).frame(study_name(study))
    if frame.empty:
        return frame
    keep = frame["protocols"].map(lambda p: isinstance(p, dict) and "confirm" in p)
    frame = frame[keep & (frame["status"] == "ok")].sort_values("trial").reset_index(drop=True)
    for key in ("verdict", "reason", "n", "rounds", "against"):
        frame[key] = frame["protocols"].map(lambda p, k=key: p["confirm"][k])
    frame["images"] = frame["n"]
    frame["baseline_latency_interleaved_s"] = frame["protocols"].map(
        lambda p: p["confirm"]["baseline_latency_interleaved_s"])
    frame.attrs.update(study=study, confirm=study_name(study))
    return frame


def quality_columns(frame: pd.DataFrame) -> list[str]:
    """The paired differences a confirmation measured, in QUALITY's order first."""
    order = list(dict.fromkeys([m for m in QUALITY if m in PAIRED] + list(PAIRED)))
    return [m for m in order if f"delta_{m}" in frame and frame[f"delta_{m}"].notna().any()]
