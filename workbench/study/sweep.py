"""Sweeps: an experiment run as an Optuna multi-objective study by one or many workers (ask-and-tell).

The baseline configuration is enqueued first so that fidelity metrics and plots have their anchor. Re-running
the same command resumes the study up to `n_trials`; Ctrl-C marks the trial in flight as interrupted (not
counted) and stops with nothing half-written. Every worker, in this process or another (`workbench worker`,
`--workers N`), runs `work`: together they stop at exactly `n_trials`, and a trial whose worker died is failed
as "worker lost" and retried once (`workbench.study.workers`).
"""
from __future__ import annotations

import inspect
import math
import signal
import time

import optuna
from tqdm.auto import tqdm

from workbench import knobs, paths
from workbench.errors import ConfigError
from workbench.metrics import IDENTICAL
from workbench.models import resolve_device
from workbench.study import baseline_images, executors, optuna_compat, workers
from workbench.study.executors import EXECUTORS
from workbench.study.experiment import Experiment
from workbench.study.optuna_compat import storage_of, trial_id
from workbench.study.storages import StudyLock, check, optuna_storage
from workbench.study.store import Store, failed_row
from workbench.study.studies import FOLDER, folder_name

INTERRUPTED = "interrupted"
SURPLUS = "surplus"
INVALID = "invalid"  # a sampled combination the knobs refuse together (e.g. recovery_steps with prune_ratio 0)
INVALID_IN_A_ROW = 50
RUNNING, COMPLETE, FAIL, WAITING = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.COMPLETE,
                                    optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING)


def make_sampler(exp: Experiment):
    """The experiment's Optuna sampler, with its seed and (where supported) the constraints function."""
    kwargs = {k: v for k, v in exp.sampler.items() if k != "name"}
    name = exp.sampler.get("name", "TPESampler")
    cls = optuna_compat.GridSampler if name == "GridSampler" else getattr(optuna.samplers, name)
    if exp.constraints and "constraints_func" in inspect.signature(cls).parameters:
        kwargs["constraints_func"] = lambda t: t.user_attrs.get("constraints", [math.inf] * len(exp.constraints))
    return cls(**kwargs)


