"""Quality of pruned UNets on this CPU (normal trials), FID@N of images made elsewhere, and the docs' figure.

    python -m benchmarks.prune_quality trials --specs channels-taylor:0.3:0,blocks:0.5:200 --images 32
    python -m benchmarks.prune_quality fid --images-dir DIR --names unpruned,channels-taylor-0.3-r3000
    python -m benchmarks.prune_quality figure --speed results/prune-speed.json --quality results/prune-quality.json \
        --recovery DIR/recovery.json --out docs/pruning_quality_latency.png

`trials` runs one `run_trial` per spec (the unpruned baseline first, whose images anchor PSNR/SSIM), default
sampling (DPM++ 2M, 25 steps, CFG 7.5), seeds 0..N-1: FID@N against N world test-split scenes, alignment, CLIP
score, PSNR/SSIM to the unpruned images. `fid` computes FID for the xz image arrays written by
benchmarks/prune_recovery.py (same FID protocol as trials). `figure` draws alignment and PSNR against the
UNet's CPU latency ratio (from prune_speed), one line per method, recovered (dashed) and not (solid).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def trials(args) -> None:
    from workbench.config import TrialConfig
    from workbench.trial import run_trial

    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {"images": args.images, "rows": {}}
    base_dir = Path("results/artifacts/prune-quality/unpruned")
    specs = [("unpruned", None)] + [(s, s.split(":")) for s in args.specs.split(",")]
    for name, parts in specs:
        if name in result["rows"]:
            continue
        cfg = {"seeds": f"0-{args.images - 1}", "timing_repeats": 1, "batch_size": 8}
        if parts:
            cfg.update(prune_method=parts[0], prune_ratio=float(parts[1]), recovery_steps=int(parts[2]))
        folder = base_dir if parts is None else Path("results/artifacts/prune-quality") / name.replace(":", "-")
        row = run_trial(TrialConfig.from_dict(cfg), baseline_dir=None if parts is None else base_dir / "images",
                        artifacts_dir=folder, progress=False)
        result["rows"][name] = {"metrics": row["metrics"], "prune": row["protocols"].get("prune")}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str))
        m = row["metrics"]
        print(f"{name:32s} FID@{args.images} {m.get('fid', float('nan')):7.2f} align {m['align_mean']:.3f} "
              f"CLIP {m['clip_score']:.2f} PSNR {m.get('psnr', float('nan')):.2f}", flush=True)


def fid(args) -> None:
    """FID@N (+ 95 % bootstrap interval), KID (mean, sd over subsets) and PSNR/SSIM to the unpruned images, for
    image arrays made elsewhere: the trials' protocol (`workbench.measure.quality`), the reference set the first N
    world test-split scenes. Inception features are cached beside each array (`*.inception-N.pt`)."""
    import torch

    from benchmarks.prune_recovery import load_images
    from workbench.config import TrialConfig
    from workbench.measure import fid as fid_mod
    from workbench.measure import kid as kid_mod
    from workbench.measure.fidelity import fidelity
    from workbench.measure.quality import fid_reference
    from workbench.trial import RESULTS

    cpu = torch.device("cpu")
    out_path = Path(args.out)
    out = json.loads(out_path.read_text()) if out_path.is_file() else {}
    folder = Path(args.images_dir)
    names = args.names.split(",") if args.names else sorted(
        p.name[len("images-"):-len(".npy.xz")] for p in folder.glob("images-*.npy.xz"))
    base_all = load_images(folder / "images-unpruned.npy.xz") if (folder / "images-unpruned.npy.xz").is_file() else None
    for name in names:
        images = load_images(folder / f"images-{name}.npy.xz")[:args.n or None]
        n = len(images)
        if out.get(name, {}).get("n") == n and not args.force:
            print(f"{name:32s} done (FID@{n} {out[name]['fid']:.2f})", flush=True)
            continue
        ref_name, ref_images = fid_reference(TrialConfig(), n)
        real = fid_mod.reference_features(ref_name, n, ref_images, RESULTS / "fid-reference", cpu).double()
        feat_path = folder / f"images-{name}.inception-{n}.pt"
        fake = fid_mod.cached_reference(feat_path, lambda: fid_mod.features(images, cpu)).double()
        row = {"n": n, "fid": fid_mod.fid(fake, real), "reference_set": ref_name, "feature_extractor": fid_mod.EXTRACTOR}
        if args.interval:
            draws = fid_mod.bootstrap_resamples(n)
            row["fid_lo"], row["fid_hi"] = fid_mod.fid_interval(fake, real, draws, point=row["fid"])
            row["fid_interval"] = f"95 % bootstrap over the generated images, {draws} draws, reference fixed"
        size = kid_mod.subset_size(n, n)
        row["kid"], row["kid_sd"] = kid_mod.kid(fake, real, size=size)
        row["kid_protocol"] = f"{kid_mod.SUBSETS} subsets of {size}, seed 0; sd over subsets"
        if base_all is not None and name != "unpruned" and len(base_all) >= n:
            row.update(fidelity(images, base_all[:n]))
        out[name] = row
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(out, indent=1))
        ci = f" [{row['fid_lo']:.2f}, {row['fid_hi']:.2f}]" if "fid_lo" in row else ""
        print(f"{name:32s} FID@{n} {row['fid']:.2f}{ci} KID {1e3 * row['kid']:.2f} ± {1e3 * row['kid_sd']:.2f} e-3 "
              f"PSNR {row.get('psnr', float('nan')):.2f}", flush=True)


def figure(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = json.loads(Path(args.speed).read_text())["rows"]
    quality = json.loads(Path(args.quality).read_text())["rows"]
    recovery = json.loads(Path(args.recovery).read_text())["rows"] if args.recovery else []
    base_align = quality["unpruned"]["metrics"]["align_mean"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=150)
    colours = {"channels-magnitude": "C0", "channels-taylor": "C1", "heads": "C2", "blocks": "C3"}
    for method, colour in colours.items():
        for recovered, style in ((False, "-o"), (True, "--s")):
            pts = []
            for name, row in quality.items():
                if name == "unpruned" or not name.startswith(method + ":"):
                    continue
                _, ratio, steps = name.split(":")
                if (int(steps) > 0) != recovered:
                    continue
                sp = speed.get(f"{method}@{float(ratio)}")
                if sp:
                    pts.append((sp["b16"]["speedup"], row["metrics"]["align_mean"], row["metrics"].get("psnr"),
                                f"{ratio}" + (f" r{steps}" if recovered else "")))
            for r in recovery:  # GPU-recovered rows, judged on more images
                spec = r["spec"]
                if recovered and spec and spec["method"] == method:
                    sp = speed.get(f"{method}@{spec['ratio']}")
                    if sp:
                        pts.append((sp["b16"]["speedup"], r["metrics"]["align_mean"], r["metrics"].get("psnr"),
                                    f"{spec['ratio']} r{spec['recovery_steps']} (GPU)"))
            if not pts:
                continue
            pts.sort()
            label = f"{method}" + (" recovered" if recovered else "")
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, label=label, alpha=0.85)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], style, color=colour, label=label, alpha=0.85)
            for p in pts:
                axes[0].annotate(p[3], (p[0], p[1]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes[0].axhline(base_align, color="k", lw=0.8, ls=":", label="unpruned")
    axes[0].axhline(base_align - 0.02, color="grey", lw=0.8, ls=":", label="unpruned - 2 points")
    axes[0].axvline(1.4, color="grey", lw=0.8, ls="-.")
    axes[1].axvline(1.4, color="grey", lw=0.8, ls="-.")
    axes[0].set(xlabel="UNet speed-up on this CPU (unpruned / pruned latency, batch 16, 2 threads)",
                ylabel="prompt alignment (mean of garment, colour, position) ↑", title="alignment vs UNet speed-up")
    axes[1].set(xlabel="UNet speed-up on this CPU (batch 16, 2 threads)", ylabel="PSNR to unpruned images, dB ↑",
                title="fidelity vs UNet speed-up")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trials")
    t.add_argument("--specs", required=True, help="comma-separated method:ratio:recovery_steps")
    t.add_argument("--images", type=int, default=32)
    t.add_argument("--out", default="results/prune-quality.json")
    t.set_defaults(func=trials)
    f = sub.add_parser("fid")
    f.add_argument("--images-dir", required=True)
    f.add_argument("--names", default="", help="comma-separated; default: every images-*.npy.xz of the folder")
    f.add_argument("--n", type=int, default=0, help="only the first N images (0: all)")
    f.add_argument("--interval", action="store_true", help="also FID's 95 %% bootstrap interval (CPU minutes)")
    f.add_argument("--force", action="store_true", help="recompute names already in --out")
    f.add_argument("--out", default="results/prune-fid.json")
    f.set_defaults(func=fid)
    g = sub.add_parser("figure")
    g.add_argument("--speed", default="results/prune-speed.json")
    g.add_argument("--quality", default="results/prune-quality.json")
    g.add_argument("--recovery", default="")
    g.add_argument("--out", default="docs/pruning_quality_latency.png")
    g.set_defaults(func=figure)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
