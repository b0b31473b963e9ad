"""Build the compression artifacts of `experiments/compress.yaml` ahead of its sweep (e.g. on a many-core machine).

    python scripts/compress_artifacts.py --prune 0.1 --modes ptq,qat --keeps 0,0.1,0.2 [--qat-steps 100]

For each (prune ratio, mode, kept fraction) one cost-only trial (one image, no quality) with the experiment's fixed
knobs (ONNX Runtime, channels-taylor, sensitivity importance) builds through the trial's own cached path whatever
that trial needs: teacher samples, pruned UNet, calibration, importance, INT8 UNet. Artifacts are keyed by their
inputs and this package's code, not by the machine, so folders built elsewhere load unchanged in the sweep's trials
(copy them under results/compressed/). Prints each trial's build columns.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    from workbench.config import TrialConfig
    from workbench.trial import run_trial

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prune", type=float, default=0.0)
    p.add_argument("--modes", default="ptq,qat")
    p.add_argument("--keeps", default="0,0.1,0.2")
    p.add_argument("--qat-steps", type=int, default=100)
    p.add_argument("--importance", default="sensitivity")
    args = p.parse_args()
    for mode in args.modes.split(","):
        for keep in (float(k) for k in args.keeps.split(",")):
            t0 = time.time()
            cfg = TrialConfig.from_dict({"seeds": "0", "batch_size": 1, "timing_repeats": 1, "quality": False,
                                         "device": "cpu", "backend": "onnxruntime", "prune_ratio": args.prune,
                                         "prune_method": "channels-taylor", "quant": mode, "quant_keep": keep,
                                         "importance": args.importance, "qat_steps": args.qat_steps})
            row = run_trial(cfg, progress=False)
            m = row["metrics"]
            cols = ("prune_s", "calibration_s", "importance_s", "quantize_s", "qat_s", "export_s")
            print(f"prune {args.prune} {mode} keep {keep}: " + " ".join(f"{c} {m[c]:.0f}" for c in cols if m.get(c))
                  + f" ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
