"""CPU latency of the UNet in torch and ONNX Runtime, fp32 and INT8 (NNCF PTQ, kept fractions, presets), one run.

    python -m benchmarks.quant_speed --repeats 21 --out results/quant-speed.json

Every model comes from the artifact cache through the path trials use (`build_pipeline` with the backend / quant
knobs): its UNet is called as the pipeline calls it (torch module or ONNX Runtime stand-in), on UNet inputs captured
from a real pipeline run (16x16x4 latents, 32 tokens) at batch 16 (8 images with CFG, a trial's default) and batch 2
(one image with CFG). Rounds interleave the models in a fresh random order so another process's load falls on all
alike; reported per model: median and IQR over rounds and, per round, its time relative to ONNX Runtime fp32 and
to torch fp32 (median of the per-round ratios). Threads pinned (torch and ONNX Runtime intra-op); `uptime` before
and after, since this CPU is shared.

ONNX Runtime's intra-op threads spin-wait after each call by default, holding the cores for a while: in interleaved
rounds that time falls on the next model (torch slowed ~5x at batch 2 in a run of 2026-11-23). The sessions are
therefore re-created here with spinning off (`--spinning` keeps ORT's default), so each model is timed on idle cores.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.timing import interleaved, summarise, uptime

MODELS = {  # name -> knob settings over the reference model's defaults
    "torch fp32": {},
    "torch bf16": {"precision": "bf16"},
    "ORT fp32": {"backend": "onnxruntime"},
    "ORT INT8 full": {"backend": "onnxruntime", "quant": "ptq"},
    "ORT INT8 keep 10% (sensitivity)": {"backend": "onnxruntime", "quant": "ptq", "quant_keep": 0.1},
    "ORT INT8 keep 20% (sensitivity)": {"backend": "onnxruntime", "quant": "ptq", "quant_keep": 0.2},
    "ORT INT8 full (preset performance)": {"backend": "onnxruntime", "quant": "ptq", "quant_preset": "performance"},
    "ORT fp32 (channels-taylor 0.3)": {"backend": "onnxruntime", "prune_ratio": 0.3},
    "ORT INT8 full (channels-taylor 0.3)": {"backend": "onnxruntime", "quant": "ptq", "prune_ratio": 0.3},
}


def _without_spinning(path: str, threads: int):
    """The session `runtime.session` makes, with the intra-op threads sleeping instead of spinning between calls."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    from workbench.compress import calibration
    from workbench.config import TrialConfig
    from workbench.models import load_pipeline
    from workbench.prompts import load_prompts, prompt_set_version
    from workbench.trial import build_pipeline

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated names of MODELS")
    p.add_argument("--batches", default="16,2")
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/quant-speed.json"))
    p.add_argument("--spinning", action="store_true", help="keep ONNX Runtime's spin-waiting threads (its default)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n]
    unets = {}
    for name in names:
        cfg = TrialConfig.from_dict({"device": "cpu", **MODELS[name]})
        t0 = time.time()
        unets[name] = build_pipeline(cfg, torch.device("cpu"))[0].unet.eval()
        print(f"{name}: ready in {time.time() - t0:.1f} s", flush=True)
    if not args.spinning:
        for unet in unets.values():
            if hasattr(unet, "session"):
                unet.session = _without_spinning(unet.path, args.threads)
    calib = calibration.calibration(load_pipeline("reference"), load_prompts("world-v1"), prompt_set_version("world-v1"))
    sample, timestep, embeds = calib.unet[len(calib.unet) // 2]
    before = uptime()
    result = {"threads": args.threads, "repeats": args.repeats, "uptime_before": before, "batches": {},
              "ort_spinning": args.spinning}
    for batch in [int(b) for b in args.batches.split(",")]:
        inputs = (sample[:batch], timestep[:batch], embeds[:batch])
        calls = {}
        for n in names:
            dtype = torch.bfloat16 if "bf16" in n else torch.float32
            call = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
            calls[n] = lambda unet=unets[n], call=call: unet(*call, return_dict=False)
        with torch.no_grad():
            times = interleaved(calls, args.repeats)
        rows = summarise(times, ("ORT fp32", "torch fp32"))
        result["batches"][batch] = rows
        print(f"\nbatch {batch} ({args.repeats} interleaved rounds, {args.threads} threads)")
        print(f"{'model':40s} {'median ms':>10s} {'IQR ms':>8s} {'x vs ORT fp32':>14s} {'x vs torch fp32':>16s}")
        for n, r in rows.items():
            print(f"{n:40s} {r['median_ms']:10.1f} {r['iqr_ms']:8.1f} {r.get('speedup_vs_ORT_fp32', float('nan')):14.2f} "
                  f"{r.get('speedup_vs_torch_fp32', float('nan')):16.2f}", flush=True)
    result["uptime_after"] = uptime()
    print(f"\nuptime before: {before}\nuptime after:  {result['uptime_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
