"""Sweeps: an experiment run as an Optuna multi-objective study, one trial at a time (ask-and-tell).

The baseline configuration is enqueued first so that fidelity metrics and plots have their anchor. Re-running
the same command resumes the study up to `n_trials`; Ctrl-C marks the trial in flight as interrupted (not
counted) and stops with nothing half-written.
"""
from __future__ import annotations

import math
from pathlib import Path

import optuna
from tqdm.auto import tqdm

from workbench.executors import EXECUTORS
from workbench.experiment import Experiment
from workbench.store import Store, check_storage_url
from workbench.trial import RESULTS

INTERRUPTED = "interrupted"


def make_sampler(exp: Experiment):
    """The experiment's Optuna sampler, with its seed and (where supported) the constraints function."""
    import inspect

    kwargs = {k: v for k, v in exp.sampler.items() if k != "name"}
    cls = getattr(optuna.samplers, exp.sampler.get("name", "TPESampler"))
    if exp.constraints and "constraints_func" in inspect.signature(cls).parameters:
        kwargs["constraints_func"] = lambda t: t.user_attrs.get("constraints", [math.inf] * len(exp.constraints))
    return cls(**kwargs)


def open_study(exp: Experiment) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=exp.name, storage=exp.storage, sampler=make_sampler(exp),
                                directions=list(exp.objectives.values()), load_if_exists=True)
    if list(study.directions) != [optuna.study.StudyDirection.MINIMIZE if d == "minimize"
                                  else optuna.study.StudyDirection.MAXIMIZE for d in exp.objectives.values()]:
        from workbench.errors import ConfigError
        raise ConfigError(f"objectives: study {exp.name!r} already exists with other directions; rename the study")
    study.set_user_attr("objectives", list(exp.objectives))
    study.set_user_attr("experiment", exp.path)
    return study


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards n_trials: finished or running, but not interrupted by the user."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING)
    return [t for t in study.get_trials(deepcopy=False, states=states) if not t.user_attrs.get(INTERRUPTED)]


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("baseline") and t.state == optuna.trial.TrialState.COMPLETE:
            return t
    return None


def _ensure_baseline(study: optuna.Study, exp: Experiment) -> None:
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if baseline_trial(study) is None and not any(t.user_attrs.get("baseline") for t in waiting):
        study.enqueue_trial(exp.baseline_params, user_attrs={"baseline": True})


def artifacts_dir(study: str, number: int) -> Path:
    return RESULTS / "artifacts" / study / f"trial-{number:04d}"


def sweep(exp: Experiment, progress: bool = True, echo=print) -> optuna.Study:
    """Run the experiment's study up to n_trials; returns the study."""
    check_storage_url(exp.storage)
    store = Store(exp.storage)
    study = open_study(exp)
    done = len(counted(study))
    if done >= exp.n_trials:
        echo(f"study {exp.name!r} is finished: {done}/{exp.n_trials} trials; nothing to do "
             f"(raise n_trials to run more, or `workbench report {exp.path or exp.name}`)")
        return study
    _ensure_baseline(study, exp)
    run = EXECUTORS[exp.executor]
    distributions = exp.distributions()
    bar = tqdm(total=exp.n_trials, initial=done, desc=exp.name, unit="trial", disable=not progress)
    try:
        while len(counted(study)) < exp.n_trials:
            trial = study.ask(distributions)
            cfg = exp.trial_config(trial.params)
            base = baseline_trial(study)
            baseline_dir = str(artifacts_dir(exp.name, base.number) / "images") if base else None
            try:
                run(cfg.to_dict(), storage=exp.storage, study=exp.name, trial_number=trial.number,
                    baseline_dir=baseline_dir, artifacts_dir=artifacts_dir(exp.name, trial.number),
                    timeout_s=exp.timeout_s)
            except KeyboardInterrupt:
                trial.set_user_attr(INTERRUPTED, True)
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            row = next(iter(store.rows(exp.name, trial.number)), None)
            echo_line = _tell(study, trial, exp, row)
            bar.update(1)
            (bar.write if progress else echo)(echo_line)
    except KeyboardInterrupt:
        echo(f"interrupted: trial in flight marked '{INTERRUPTED}' (not counted); re-run to resume")
    finally:
        bar.close()
    return study


def _tell(study, trial, exp: Experiment, row: dict | None) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
    if row is None or row["status"] != "ok":
        reason = row["reason"] if row else "no row in the store (the trial wrote nothing)"
        trial.set_user_attr("reason", reason)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return f"#{trial.number} FAILED [{params}]: {reason}"
    metrics = row["metrics"]
    missing = [m for m in exp.objectives if m not in metrics]
    if missing:
        reason = f"objective {missing[0]} absent: {row['absent'].get(missing[0], 'not measured')}"
        trial.set_user_attr("reason", reason)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return f"#{trial.number} FAILED [{params}]: {reason}"
    if exp.constraints:
        trial.set_user_attr("constraints", [_violation(metrics.get(m), b) for m, b in exp.constraints.items()])
    study.tell(trial, [metrics[m] for m in exp.objectives])
    values = ", ".join(f"{m}={_fmt(metrics[m])}" for m in exp.objectives)
    tag = " (baseline)" if trial.user_attrs.get("baseline") else ""
    return f"#{trial.number}{tag} [{params}] -> {values}"


def _violation(value, bound: dict) -> float:
    """Optuna's constraint convention: <= 0 is feasible."""
    if value is None:
        return math.inf
    return max(bound.get("min", -math.inf) - value, value - bound.get("max", math.inf))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
