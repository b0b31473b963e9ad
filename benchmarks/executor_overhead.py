"""Benchmark: wall time per trial of each executor, same configuration: in process, papermill in a kernel started
for the trial (`papermill-cold`) and papermill in a warm kernel (`papermill`, the default).

    python -m benchmarks.executor_overhead --rounds 5 --out docs/executor-data/overhead.json
    python -m benchmarks.executor_overhead --set model=sd15-random --set device=cuda --set precision=fp16 ...

One interleaved run: every round runs each executor in a fresh random order, two trials in a row, and times the
second, which is what a sweep's trials cost once it runs (the first in-process trial pays the imports, the first
warm trial a kernel that had no earlier trial to prepare behind; the warm executor's next kernel starts during
the timed trial, as in a sweep). After its pair the warm executor's waiting kernel is shut down, so that it
neither competes with nor waits behind another executor's trials. A trial: the bundled model, 8 images, 10 steps,
all metrics (`--set knob=value` changes any TrialConfig knob). Results go to a throw-away store; medians, IQRs and the per-round differences are printed (and
written with `--out`), with the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.timing import uptime
from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.study import executors
from workbench.study.store import Store

NAMES = ("inprocess", "papermill-cold", "papermill")
CONFIG = {"steps": 10, "seeds": "0-7", "batch_size": 8, "timing_repeats": 1}


def main(rounds: int = 5, out: str | None = None, overrides: dict | None = None, seed: int = 0) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    url = f"sqlite:///{tmp}/bench.db"
    store = Store(url)
    config = {**CONFIG, **(overrides or {})}
    cfg = TrialConfig.from_dict(config).to_dict()
    rng = random.Random(seed)
    walls: dict[str, list[float]] = {name: [] for name in NAMES}
    numbers = {name: 0 for name in NAMES}
    compiles: list[list] = []  # [executor, trial, compile_s] in the order run: the first fills the compile cache
    load_before = uptime()
    print(load_before, flush=True)
    for r in range(rounds):
        for name in rng.sample(NAMES, len(NAMES)):
            for timed in (False, True):
                t0 = time.perf_counter()
                executors.EXECUTORS[name](cfg, storage=url, study=name, trial_number=numbers[name],
                                          baseline_dir=None, artifacts_dir=tmp / name / str(numbers[name]),
                                          timeout_s=900)
                if timed:
                    walls[name].append(time.perf_counter() - t0)
                row = store.rows(study=name, trial_number=numbers[name])
                compiles.append([name, numbers[name], row[0]["metrics"].get("compile_s") if row else None])
                numbers[name] += 1
            executors.close()
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {walls[n][-1]:.2f} s" for n in NAMES), flush=True)
        if out and r + 1 < rounds:  # every round, so that an interrupted run keeps what it measured
            _result(out, rounds, config, walls, load_before, uptime(), compiles)
    failed = [(r["study"], r["trial_number"], r["reason"]) for r in store.rows() if r["status"] != "ok"]
    assert not failed, failed
    result = _result(out, rounds, config, walls, load_before, uptime(), compiles)
    for name, s in result["summary"].items():
        print(f"{name:15s} median {s['median_s']:6.2f} s per trial (IQR {s['iqr_s']:.2f}, min {s['min_s']:.2f}, "
              f"max {s['max_s']:.2f}, n={s['n']})")
    for name, s in result["differences"].items():
        print(f"{name:27s} median {s['median_s']:6.2f} s per trial (same round; IQR {s['iqr_s']:.2f})")
    if any(c[2] is not None for c in compiles):  # a compiled configuration: the first trial filled the cache
        print("compile_s in the order run: " + ", ".join(f"{n}#{t} {'-' if c is None else f'{c:.1f}'}"
                                                         for n, t, c in compiles))
    print(result["load_after"])
    return result


def _result(out: str | None, rounds: int, config: dict, walls: dict, load_before: str, load_after: str,
            compiles: list) -> dict:
    """Medians and spreads of the rounds so far, written to `out` (JSON) if given."""
    command = " ".join(["python -m benchmarks.executor_overhead", f"--rounds {rounds}",
                        *(f"--set {k}={v}" for k, v in config.items() if CONFIG.get(k) != v)])
    result = {"what": __doc__.strip().splitlines()[0], "command": command, "config": config, "rounds": rounds,
              "rounds_done": len(walls["inprocess"]), "seconds_per_trial": walls,
              "summary": {name: _spread(ts) for name, ts in walls.items()},
              "differences": {f"{a} - inprocess": _spread([x - y for x, y in zip(walls[a], walls["inprocess"])])
                              for a in ("papermill-cold", "papermill")},
              "compile_s_in_order": compiles, "load_before": load_before, "load_after": load_after}
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return result


def _spread(ts: list[float]) -> dict:
    q = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) > 1 else [ts[0]] * 3
    return {"median_s": statistics.median(ts), "iqr_s": q[2] - q[0], "min_s": min(ts), "max_s": max(ts), "n": len(ts)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each times one trial per executor)")
    p.add_argument("--out", help="write the medians, spreads and every time as JSON here")
    p.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                   help="change a knob of the benchmark's trial (YAML value), e.g. --set model=sd15-random")
    args = p.parse_args()
    pairs = [item.split("=", 1) for item in args.set]
    if any(len(pair) != 2 for pair in pairs):
        p.error("--set: write KNOB=VALUE, e.g. --set device=cuda")
    try:
        main(args.rounds, args.out, {k: yaml.safe_load(v) for k, v in pairs})
    except ConfigError as e:
        p.error(str(e))
