"""The `workbench` command: sweep, worker, report, ablate, confirm, compare, trial, knobs.

The top layer: it imports every layer below (study, report), but the ML stack only where a command runs a trial
in this process (`trial`), so `workbench report` and `workbench compare` read the store and draw without torch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from workbench import paths
from workbench.config import FIELDS, TrialConfig
from workbench.errors import ConfigError
from workbench.metrics import check_metric
from workbench.report.ablation import write_ladder
from workbench.report.confirm import confirm_data, write_confirm
from workbench.report.figures import plot_overlay
from workbench.report.make import make_report
from workbench.study import ablation, confirm, experiment
from workbench.study.ablation import run_ladder
from workbench.study.executors import EXECUTORS
from workbench.study.storages import check
from workbench.study.store import Store
from workbench.study.studies import objectives as study_objectives
from workbench.study.studies import folder, folder_name, where
from workbench.study.sweep import counted, sweep, work


def _experiment(args):
    """The experiment with the command line's overrides, and those overrides as flags for worker processes."""
    exp = experiment.load(args.experiment)
    overrides = {k: v for k, v in (("n_trials", args.n_trials), ("executor", args.executor),
                                   ("storage", args.storage)) if v is not None}
    if overrides:
        data = yaml.safe_load(Path(args.experiment).read_text())
        exp = experiment.parse({**data, **overrides}, args.experiment)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
    return exp, flags


def _sweep(args) -> None:
    if args.workers < 1:
        raise ConfigError(f"--workers: give a positive number of worker processes, got {args.workers}")
    exp, flags = _experiment(args)
    sweep(exp, n_workers=args.workers, worker_args=flags)
    try:
        written = make_report(exp.name, exp.storage, list(exp.objectives), list(exp.report_pairs) or None)
    except ConfigError as e:  # e.g. every trial failed: the sweep itself did its job
        print(f"no report: {e}")
        return
    _print_paths(exp.name, written, exp.storage)


def _worker(args) -> None:
    exp, _ = _experiment(args)
    check(exp.storage, joining=True)
    study = work(exp, echo=(lambda *a, **k: None) if args.quiet else print, tag_lines=not args.quiet)
    if not args.quiet:
        done = sum(t.state.is_finished() for t in counted(study.get_trials(deepcopy=False)))
        print(f"study {exp.name!r}: {done}/{exp.n_trials} trials finished")


def _report(args) -> None:
    target = args.target
    storage, pairs, objectives = args.storage, None, args.objectives.split(",") if args.objectives else None
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        exp = experiment.load(target)
        target, storage = exp.name, storage or exp.storage
        objectives = objectives or list(exp.objectives)
        pairs = list(exp.report_pairs) or None
    storage = storage or paths.DEFAULT_STORAGE
    check(storage)  # one line if the database is unreachable
    if args.pair:
        pairs = [tuple(p.split(",")) for p in args.pair]
    written = make_report(target, storage, objectives, pairs, force=args.force)
    _print_paths(target, written, storage)


def _ablate(args) -> None:
    target, storage, executor, timeout_s, objectives = args.target, args.storage, "inprocess", 600, None
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        exp = experiment.load(target)
        target, storage = exp.name, storage or exp.storage
        executor, timeout_s, objectives = exp.executor, exp.timeout_s, list(exp.objectives)
    storage = storage or paths.DEFAULT_STORAGE
    check(storage)
    frame = run_ladder(target, args.trial, storage, executor=args.executor or executor, timeout_s=timeout_s)
    written = write_ladder(frame, paths.figures(folder(target, storage)), objectives)
    _print_paths(target, written, storage)


