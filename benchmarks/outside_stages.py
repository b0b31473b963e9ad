"""Time an image spends outside its timed stages, per UNet call, by sampler, from the rows of results stores.

    python -m benchmarks.outside_stages --storage sqlite:///docs/gpu-data/gpu-sweeps-2026-11-26.db \
        --storage sqlite:///docs/gpu-data/gpu-sd15-skip-2026-11-26.db --out docs/gpu-data/outside-stages.json

A trial's row times the image (`latency_s`) and, with CUDA events on a GPU, its stages (text encoders, UNet calls,
VAE decoder). What is left, divided by the UNet calls, is the work of each step that is neither: the scheduler's
step, the pipeline's Python, and any wait the host adds. On a GPU the host normally queues that work while the
GPU is still busy, so it stays small; a step that synchronises the host with the device exposes all of it. Rows are
grouped by study, sampler and whether the UNet ran as CUDA graphs; medians and ranges per group. Nothing is timed
here: it reads what the sweeps measured.
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def outside_per_call(row: dict) -> float | None:
    """Milliseconds of an image outside its timed stages, per UNet call (None if the row lacks a stage)."""
    stages = [row.get(k) for k in ("latency_s", "unet_s", "unet_calls")]
    if any(v is None or v != v for v in stages) or not row["unet_calls"]:
        return None
    inside = row["unet_s"] + (row.get("text_encoder_s") or 0.0) + (row.get("vae_decode_s") or 0.0)
    return (row["latency_s"] - inside) / row["unet_calls"] * 1e3


def groups(frame) -> dict:
    """(study, scheduler, graphs) -> per-call milliseconds outside the stages, one value per completed trial."""
    out = defaultdict(list)
    for row in frame.to_dict("records"):
        if row.get("status") != "ok" or str(row.get("device", "")).startswith("cpu"):
            continue
        value = outside_per_call(row)
        if value is not None:
            graphs = "graphs" if row.get("compile") == "reduce-overhead" else "no graphs"
            out[(row["study"], row["scheduler"], graphs)].append(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", action="append", required=True, help="a results store (repeatable)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    from workbench.study.store import trials

    table = defaultdict(list)
    for storage in args.storage:
        for key, values in groups(trials(storage=storage)).items():
            table[key] += values
    rows = [{"study": s, "scheduler": sched, "unet": graphs, "trials": len(v), "median_ms": statistics.median(v),
             "min_ms": min(v), "max_ms": max(v)} for (s, sched, graphs), v in sorted(table.items())]
    print(f"{'study':16s} {'sampler':10s} {'UNet':10s} {'trials':>6s} {'ms a step outside the stages: median':>38s} "
          f"{'range':>14s}")
    for r in rows:
        print(f"{r['study']:16s} {r['scheduler']:10s} {r['unet']:10s} {r['trials']:6d} {r['median_ms']:38.2f} "
              f"{r['min_ms']:6.2f}-{r['max_ms']:.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"storages": args.storage, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
