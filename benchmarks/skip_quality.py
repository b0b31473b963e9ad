"""Quality against speed of the skip-work knobs on the bundled reference model: each configuration a workbench trial
at N images (default 256, seeds 0..N-1), against the baseline's images at the same seeds and prompts.

    python -m benchmarks.skip_quality --n 256 --out docs/skipping-data/cpu-reference-skip-256.json

Per configuration: FID@N with its bootstrap interval, alignment with its interval, PSNR/SSIM to the baseline's
images, latency (median, IQR), UNet calls and FLOPs per image, the steps early stop ran. Quality is measured from
the images on disk as in any trial; the baseline runs first and is the fidelity reference of the others.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

BASE = {"model": "reference", "scheduler": "dpm++2m", "steps": 25, "cfg_scale": 7.5, "batch_size": 16,
        "timing_repeats": 2, "prompt_set": "world-v1"}
CONFIGS = {
    "baseline": {},
    "cache2": {"cache_interval": 2},
    "cache3": {"cache_interval": 3},
    "cache3 d1": {"cache_interval": 3, "cache_depth": 1},
    "cache5": {"cache_interval": 5},
    "todo2": {"token_downsample": 2},
    "tiny vae": {"vae": "tiny"},
    "early stop 0.02": {"early_stop_tol": 0.02, "early_stop_min": 0.3},
    "early stop 0.05": {"early_stop_tol": 0.05, "early_stop_min": 0.3},
    "early stop 0.1": {"early_stop_tol": 0.1, "early_stop_min": 0.3},
    "cfg staircase 5-7-9": {"cfg_schedule": "staircase", "cfg_start": 5.0, "cfg_scale": 9.0},
    "cfg linear 3-7.5": {"cfg_schedule": "linear", "cfg_start": 3.0},
}
KEEP = ("fid", "fid_lo", "fid_hi", "align_mean", "align_mean_lo", "align_mean_hi", "psnr", "psnr_se", "ssim", "ssim_se",
        "latency_s", "latency_iqr_s", "unet_s", "vae_decode_s", "text_encoder_s", "unet_calls", "gflops_per_image",
        "unet_full_fraction", "steps_run", "steps_saved_frac", "tiny_vae_psnr", "token_layers")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names (the baseline always runs)")
    p.add_argument("--out", type=Path, default=Path("results/skip-quality.json"))
    args = p.parse_args()

    from workbench import paths
    from workbench.trial import run_trial

    work = paths.results() / "artifacts" / f"skip-quality-{args.n}"
    names = ["baseline"] + [c for c in args.configs.split(",") if c and c != "baseline"]
    rows = []
    for name in names:
        cfg = {**BASE, "seeds": f"0-{args.n - 1}", **CONFIGS[name]}
        t0 = time.time()
        row = run_trial(cfg, artifacts_dir=work / name.replace(" ", "_"),
                        baseline_dir=None if name == "baseline" else work / "baseline" / "images", progress=True)
        m = row["metrics"]
        rows.append({"name": name, "config": CONFIGS[name], "metrics": {k: m[k] for k in KEEP if k in m},
                     "protocols": {k: row["protocols"][k] for k in ("fid", "align_mean", "psnr") if k in row["protocols"]},
                     "wall_s": time.time() - t0, "provenance": row["provenance"]})
        r = rows[-1]["metrics"]
        print(f"{name:22s} FID {r.get('fid', float('nan')):6.2f} [{r.get('fid_lo', float('nan')):.2f}, "
              f"{r.get('fid_hi', float('nan')):.2f}]  align {r.get('align_mean', float('nan')):.3f} "
              f"[{r.get('align_mean_lo', float('nan')):.3f}, {r.get('align_mean_hi', float('nan')):.3f}]  "
              f"PSNR {r.get('psnr', float('nan')):5.1f}  latency {r['latency_s'] * 1e3:7.1f} ms  "
              f"UNet calls {r.get('unet_calls', float('nan')):.0f}  GFLOP {r.get('gflops_per_image', float('nan')):.2f}"
              f"  steps run {r.get('steps_run', float('nan')):.1f}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"n": args.n, "base": BASE, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
