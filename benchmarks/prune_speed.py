"""CPU cost of pruned UNets: parameters, FLOPs and UNet latency against the unpruned UNet, interleaved in one run.

    python -m benchmarks.prune_speed --ratios 0.1,0.2,0.3,0.4,0.5 --repeats 15 --out results/prune-speed.json

Every pruned UNet comes from the artifact cache (built now if absent, through the path trials use). Latency is
one UNet call (the reference model's 16x16x4 latents, 32 text tokens) at batch 2 (one image with CFG) and
batch 16 (8 images with CFG, the trials' default), timed in rounds: each round calls every model once in a fresh
random order, so the load of other processes on this shared machine falls on all models alike. Reported per model:
median and interquartile range over rounds, and the median over rounds of (unpruned time / pruned time) of the
same round. Threads are pinned; `uptime` is recorded before and after.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from benchmarks.timing import interleaved, summarise, uptime
from workbench.compress.specs import PRUNE_METHODS, PruneSpec


def main(argv=None) -> None:
    from workbench.compress import prune
    from workbench.compress.build import pruned_unet
    from workbench.models import load_pipeline
    from workbench.prompts import load_prompts, prompt_set_version

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(PRUNE_METHODS))
    p.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5")
    p.add_argument("--batches", default="2,16")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/prune-speed.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    prompts = load_prompts("world-v1")
    pipe = load_pipeline("reference")
    models = {"unpruned": pipe.unet.eval()}
    rows = {"unpruned": {"params": sum(q.numel() for q in pipe.unet.parameters()),
                         "flops": prune.unet_cost(pipe.unet, 32)["flops"]}}
    for method in args.methods.split(","):
        for ratio in map(float, args.ratios.split(",")):
            unet, report = pruned_unet(pipe, PruneSpec(method, ratio), prompts, prompt_set_version("world-v1"))
            name = f"{method}@{ratio}"
            models[name] = unet.eval()
            rows[name] = {"params": report["params_after"], "flops": report["flops_after"], "key": report["key"],
                          "kd_mse": report["kd_mse"], "prune_s": report["prune_s"],
                          "kept": report["prune"].get("stage_kept"), "removed": report["prune"].get("removed"),
                          "heads": sorted(set(report["prune"]["heads"].values()))}
            print(f"built/loaded {name}: params {report['params_after'] / rows['unpruned']['params']:.3f}x", flush=True)
    result = {"threads": args.threads, "repeats": args.repeats, "uptime_before": uptime(), "torch": torch.__version__,
              "cpu": os.cpu_count(), "rows": rows}
    for batch in map(int, args.batches.split(",")):
        c = pipe.unet.config
        inputs = {"sample": torch.randn(batch, c.in_channels, c.sample_size, c.sample_size),
                  "timestep": torch.full((batch,), 500), "encoder_hidden_states": torch.randn(batch, 32, 128)}
        with torch.no_grad():
            times = interleaved({n: (lambda m=m: m(**inputs)) for n, m in models.items()}, args.repeats)
        for n, stats in summarise(times, ("unpruned",)).items():
            rows[n][f"b{batch}"] = {**{k: v for k, v in stats.items() if not k.startswith("speedup")},
                                    "speedup": stats["speedup_vs_unpruned"]}
    result["uptime_after"] = uptime()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    base = rows["unpruned"]
    print(f"\n{result['uptime_before']}\n{result['uptime_after']}\nthreads {args.threads}, {args.repeats} rounds")
    print(f"{'model':28s} {'params':>7s} {'FLOPs':>6s} " + " ".join(
        f"{'b' + b + ' ms (IQR)':>17s} {'x':>5s}" for b in args.batches.split(",")))
    for n, r in rows.items():
        cells = " ".join(f"{r[f'b{b}']['median_ms']:8.1f} ({r[f'b{b}']['iqr_ms']:5.1f}) {r[f'b{b}']['speedup']:5.2f}"
                         for b in args.batches.split(","))
        print(f"{n:28s} {r['params'] / base['params']:7.3f} {r['flops'] / base['flops']:6.3f} {cells}")


if __name__ == "__main__":
    main()