def _confirm(args) -> None:
    """Re-measure the Pareto set (or --trials) on held-out seeds against the baseline; print a verdict per point."""
    target, storage, executor, timeout_s, settings = args.target, args.storage, "inprocess", 1800, None
    if target.endswith((".yaml", ".yml")) or Path(target).is_file():
        exp = experiment.load(target)
        target, storage, settings = exp.name, storage or exp.storage, exp.confirm
        executor, timeout_s = exp.executor, exp.timeout_s
    storage = storage or paths.DEFAULT_STORAGE
    trials = None
    if args.trials:
        try:
            trials = sorted({int(t) for t in args.trials.split(",")})
        except ValueError:
            raise ConfigError(f"--trials {args.trials!r}: write trial numbers separated by commas, e.g. 3,7") from None
    check(storage)
    if settings is None:  # a study name: tolerance 0 on its quality objectives
        try:
            settings = confirm.parse_settings(None, study_objectives(target, storage))
        except ConfigError:  # not an Optuna study (the explorer's): --trials names the points
            settings = confirm.Settings()
    settings = settings.replace(n=args.n, rounds=args.rounds)
    confirm.check_counts(settings.n, settings.rounds)
    baseline, labels = None, {}
    if args.ladder is not None:  # the ladder's rungs, each against its first (the baseline), in <study>-ablation
        if trials is not None:
            raise ConfigError("--ladder and --trials: a ladder confirms its own rungs; give one of the two")
        steps = ablation.ladder(target, args.ladder, storage, flag="--ladder")
        labels = {int(r["trial"]): f"rung {int(r['rung'])} ({r['added']})" for _, r in steps.iterrows()}
        rungs = list(labels)
        target, baseline, trials = ablation.study_name(target), rungs[0], rungs[1:]
    started, load = time.time(), os.getloadavg()
    frame = confirm.run_confirm(target, storage, settings, trials, executor=args.executor or executor,
                                timeout_s=timeout_s, baseline=baseline)
    figures = paths.figures(folder(target, storage))
    if labels:  # no Optuna study to report: the confirmed rungs' figure and table alone
        frame_all = Store(storage).frame(target)
        written = write_confirm(target, storage, frame_all[frame_all["status"] == "ok"], baseline, figures)
    else:
        try:
            written = make_report(target, storage)  # the confirmed front, and the Pareto set with its columns
        except ConfigError as e:
            print(f"no report: {e}")
            written = {}
    flags = [f"--{k}={v}" for k, v in (("trials", args.trials), ("ladder", args.ladder), ("n", args.n),
                                       ("rounds", args.rounds), ("storage", args.storage),
                                       ("executor", args.executor)) if v is not None]
    data = {**confirm_data(target, storage), "command": " ".join(["workbench confirm", args.target, *flags]),
            "run": {"wall_s": time.time() - started, "load_before": list(load), "load_after": list(os.getloadavg()),
                    "executor": args.executor or executor, "storage": storage},
            **({"ladder": {"trial": args.ladder, "rungs": labels}} if labels else {})}
    figures.mkdir(parents=True, exist_ok=True)  # a study without a report has no folder yet
    out = figures / "confirm.json"
    out.write_text(json.dumps(data, indent=1, default=str))
    print(f"\n{target}: {len(frame)} point(s) on held-out seeds {data['seeds']}, N = {settings.n}, "
          f"{settings.rounds} interleaved rounds ({time.time() - started:.0f} s):")
    for _, r in frame.iterrows():
        print(f"  #{int(r['trial']):<4d} {labels.get(int(r['trial']), '')}{': ' if labels else ''}{r['verdict']}: "
              f"{r['reason']}")
    print(f"  {'data':28s} {out}")
    for name in ("confirm", "confirm_md", "pareto_md"):
        if name in written:
            print(f"  {name:28s} {written[name]}")


def _compare(args) -> None:
    storage = args.storage or paths.DEFAULT_STORAGE
    check(storage)
    if "," not in args.pair:
        raise ConfigError(f"--pair {args.pair!r}: write x,y metrics, e.g. --pair latency_s,fid")
    x, y = args.pair.split(",", 1)
    check_metric(x, "--pair")
    check_metric(y, "--pair")
    out = paths.figures(folder_name("compare-" + "-".join(args.studies), storage))
    out.mkdir(parents=True, exist_ok=True)
    path = plot_overlay(args.studies, storage, x, y, out / f"overlay_{x}_vs_{y}.png")
    print(f"overlay of {', '.join(args.studies)}: {path} (.svg, .pdf beside it)")


def _print_paths(study: str, written: dict, storage: str) -> None:
    artifacts, figures = where(study, storage)
    print(f"\nstudy {study!r} ({storage}): figures in {figures}/, trial images in {artifacts}/")
    for name, path in written.items():
        print(f"  {name:28s} {path}")
    print(f"  {'rows (pandas)':28s} workbench.study.store.trials({study!r}, {storage!r})")


def _trial(args) -> None:
    values = {}
    for item in args.set or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: write knob=value, e.g. --set steps=10")
        key, raw = item.split("=", 1)
        values[key] = yaml.safe_load(raw) if key != "seeds" else raw
    cfg = TrialConfig.from_dict(values, where="--set")
    from workbench.trial import run_trial  # heavy: torch, diffusers (only this command runs a model here)

    row = run_trial(cfg, artifacts_dir=args.out)
    width = max(map(len, row["metrics"]))
    for name, value in row["metrics"].items():
        print(f"{name:{width}s}  {value:.4g}")
    for name, reason in row["absent"].items():
        print(f"{name:{width}s}  absent: {reason}")
    print(f"images: {row['artifacts']['grid']}")


