"""Quality against speed of the skip-work knobs on the bundled reference model: each configuration a workbench trial
at N images (default 256, seeds 0..N-1), against the baseline's images at the same seeds and prompts.

    python -m benchmarks.skip_quality --n 256 --out docs/skipping-data/reference-skip-256.json
    python -m benchmarks.skip_quality --n 256 --device cuda --quality-later --out ...   # generate on a GPU host
    python -m benchmarks.skip_quality quality --rows ... --images FOLDER              # then measure here

`--quality-later` generates and times only (the FID Inception weights do not travel to a GPU host): the images are
kept under `--work`, and `quality` measures every metric from them afterwards, the baseline's images as the
fidelity reference, exactly as a trial would.

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
    "tiny-narrow vae": {"vae": "tiny-narrow"},
    "early stop 0.02": {"early_stop_tol": 0.02, "early_stop_min": 0.3},
    "early stop 0.05": {"early_stop_tol": 0.05, "early_stop_min": 0.3},
    "early stop 0.1": {"early_stop_tol": 0.1, "early_stop_min": 0.3},
    "early stop 0.03": {"early_stop_tol": 0.03, "early_stop_min": 0.3},
    "early stop 0.04": {"early_stop_tol": 0.04, "early_stop_min": 0.3},
    "early stop 0.05 min0.6": {"early_stop_tol": 0.05, "early_stop_min": 0.6},
    "cfg staircase 5-7-9": {"cfg_schedule": "staircase", "cfg_start": 5.0, "cfg_scale": 9.0},
    "cfg linear 3-7.5": {"cfg_schedule": "linear", "cfg_start": 3.0},
    # the GPU runtime knobs on images that mean something (CUDA only): fidelity to the fp32 eager baseline
    "fp16": {"precision": "fp16"},
    "fp16 graphs": {"precision": "fp16", "channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                    "compile_scope": "unet+vae"},
    "fp16 graphs cache3": {"precision": "fp16", "channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                           "compile_scope": "unet+vae", "cache_interval": 3},
    "bf16 int8-dynamic": {"precision": "bf16", "torchao": "int8-dynamic"},
    "bf16": {"precision": "bf16"},
    "fp16 cudnn attention": {"precision": "fp16", "attention": "cudnn"},
    "fp16 flash attention": {"precision": "fp16", "attention": "flash"},
    "fp16 compile default": {"precision": "fp16", "channels_last": True, "fuse_qkv": True, "compile": "default"},
    "fp16 int8-weight-only": {"precision": "fp16", "torchao": "int8-weight-only"},
    "fp16 graphs cache2": {"precision": "fp16", "channels_last": True, "fuse_qkv": True, "compile": "reduce-overhead",
                           "compile_scope": "unet+vae", "cache_interval": 2},
    # compositions of the skip-work knobs at the cache interval that holds quality (2)
    "cache2 todo2": {"cache_interval": 2, "token_downsample": 2},
    "cache2 tiny vae": {"cache_interval": 2, "vae": "tiny"},
    "cache2 tiny-narrow vae": {"cache_interval": 2, "vae": "tiny-narrow"},
    "cache2 cfg linear 3-7.5": {"cache_interval": 2, "cfg_schedule": "linear", "cfg_start": 3.0},
    "cache2 early stop 0.05": {"cache_interval": 2, "early_stop_tol": 0.05, "early_stop_min": 0.3},
    # with compression: INT8 (NNCF PTQ, ONNX Runtime) of the UNet, and the tiny decoder on top (kept in torch)
    "ort fp32": {"backend": "onnxruntime"},
    "ort int8": {"backend": "onnxruntime", "quant": "ptq"},
    "ort int8 tiny vae": {"backend": "onnxruntime", "quant": "ptq", "vae": "tiny"},
    # with pruning (channels-taylor 0.3, the CPU recovery budget class: 300 steps on 128 teacher generations)
    "pruned ct0.3 r300": {"prune_ratio": 0.3, "prune_method": "channels-taylor", "recovery_steps": 300},
    "pruned ct0.3 r300 cache2": {"prune_ratio": 0.3, "prune_method": "channels-taylor", "recovery_steps": 300,
                                 "cache_interval": 2},
    # the GPU recovery budget class (4,000 steps on 8,192 teacher generations at batch 128): built on a GPU
    "pruned ct0.3 r4000": {"prune_ratio": 0.3, "prune_method": "channels-taylor", "recovery_steps": 4000},
    "pruned ct0.3 r4000 cache2": {"prune_ratio": 0.3, "prune_method": "channels-taylor", "recovery_steps": 4000,
                                  "cache_interval": 2},
}
KEEP = ("fid", "fid_lo", "fid_hi", "align_mean", "align_mean_lo", "align_mean_hi", "psnr", "psnr_se", "ssim", "ssim_se",
        "latency_s", "latency_iqr_s", "unet_s", "vae_decode_s", "text_encoder_s", "unet_calls", "gflops_per_image",
        "unet_full_fraction", "steps_run", "steps_saved_frac", "tiny_vae_psnr", "token_layers")


def main() -> None:
    import sys

    if sys.argv[1:2] == ["quality"]:
        return measure_later(sys.argv[2:])
    if sys.argv[1:2] == ["fidelity"]:
        return fidelity_to(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names (the baseline always runs)")
    p.add_argument("--quality-later", action="store_true", help="generate and time only; `quality` measures later")
    p.add_argument("--work", type=Path, default=None, help="where the images go (default results/artifacts/...)")
    p.add_argument("--out", type=Path, default=Path("results/skip-quality.json"))
    args = p.parse_args()

    from workbench import paths
    from workbench.trial import run_trial

    work = args.work or paths.results() / "artifacts" / f"skip-quality-{args.n}"
    names = ["baseline"] + [c for c in args.configs.split(",") if c and c != "baseline"]
    rows = []
    for name in names:
        cfg = {**BASE, "seeds": f"0-{args.n - 1}", "device": args.device, "quality": not args.quality_later,
               **CONFIGS[name]}
        t0 = time.time()
        row = run_trial(cfg, artifacts_dir=work / folder_name(name),
                        baseline_dir=None if name == "baseline" else work / "baseline" / "images", progress=True)
        m = row["metrics"]
        rows.append({"name": name, "config": cfg, "metrics": {k: m[k] for k in KEEP if k in m},
                     "protocols": {k: row["protocols"][k] for k in ("fid", "align_mean", "psnr") if k in row["protocols"]},
                     "wall_s": time.time() - t0, "provenance": row["provenance"]})
        show(rows[-1])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"n": args.n, "base": BASE, "rows": rows}, indent=1, default=str))


def folder_name(name: str) -> str:
    return name.replace(" ", "_").replace(".", "p")


def show(row: dict) -> None:
    r, name = row["metrics"], row["name"]
    print(f"{name:22s} FID {r.get('fid', float('nan')):6.2f} [{r.get('fid_lo', float('nan')):.2f}, "
              f"{r.get('fid_hi', float('nan')):.2f}]  align {r.get('align_mean', float('nan')):.3f} "
              f"[{r.get('align_mean_lo', float('nan')):.3f}, {r.get('align_mean_hi', float('nan')):.3f}]  "
              f"PSNR {r.get('psnr', float('nan')):5.1f}  latency {r['latency_s'] * 1e3:7.1f} ms  "
              f"UNet calls {r.get('unet_calls', float('nan')):.0f}  GFLOP {r.get('gflops_per_image', float('nan')):.2f}"
              f"  steps run {r.get('steps_run', float('nan')):.1f}", flush=True)


def measure_later(argv: list[str]) -> None:
    """Every quality metric of rows generated with --quality-later, from their images (baseline first)."""
    p = argparse.ArgumentParser(prog="skip_quality quality")
    p.add_argument("--rows", type=Path, required=True, help="the JSON written by the generating run")
    p.add_argument("--images", type=Path, required=True, help="the generating run's --work folder, copied here")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--names", default="", help="comma-separated rows to measure (default: all; baseline first)")
    args = p.parse_args(argv)

    import torch

    from workbench.config import TrialConfig
    from workbench.trial import plan, quality

    data = json.loads(args.rows.read_text())
    wanted = [n for n in args.names.split(",") if n]
    if wanted:
        data["rows"] = [r for r in data["rows"] if r["name"] in ["baseline"] + wanted]
    for row in data["rows"]:
        cfg = TrialConfig.from_dict({**row["config"], "device": "cpu", "quality": True})
        work = plan(cfg)
        baseline = None if row["name"] == "baseline" else args.images / "baseline" / "images"
        metrics, protocols, _ = quality(cfg, work, args.images / folder_name(row["name"]), baseline, torch.device("cpu"))
        row["metrics"].update({k: metrics[k] for k in KEEP if k in metrics})
        row["protocols"] = {k: protocols[k] for k in ("fid", "align_mean", "psnr") if k in protocols}
        row["quality_measured"] = "afterwards, on a CPU, from the generated images (skip_quality quality)"
        show(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(data, indent=1, default=str))


def fidelity_to(argv: list[str]) -> None:
    """PSNR/SSIM of generated rows' images to another row's (e.g. the fp16 runtime knobs to fp16 eager), same seeds."""
    p = argparse.ArgumentParser(prog="skip_quality fidelity")
    p.add_argument("--images", type=Path, required=True, help="the generating run's --work folder")
    p.add_argument("--against", required=True, help="the row whose images are the reference (e.g. 'fp16')")
    p.add_argument("--names", required=True, help="comma-separated rows")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from workbench.images import load_images
    from workbench.measure.fidelity import per_image

    def images(name: str) -> tuple[list[int], torch.Tensor]:
        folder = args.images / folder_name(name) / "images"
        seeds = sorted(int(f.stem[4:]) for f in folder.glob("seed*.png"))
        return seeds, load_images(folder, seeds)

    seeds, reference = images(args.against)
    out = {"against": args.against, "n": len(seeds), "seeds": f"{seeds[0]}-{seeds[-1]}", "rows": {}}
    for name in [n for n in args.names.split(",") if n]:
        their_seeds, theirs = images(name)
        assert their_seeds == seeds, f"{name}: other seeds than {args.against}"
        values = per_image(theirs, reference)
        out["rows"][name] = {k: {"mean": float(v.mean()), "se": float(v.std() / np.sqrt(len(v)))}
                             for k, v in values.items()}
        print(f"{name:28s} PSNR {out['rows'][name]['psnr']['mean']:6.2f} dB (se {out['rows'][name]['psnr']['se']:.2f})"
              f"  SSIM {out['rows'][name]['ssim']['mean']:.4f} to {args.against}", flush=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
