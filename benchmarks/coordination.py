"""Benchmark: what coordinating workers through a storage costs per trial, for SQLite, JournalStorage and
PostgreSQL, with 1 and 3 workers on the tiny model.

Coordination overhead is the time a worker spends between two of its trials: tell the finished one (read its
row, tell Optuna), then under the study's lock reap lost trials, count, ask and tag the next, and start its
heartbeat. Each worker is a real process running `workbench.study.sweep.work`; the time inside the executor (the trial
itself) is excluded. Round trips: SQL statements (SQLite, PostgreSQL) or journal file reads and appends per
trial, heartbeats included. PostgreSQL is a throw-away local server (tests/pgserver.py) on a Unix socket: on a
real network add one round-trip time per statement on the critical path.

    python -m benchmarks.coordination            # prints a table of medians and spreads
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

EXP = """
name: {name}
model: tiny-random
fixed: {{seeds: "0-1", batch_size: 2, timing_repeats: 1, quality: false, steps: 2}}
baseline: {{scheduler: ddim}}
search_space:
  scheduler: {{type: categorical, choices: [ddim, euler, dpm++2m, unipc, heun, lms]}}
objectives: {{latency_s: minimize, unet_s: minimize}}
sampler: {{name: TPESampler, seed: 0, constant_liar: true}}
n_trials: {n}
storage: {storage}
executor: inprocess
heartbeat_s: 1
grace_s: 30
"""


def worker(path: str, out: str) -> None:
    """One worker process: run `work` with the executor and the storage round trips timed."""
    import sqlalchemy as sa
    from optuna.storages.journal import JournalFileBackend

    from workbench.study import experiment, sweep

    calls = {"round_trips": 0}

    def count(*args, **kwargs):
        calls["round_trips"] += 1
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    for name in ("read_logs", "append_logs"):
        real = getattr(JournalFileBackend, name)
        setattr(JournalFileBackend, name, lambda self, *a, _real=real, **k: (count(), _real(self, *a, **k))[1])
    spans = []
    run = sweep.EXECUTORS["inprocess"]

    def timed(config, **kwargs):
        start = time.perf_counter()
        run(config, **kwargs)
        spans.append((start, time.perf_counter()))
    sweep.EXECUTORS["inprocess"] = timed
    sweep.work(experiment.load(path), echo=lambda *a: None)
    gaps = [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    Path(out).write_text(json.dumps({"gaps": gaps, "trials": len(spans), "round_trips": calls["round_trips"]}))


def run_case(storage: str, n_workers: int, n_trials: int, tmp: Path, name: str) -> dict:
    from workbench.study import experiment
    from workbench.study.storages import StudyLock
    from workbench.study.store import Store
    from workbench.study.sweep import counted, open_study

    path = tmp / f"{name}.yaml"
    path.write_text(textwrap.dedent(EXP.format(name=name, n=n_trials, storage=storage)))
    exp = experiment.load(path)
    with StudyLock(exp.storage, exp.name):  # as `workbench sweep --workers` does before starting them
        Store(exp.storage)
        study = open_study(exp)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORKBENCH_RESULTS": str(tmp / "results")}
    outs = [tmp / f"{name}-{i}.json" for i in range(n_workers)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.coordination", "worker", str(path), str(o)], env=env)
             for o in outs]
    assert all(p.wait() == 0 for p in procs)
    wall = time.perf_counter() - t0
    results = [json.loads(o.read_text()) for o in outs]
    trials = study.get_trials(deepcopy=False)
    assert len(counted(trials)) == n_trials == len(trials), "every trial counted once, none beyond n_trials"
    gaps = [g for r in results for g in r["gaps"]]
    return {"gaps": gaps, "round_trips": sum(r["round_trips"] for r in results) / n_trials, "wall": wall}


def main(n_trials: int = 24) -> None:
    from tests import pgserver

    tmp = Path(tempfile.mkdtemp(prefix="wb-coord-"))
    rows = []
    with pgserver.temporary_server() as pg:
        pg.create_database("bench")
        storages = {"SQLite": f"sqlite:///{tmp}/bench.db", "JournalStorage": f"journal:///{tmp}/bench.journal",
                    "PostgreSQL": pg.url("bench")}
        for label, url in storages.items():
            for n_workers in (1, 3):
                if label == "SQLite" and n_workers > 1:
                    continue  # refused by design: SQLite takes one worker
                r = run_case(url, n_workers, n_trials, tmp, f"{label.lower()}-{n_workers}")
                q = statistics.quantiles(r["gaps"], n=4)
                rows.append((label, n_workers, statistics.median(r["gaps"]), q[0], q[2], max(r["gaps"]),
                             len(r["gaps"]), r["round_trips"], r["wall"]))
    print(f"coordination overhead per trial, tiny model, {n_trials} trials a study, in-process executor; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'storage':16s} {'workers':>7s} {'median s':>9s} {'IQR s':>15s} {'max s':>7s} {'n':>4s} "
          f"{'round trips/trial':>18s} {'study wall s':>12s}")
    for label, w, med, q1, q3, mx, n, rt, wall in rows:
        print(f"{label:16s} {w:7d} {med:9.3f} {q1:7.3f}-{q3:<7.3f} {mx:7.3f} {n:4d} {rt:18.1f} {wall:12.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        p.add_argument("--trials", type=int, default=24, help="trials a study")
        main(p.parse_args().trials)