def _knobs(args) -> None:
    """Every TrialConfig field: default, what is valid, call-time or rebuild, the module that declares it."""
    for f in FIELDS:
        if f.choices:
            valid = " | ".join(map(str, f.choices)) + (" | ..." if f.open else "")
        elif f.low is not None or f.high is not None:
            valid = f"{f.type.__name__} in [{'' if f.low is None else f.low}, {'' if f.high is None else f.high}]"
        else:
            valid = f.type.__name__
        print(f"{f.name:17s} {f.default!r:19s} {'call' if f.call_time else 'build':5s} {f.source}: {valid}")
        print(f"{'':17s} {f.help}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="workbench", description="Find the cheapest way to run Stable Diffusion "
                                "without losing image quality.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="run an experiment YAML as an Optuna study (resumes), then report")
    s.add_argument("experiment", help="experiments/<name>.yaml")
    s.add_argument("--n-trials", type=int, help="override the study's total number of trials")
    s.add_argument("--executor", choices=list(EXECUTORS), help="override the experiment's executor")
    s.add_argument("--storage", help="override the storage URL")
    s.add_argument("--workers", type=int, default=1, help="worker processes on this host (one per visible GPU, "
                   "pinned); needs a journal:/// or postgresql:// storage (docs/scale-out.md)")
    s.set_defaults(func=_sweep)
    w = sub.add_parser("worker", help="join an experiment's study as one more worker (any host; journal or "
                       "PostgreSQL storage)")
    w.add_argument("experiment", help="experiments/<name>.yaml")
    w.add_argument("--n-trials", type=int, help="override the study's total number of trials")
    w.add_argument("--executor", choices=list(EXECUTORS), help="override the experiment's executor")
    w.add_argument("--storage", help="override the storage URL")
    w.add_argument("--quiet", action="store_true", help="no per-trial lines (used by `sweep --workers`)")
    w.set_defaults(func=_worker)
    r = sub.add_parser("report", help="Pareto fronts, hypervolume and the Pareto set of a study")
    r.add_argument("target", help="an experiment YAML or a study name")
    r.add_argument("--storage", help="SQLAlchemy URL (default: the experiment's, else sqlite:///results/workbench.db)")
    r.add_argument("--objectives", help="comma-separated metrics (default: the study's objectives)")
    r.add_argument("--pair", action="append", help="x,y metrics of a Pareto figure (repeatable)")
    r.add_argument("--force", action="store_true", help="redraw even if the study and the report code are unchanged")
    r.set_defaults(func=_report)
    a = sub.add_parser("ablate", help="the ablation ladder of a trial: baseline, then its knobs added one at a "
                       "time, every rung measured into <study>-ablation (rungs already there are not run again)")
    a.add_argument("target", help="an experiment YAML or a study name")
    a.add_argument("--trial", type=int, required=True, help="the trial to ablate (e.g. one of the Pareto set)")
    a.add_argument("--storage", help="SQLAlchemy URL (default: the experiment's, else sqlite:///results/workbench.db)")
    a.add_argument("--executor", choices=list(EXECUTORS), help="how rungs run (default: the experiment's)")
    a.set_defaults(func=_ablate)
    f = sub.add_parser("confirm", help="re-measure the Pareto set (or --trials) on held-out seeds at a larger N, "
                       "timed against the baseline in interleaved rounds, into <study>-confirm; a verdict per point")
    f.add_argument("target", help="an experiment YAML or a study name")
    f.add_argument("--trials", help="comma-separated trial numbers instead of the Pareto set, e.g. 3,7")
    f.add_argument("--n", type=int, help="images per trial on the held-out seeds (default: the experiment's "
                   "confirm.n, else 256)")
    f.add_argument("--ladder", type=int, metavar="TRIAL", help="confirm the ablation ladder of this trial "
                   "(`workbench ablate` first): every rung against the baseline, into <study>-ablation-confirm")
    f.add_argument("--rounds", type=int, help="interleaved timing rounds (default: confirm.rounds, else 10)")
    f.add_argument("--storage", help="SQLAlchemy URL (default: the experiment's, else sqlite:///results/workbench.db)")
    f.add_argument("--executor", choices=list(EXECUTORS), help="how the quality trials run (default: the "
                   "experiment's); timing always runs in this process")
    f.set_defaults(func=_confirm)
    c = sub.add_parser("compare", help="several studies' Pareto fronts on one set of axes (equal N only)")
    c.add_argument("studies", nargs="+", help="study names")
    c.add_argument("--pair", default="latency_s,fid", help="x,y metrics (default latency_s,fid)")
    c.add_argument("--storage", help="SQLAlchemy URL (default sqlite:///results/workbench.db)")
    c.set_defaults(func=_compare)
    t = sub.add_parser("trial", help="run one trial and print its metrics")
    t.add_argument("--set", action="append", metavar="KNOB=VALUE", help="e.g. --set steps=10 --set scheduler=ddim")
    t.add_argument("--out", default="results/artifacts/cli-trial", help="folder for its images")
    t.set_defaults(func=_trial)
    k = sub.add_parser("knobs", help="every knob and measurement field: default, call-time or rebuild, the module "
                       "that declares it, what is valid")
    k.set_defaults(func=_knobs)
    args = p.parse_args(argv)
    try:
        args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
