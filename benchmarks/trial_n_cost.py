"""Benchmark: what N images a trial cost, the quickstart's baseline configuration, in-process, interleaved.

    python -m benchmarks.trial_n_cost --ns 32,64 --repeats 2 --out docs/quality-metrics-data/trial-n-cost.json

One untimed warm-up trial (imports, model and quality networks, reference features), then `repeats` rounds, each
running every N once in turn; reports wall seconds per trial and the row's stage timings. The papermill executor
adds a fixed ~16.6 s per trial on top (benchmarks/executor_overhead.py), whatever N.
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from workbench.config import TrialConfig
from workbench.trial import run_trial


def main(ns: list[int], repeats: int, out: Path | None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="wb-ncost-"))
    base = {"scheduler": "dpm++2m", "steps": 25, "cfg_scale": 7.5, "batch_size": 8, "timing_repeats": 2,
            "prompt_set": "world-v1"}  # experiments/quickstart.yaml's baseline and fixed settings
    run_trial(TrialConfig.from_dict({**base, "seeds": "0-7"}), artifacts_dir=tmp / "warm", progress=False)
    runs = {n: [] for n in ns}
    load = [os.getloadavg()[0]]
    for r in range(repeats):
        for n in ns:
            t0 = time.perf_counter()
            row = run_trial(TrialConfig.from_dict({**base, "seeds": f"0-{n - 1}"}), artifacts_dir=tmp / f"{n}-{r}",
                            progress=False)
            runs[n].append({"wall_s": time.perf_counter() - t0, "timings": row["timings"]})
            load.append(os.getloadavg()[0])
    summary = {n: statistics.median(x["wall_s"] for x in v) for n, v in runs.items()}
    for n, s in summary.items():
        each = ", ".join(f"{x['wall_s']:.1f}" for x in runs[n])
        print(f"N = {n}: median {s:.1f} s per trial ({each})")
    result = {"what": __doc__.splitlines()[0], "config": base, "cpu_count": os.cpu_count(), "load_average_1min": load,
              "median_wall_s": summary, "runs": runs}
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {out}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", default="32,64")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    main([int(n) for n in a.ns.split(",")], a.repeats, a.out)
