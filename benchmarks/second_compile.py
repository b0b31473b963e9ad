"""What a fresh process pays to compile a configuration that an earlier process compiled: Inductor's caches alone
(`compile_cache: inductor`) against Dynamo's traced code cached too (`compile_cache: precompile`).

    python -m benchmarks.second_compile --model reference --repeats 3 --out docs/gpu-data/second-compile-cpu.json

For each cache mode, in its own empty results folder: one process compiles cold, then `--repeats` fresh processes
run the same trial (`run_trial`, as a sweep's papermill kernel does). Per process: `compile_s` (torch.compile at
build plus the warm-up batch minus a timed batch), Dynamo's tracing seconds and torch's cache counters. Prints
the median and range of the warm processes per mode, their ratio, and whether the images are those of the cold
process; writes every process's numbers to `--out`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = """
import json, sys
from workbench.trial import run_trial
import torch._dynamo.utils as u
row = run_trial(json.loads(sys.argv[1]), artifacts_dir=sys.argv[2], progress=False)
names, seconds = u.compile_times(repr="csv", aggregate=True)
phases = dict(zip(names, map(float, seconds)))
print("ROW " + json.dumps({"compile_s": row["metrics"]["compile_s"], "compile_load_s": row["metrics"]["compile_load_s"],
                           "latency_s": row["metrics"]["latency_s"], "tracing_s": phases.get("bytecode_tracing", 0.0),
                           "dynamo_cache": dict(u.counters["dynamo_cache"]),
                           "fxgraph_cache_hit": u.counters["inductor"]["fxgraph_cache_hit"],
                           "images": row["artifacts"]["images"], "device": row["provenance"].get("device")}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="reference")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", default="default", help="compile mode (reduce-overhead needs CUDA)")
    p.add_argument("--scope", default="unet+vae", help="compile_scope")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--images", type=int, default=2, help="images a trial (seeds 0..N-1), one batch")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes after the cold one, per mode")
    p.add_argument("--modes", default="inductor,precompile")
    p.add_argument("--timeout", type=int, default=900, help="seconds per process")
    p.add_argument("--out", type=Path, default=Path("results/second-compile.json"))
    args = p.parse_args()
    cfg = {"model": args.model, "device": args.device, "steps": args.steps, "seeds": f"0-{args.images - 1}",
           "batch_size": args.images, "quality": False, "timing_repeats": 2, "compile": args.compile,
           "compile_scope": args.scope}
    from workbench.images import load_images

    work = Path(tempfile.mkdtemp(prefix="second-compile-"))
    out: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "modes": {}}
    for mode in args.modes.split(","):
        env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
        env["WORKBENCH_RESULTS"] = str(work / mode / "results")  # an empty compile cache for this mode
        runs = []
        for i in range(1 + args.repeats):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", PROBE, json.dumps({**cfg, "compile_cache": mode}),
                                   str(work / mode / f"run{i}")], capture_output=True, text=True, env=env,
                                  timeout=args.timeout)
            if done.returncode != 0 or "ROW " not in done.stdout:
                raise SystemExit(f"{mode} process {i} failed: {done.stderr.strip().splitlines()[-1:]}")
            row = json.loads(done.stdout.split("ROW ", 1)[1].splitlines()[0])
            row["process_s"] = time.perf_counter() - t0
            row["same_images_as_cold"] = bool(i == 0 or (load_images(Path(row["images"]), list(range(args.images)))
                                                         == load_images(Path(runs[0]["images"]),
                                                                        list(range(args.images)))).all())
            runs.append(row)
            print(f"{mode} {'cold' if i == 0 else f'warm {i}'}: compile {row['compile_s']:.1f} s (at build "
                  f"{row['compile_load_s']:.1f}, Dynamo tracing {row['tracing_s']:.1f}), process {row['process_s']:.0f} s, "
                  f"loaded {row['dynamo_cache']}, same images {row['same_images_as_cold']}", flush=True)
        warm = [r["compile_s"] for r in runs[1:]]
        out["modes"][mode] = {"cold_s": runs[0]["compile_s"], "warm_median_s": statistics.median(warm),
                              "warm_min_s": min(warm), "warm_max_s": max(warm), "runs": runs}
    modes = out["modes"]
    print(f"\n{args.model}, compile {args.compile} ({args.scope}), {runs[0]['device']}: a fresh process's compile_s")
    for mode, m in modes.items():
        print(f"  {mode:11s} cold {m['cold_s']:7.1f} s   warm median {m['warm_median_s']:6.1f} s "
              f"(range {m['warm_min_s']:.1f}-{m['warm_max_s']:.1f}, {args.repeats} processes)")
    if {"inductor", "precompile"} <= set(modes):
        out["warm_ratio"] = modes["inductor"]["warm_median_s"] / modes["precompile"]["warm_median_s"]
        print(f"  precompile's warm compile {out['warm_ratio']:.2f}x faster than Inductor's caches alone")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
