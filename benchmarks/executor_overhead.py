"""Benchmark: per-trial overhead of the papermill executor against in-process, same configuration.

Runs 5 trials with each executor (tiny config on the bundled model) and prints the median wall time per trial
and the difference. Results go to a throw-away SQLite store.
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

from workbench.config import TrialConfig
from workbench.study.executors import run_inprocess, run_papermill
from workbench.study.store import Store


def main(n: int = 5) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wb-bench-"))
    url = f"sqlite:///{tmp}/bench.db"
    cfg = TrialConfig(steps=10, seeds="0-7", batch_size=8, timing_repeats=1).to_dict()
    walls = {}
    for name, run in (("inprocess", run_inprocess), ("papermill", run_papermill)):
        walls[name] = []
        for i in range(n + 1):  # the first in-process trial pays one-off imports and caches: not counted
            t0 = time.perf_counter()
            run(cfg, storage=url, study=name, trial_number=i, baseline_dir=None, artifacts_dir=tmp / name / str(i),
                timeout_s=600)
            if i:
                walls[name].append(time.perf_counter() - t0)
    assert all(r["status"] == "ok" for r in Store(url).rows())
    med = {k: statistics.median(v) for k, v in walls.items()}
    for k, v in walls.items():
        print(f"{k:10s} median {med[k]:.2f} s per trial (min {min(v):.2f}, max {max(v):.2f}, n={len(v)})")
    print(f"papermill overhead per trial: {med['papermill'] - med['inprocess']:.2f} s "
          f"({med['papermill'] / med['inprocess']:.2f}x)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5, help="timed trials per executor (after one untimed)")
    main(p.parse_args().n)