def open_study(exp: Experiment, storage=None) -> optuna.Study:
    """Create or load the study and enqueue the baseline if it has none (call it under the study's lock)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = storage or optuna_storage(exp.storage)
    study = optuna.create_study(study_name=exp.name, storage=storage, sampler=make_sampler(exp),
                                directions=list(exp.objectives.values()), load_if_exists=True)
    if list(study.directions) != [optuna.study.StudyDirection.MINIMIZE if d == "minimize"
                                  else optuna.study.StudyDirection.MAXIMIZE for d in exp.objectives.values()]:
        raise ConfigError(f"objectives: study {exp.name!r} already exists with other directions; rename the study")
    if study.user_attrs.get("objectives") != list(exp.objectives):
        study.set_user_attr("objectives", list(exp.objectives))
    if exp.path and study.user_attrs.get("experiment") != exp.path:
        study.set_user_attr("experiment", exp.path)
    if FOLDER not in study.user_attrs:  # a study from before folders were keyed by storage keeps its plain name
        legacy = any(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        study.set_user_attr(FOLDER, exp.name if legacy else folder_name(exp.name, exp.storage))
    _ensure_baseline(study, exp)
    return study


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards n_trials: finished or running, but not interrupted by the user, not surplus,
    and not lost trials that were queued again (their retry counts instead)."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return [t for t in trials if t.state in (COMPLETE, FAIL, RUNNING) and t.number not in retried
            and not t.user_attrs.get(INTERRUPTED) and not t.user_attrs.get(SURPLUS) and not t.user_attrs.get(INVALID)]


def finished(trials: list[optuna.trial.FrozenTrial]) -> int:
    return sum(t.state != RUNNING for t in counted(trials))


def baseline_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    return next((t for t in trials if t.user_attrs.get("baseline") and t.state == COMPLETE), None)


def _ensure_baseline(study: optuna.Study, exp: Experiment) -> None:
    """Enqueue the baseline unless one is queued, running or done (a failed one is tried again on resume)."""
    if not any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False, states=(WAITING, RUNNING,
                                                                                              COMPLETE))):
        study.enqueue_trial(exp.baseline_params, user_attrs={"baseline": True})


def sweep(exp: Experiment, progress: bool = True, echo=print, n_workers: int = 1,
          worker_args: list[str] | None = None) -> optuna.Study:
    """Run the experiment's study up to n_trials, in this process or with `n_workers` worker processes
    (`worker_args`: the experiment's overrides, passed on to `workbench worker`)."""
    base = exp.baseline_config  # what this host's device cannot run at all: one line, before anything is written
    knobs.check_device(base, resolve_device(base.device))
    check(exp.storage, n_workers)
    with StudyLock(exp.storage, exp.name):  # tables, study and baseline once, before any worker starts
        Store(exp.storage)
        study = open_study(exp)
    done = finished(study.get_trials(deepcopy=False))
    if done >= exp.n_trials:
        echo(f"study {exp.name!r} is finished: {done}/{exp.n_trials} trials; nothing to do "
             f"(raise n_trials to run more, or `workbench report {exp.path or exp.name}`)")
        return study
    if n_workers > 1:
        if not exp.path:
            raise ConfigError("--workers: the workers read the experiment's YAML; give its path")
        _pool(exp, n_workers, [exp.path, *(worker_args or [])], progress, echo)
        return study
    return work(exp, progress=progress, echo=echo)


def work(exp: Experiment, progress: bool = False, echo=print, tag_lines: bool = False) -> optuna.Study:
    """One worker: ask, run, tell until the study holds n_trials counted trials from all its workers.

    Counting and asking happen under the study's lock (exactly n_trials, never more); while its trial runs the
    worker keeps Optuna's heartbeat; before each ask it fails and re-queues the trials of lost workers. With no
    trial left to ask it waits for the other workers' trials in flight, since a lost one comes back as a retry.
    """
    me = workers.identity()
    lost = workers.LostTrials(exp, exp.grace_s)
    lock = StudyLock(exp.storage, exp.name)
    with lock:  # workers starting together must not race to create tables or the study (optuna#1092)
        storage = optuna_storage(exp.storage, heartbeat_s=exp.heartbeat_s, grace_s=exp.grace_s, on_lost=lost)
        store = Store(exp.storage)
        study = open_study(exp, storage)
    run = EXECUTORS[exp.executor]
    distributions = exp.distributions()
    trials = study.get_trials(deepcopy=False)
    bar = tqdm(total=exp.n_trials, initial=finished(trials), desc=exp.name, unit="trial", disable=not progress)
    say = bar.write if progress else echo
    waiting = False
    invalid = 0
    checked: set[int] = set()  # baselines whose images this worker made sure of
    try:
        while True:
            with lock:
                trials, gone = workers.reap_lost(study, exp, lost)
                trial = study.ask(distributions) if len(counted(trials)) < exp.n_trials else None
                if trial is not None:
                    trial.set_user_attr("worker", me)
            for t in gone:
                say(describe(t, next(iter(store.rows(exp.name, t.number)), None), exp))
            if trial is not None and lock.lost and _surplus(study, trial, exp, store):
                continue
            if trial is None:
                running = [t for t in trials if t.state == RUNNING]
                if not running:
                    break
                if not waiting:
                    say(f"waiting for {len(running)} trial(s) in flight elsewhere (a lost one is retried after "
                        f"grace_s={exp.grace_s} s): " + ", ".join(f"#{t.number}" for t in running))
                waiting = True
                time.sleep(exp.heartbeat_s)
                continue
            waiting = False
            cfg = _config(study, trial, exp)
            if isinstance(cfg, str):  # nothing ran and nothing is written to the store; the sampler asks again
                say(describe(storage_of(study).get_trial(trial_id(trial)), None, exp, tag_lines))
                invalid += 1
                if invalid >= INVALID_IN_A_ROW:
                    raise ConfigError(f"search_space: {invalid} sampled combinations in a row were invalid (last: "
                                      f"{cfg}); narrow the search space so that its knobs fit together")
                continue
            invalid = 0
            base = baseline_trial(trials)
            if base is not None and base.number not in checked:  # a host that did not run the baseline: its images
                checked.add(base.number)
                baseline_images.ensure(study.user_attrs[FOLDER], base, exp, echo=say)
            say(_run(study, trial, cfg, exp, storage, store, run, lost, base, tag_lines))
            if progress:
                bar.n = finished(study.get_trials(deepcopy=False))
                bar.refresh()
    except KeyboardInterrupt:
        echo(f"interrupted: trial in flight marked '{INTERRUPTED}' (not counted); re-run to resume")
    finally:
        with workers.no_interrupts():  # a second Ctrl-C must not leave a waiting kernel behind
            executors.close()
        bar.close()
    return study


def _run(study, trial, cfg, exp: Experiment, storage, store: Store, run, lost, base, tag_lines: bool) -> str:
    """Execute one trial (`cfg`: its TrialConfig) with its heartbeat, then tell Optuna the outcome from the store."""
    folder = study.user_attrs[FOLDER]  # this study's, never a same-named study's of another storage
    baseline_dir = str(paths.artifacts(folder, base.number) / "images") if base else None
    with workers.Heartbeat(storage, trial_id(trial), exp.heartbeat_s):
        try:
            run(cfg.to_dict(), storage=exp.storage, study=exp.name, trial_number=trial.number,
                baseline_dir=baseline_dir, artifacts_dir=paths.artifacts(folder, trial.number),
                timeout_s=exp.timeout_s)
        except KeyboardInterrupt:
            with workers.no_interrupts():  # a second Ctrl-C (or the pool's) must not leave it RUNNING
                trial.set_user_attr(INTERRUPTED, True)
                study.tell(trial, state=FAIL)
            raise
    row = next(iter(store.rows(exp.name, trial.number)), None)
    try:
        return describe(_tell(study, trial, exp, row), row, exp, tag_lines)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        frozen = storage_of(study).get_trial(trial_id(trial))
        if frozen.state == RUNNING:
            raise  # not the case below: a genuine error
    # another worker failed it as lost (our heartbeats missed grace_s) and queued its retry: that verdict stands
    lost.write(frozen, f"{workers.LOST}: declared lost by another worker (our heartbeats missed grace_s="
                       f"{exp.grace_s} s while it ran)")
    return describe(frozen, next(iter(store.rows(exp.name, trial.number)), None), exp, tag_lines)


def _config(study, trial, exp: Experiment):
    """The trial's TrialConfig; or, for a sampled combination that the knobs refuse together (each value alone
    passed the experiment's check), the reason, with the trial failed in Optuna and marked invalid (not counted, no
    row written)."""
    try:
        cfg = exp.trial_config(trial.params)
        knobs.check_device(cfg, resolve_device(cfg.device))  # e.g. CUDA graphs sampled on a CPU host
        return cfg
    except ConfigError as err:
        reason = f"{INVALID} combination, skipped (not counted): {err}"
        trial.set_user_attr(INVALID, True)
        trial.set_user_attr("reason", reason)
        study.tell(trial, state=FAIL)
        return reason


def _surplus(study, trial, exp: Experiment, store: Store) -> bool:
    """After the database dropped our lock mid-ask, the count may have raced: a trial beyond n_trials is
    failed as surplus (not counted) with a row saying so."""
    ahead = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
    if len(ahead) < exp.n_trials:
        return False
    trial.set_user_attr(SURPLUS, True)
    study.tell(trial, state=FAIL)
    store.write(exp.name, trial.number, failed_row(exp.trial_config(trial.params).to_dict(),
                                                   f"{SURPLUS}: n_trials reached while the database restarted"))
    return True


def _tell(study, trial, exp: Experiment, row: dict | None) -> optuna.trial.FrozenTrial:
    if row is None or row["status"] != "ok":
        trial.set_user_attr("reason", row["reason"] if row else "no row in the store (the trial wrote nothing)")
        return study.tell(trial, state=FAIL)
    metrics = dict(row["metrics"])
    if trial.user_attrs.get("baseline"):  # fidelity objectives: the baseline is identical to its own images
        metrics.update({m: v for m, v in IDENTICAL.items() if m in exp.objectives and m not in metrics})
    missing = [m for m in exp.objectives if m not in metrics]
    if missing:
        trial.set_user_attr("reason", f"objective {missing[0]} absent: {row['absent'].get(missing[0], 'not measured')}")
        return study.tell(trial, state=FAIL)
    if exp.constraints:
        trial.set_user_attr("constraints", [_violation(metrics.get(m), b) for m, b in exp.constraints.items()])
    return study.tell(trial, [metrics[m] for m in exp.objectives])


def describe(t: optuna.trial.FrozenTrial, row: dict | None, exp: Experiment, tag_worker: bool = False) -> str:
    """One line per finished trial: number, parameters, objectives or the reason it failed (and its worker)."""
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items())
    tag = " (baseline)" if t.user_attrs.get("baseline") else ""
    retry = t.system_attrs.get("retry_history")
    tag += f" (retry of #{retry[0]})" if retry else ""
    who = f"  [{t.user_attrs['worker']['name']}]" if tag_worker and "worker" in t.user_attrs else ""
    if t.user_attrs.get(INTERRUPTED):
        return f"#{t.number}{tag} interrupted [{params}]{who}"
    if t.user_attrs.get(INVALID):
        return f"#{t.number} skipped [{params}]: {t.user_attrs['reason']}{who}"
    if t.state == COMPLETE:
        values = ", ".join(f"{m}={_fmt(v)}" for m, v in zip(exp.objectives, t.values))
        return f"#{t.number}{tag} [{params}] -> {values}{who}"
    reason = t.user_attrs.get("reason") or (row or {}).get("reason") or "no row in the store"
    return f"#{t.number}{tag} FAILED [{params}]: {reason}{who}"


