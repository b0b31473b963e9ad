"""Does a trial's memory stay bounded by the batch? Peak memory of whole trials (quality included) at two N.

Each N runs in a fresh process (so one trial's caches never flatter the other), with every metric on; images
stream to disk and quality is measured from there. Prints the process's peak resident set (VmHWM, the whole
run) and, on CUDA, the allocator peak, for each N and their ratio. Goal: 2,000 images within 1.5x of 200.

    python -m benchmarks.trial_memory                       # N = 200 and 2000 on this machine
    python -m benchmarks.trial_memory --ns 200,2000 --device cuda
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

CHILD = """
import json, sys, torch
from workbench.config import TrialConfig
from workbench.trial import run_trial
n, device, steps, batch, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if device.startswith("cuda"):
    torch.cuda.reset_peak_memory_stats()
row = run_trial(TrialConfig(seeds=f"0-{n - 1}", scheduler="ddim", steps=steps, batch_size=batch, timing_repeats=1,
                            device=device), artifacts_dir=out, progress=False)
hwm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
cuda = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
print("RESULT " + json.dumps({"n": n, "peak_rss_mib": hwm / 2**20, "cuda_peak_mib": cuda and cuda / 2**20,
                              "kid": row["metrics"].get("kid"), "quality_s": row["timings"].get("quality_s")}))
"""


def measure(n: int, device: str, steps: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(n), device, str(steps), str(batch), out],
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"trial of {n} images failed:\n{proc.stderr[-2000:]}")
        result = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))[7:])
        result["wall_s"] = time.time() - t0
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", default="200,2000", help="comma-separated image counts")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=2, help="denoising steps (memory does not depend on them)")
    p.add_argument("--batch", type=int, default=50)
    args = p.parse_args()
    results = [measure(int(n), args.device, args.steps, args.batch) for n in args.ns.split(",")]
    for r in results:
        cuda = f", CUDA allocator peak {r['cuda_peak_mib']:.0f} MiB" if r["cuda_peak_mib"] else ""
        print(f"N={r['n']:>6,}: peak RSS {r['peak_rss_mib']:.0f} MiB{cuda} (whole trial {r['wall_s']:.0f} s, "
              f"quality {r['quality_s']:.0f} s)")
    lo, hi = results[0], results[-1]
    print(f"peak RSS ratio N={hi['n']:,} / N={lo['n']:,}: {hi['peak_rss_mib'] / lo['peak_rss_mib']:.3f}x "
          f"(goal <= 1.5x)")
    if lo["cuda_peak_mib"]:
        print(f"CUDA peak ratio: {hi['cuda_peak_mib'] / lo['cuda_peak_mib']:.3f}x")


if __name__ == "__main__":
    main()