def _pool(exp: Experiment, n: int, worker_args: list[str], progress: bool, echo) -> None:
    """Start n worker processes and show every worker's trials (from the study, so remote ones too) until they
    exit; Ctrl-C stops them all, each marking its trial interrupted."""
    study = optuna.load_study(study_name=exp.name, storage=optuna_storage(exp.storage))
    store = Store(exp.storage)
    shown = {t.number for t in study.get_trials(deepcopy=False, states=(COMPLETE, FAIL))}
    bar = tqdm(total=exp.n_trials, initial=finished(study.get_trials(deepcopy=False)), desc=exp.name,
               unit="trial", disable=not progress)
    say = bar.write if progress else echo
    procs = workers.start(worker_args, n)
    say(f"{n} workers on study {exp.name!r}: " + ", ".join(str(p.pid) for p in procs))
    pending: dict[int, int] = {}  # polls a failed trial has waited for its row
    announced: set[int] = set()
    try:
        while True:
            alive = [p for p in procs if p.poll() is None]
            trials = study.get_trials(deepcopy=False)
            for t in trials:
                if t.state in (COMPLETE, FAIL) and t.number not in shown:
                    row = next(iter(store.rows(exp.name, t.number)), None)
                    pending[t.number] = pending.get(t.number, 0) + 1
                    if row is None and t.state == FAIL and pending[t.number] < 5 and alive:
                        continue  # a lost trial's row is being written by the worker that found it
                    say(describe(t, row, exp, tag_worker=True))
                    shown.add(t.number)
            if bar.n != finished(trials):
                bar.n = finished(trials)
                bar.refresh()
            for p in procs:
                if p.returncode is not None and p.returncode < 0 and p.pid not in announced:
                    announced.add(p.pid)
                    say(f"worker {p.pid} died ({_signal_name(-p.returncode)}): its trial is failed as "
                        f"'{workers.LOST}' within grace_s={exp.grace_s} s and retried by another worker")
            if not alive:
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        workers.stop(procs)
        say(f"interrupted: the trials in flight are marked '{INTERRUPTED}' (not counted); re-run to resume")
    finally:
        bar.close()
    left = exp.n_trials - finished(study.get_trials(deepcopy=False))
    if left > 0:
        echo(f"study {exp.name!r}: {left} of {exp.n_trials} trials not run (every worker stopped); re-run to resume")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _violation(value, bound: dict) -> float:
    """Optuna's constraint convention: <= 0 is feasible."""
    if value is None:
        return math.inf
    return max(bound.get("min", -math.inf) - value, value - bound.get("max", math.inf))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
