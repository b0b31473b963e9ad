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

from workbench import paths


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
        if args.fidelity_only:  # PSNR/SSIM to the unpruned images alone: seconds, no Inception
            out[name] = {"n": n, **fidelity(images, base_all[:n])}
            out_path.write_text(json.dumps(out, indent=1))
            print(f"{name:32s} PSNR {out[name]['psnr']:.2f} SSIM {out[name]['ssim']:.3f}", flush=True)
            continue
        ref_name, ref_images = fid_reference(TrialConfig(), n)
        real = fid_mod.reference_features(ref_name, n, ref_images, paths.fid_reference(), cpu).double()
        feat_path = folder / f"images-{name}.inception-{n}.pt"
        larger = sorted(folder.glob(f"images-{name}.inception-*.pt"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        larger = [p for p in larger if int(p.stem.rsplit("-", 1)[1]) > n]
        if not feat_path.is_file() and larger:  # features are per image: the first n of a larger set's are these
            fake = torch.load(larger[0], weights_only=True)[:n].double()
        else:
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


def summary(args) -> None:
    """One JSON of the H100 runs: every row of the recovery JSONs (alignment, CLIP score, sizes, recovery cost),
    with FID/KID/PSNR/SSIM from the `fid` JSONs (keyed by N) and the CPU speed-ups of prune_speed."""
    speed = json.loads(Path(args.speed).read_text())["rows"]
    rows: dict[str, dict] = {}
    for path in args.recovery.split(","):
        run = json.loads(Path(path).read_text())
        for r in run["rows"]:
            name = r["name"] if r["spec"] or run["images"] == 2000 else f"unpruned@{run['images']}"
            spec = r["spec"]
            sp = speed.get("unpruned" if spec is None else f"{spec['method']}@{spec['ratio']}", {})
            rows[name] = {**{k: v for k, v in r.items() if k != "prune"}, "images": run["images"],
                          "device": run["device"], "torch": run["torch"], "source": path,
                          "cpu_speedup_b2": sp.get("b2", {}).get("speedup"),
                          "cpu_speedup_b16": sp.get("b16", {}).get("speedup"),
                          "prune": {k: v for k, v in (r.get("prune") or {}).items()
                                    if k in ("stage_kept", "removed", "heads")}}
    for path in args.fid.split(","):
        if not Path(path).is_file():
            print(f"{path}: missing, its FID/KID columns stay empty")
            continue
        for name, f in json.loads(Path(path).read_text()).items():  # "unpruned": its 2,000 images or the first N
            rows.setdefault(name, {})[f"cpu_quality@{f['n']}"] = f
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=1, default=str))
    print(args.out, len(rows), "rows")


def figure(args) -> None:
    """Alignment, FID@256 and PSNR against the CPU UNet speed-up (batch 16), a line per method, no recovery (solid)
    and recovered on the H100 (dashed), from the `summary` JSON."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(Path(args.summary).read_text())["rows"]
    base = rows["unpruned"]
    n_fid = args.fid_n
    with_fid = f"cpu_quality@{n_fid}" in base  # the FID panel only where the unpruned model has FID@n_fid
    fig, axes = plt.subplots(1, 3 if with_fid else 2, figsize=(15 if with_fid else 10, 4.4), dpi=150)
    colours = {"channels-magnitude": "C0", "channels-taylor": "C1", "heads": "C2", "blocks": "C3"}

    def value(row, what):
        if what == "align":
            return row["metrics"]["align_mean"]
        q = row.get(f"cpu_quality@{n_fid}" if what == "fid" else f"cpu_quality@{row['images']}", {})
        return q.get(what, row["metrics"].get(what))

    for method, colour in colours.items():
        for recovered, style in ((False, "-o"), (True, "--s")):
            pts = []
            for name, row in rows.items():
                spec = row.get("spec")
                if not spec or spec["method"] != method or bool(spec["recovery_steps"]) != recovered:
                    continue
                pts.append((row["cpu_speedup_b16"], value(row, "align"), value(row, "fid"), value(row, "psnr"),
                            f"{spec['ratio']}" + (f" r{spec['recovery_steps']}" if recovered else "")))
            if not pts:
                continue
            pts.sort()
            label = method + (" recovered (batch 128)" if recovered else ", no recovery")
            for ax, i in zip(axes, (1, 2, 3) if with_fid else (1, 3)):
                if all(p[i] is None for p in pts):
                    continue
                ax.plot([p[0] for p in pts], [p[i] for p in pts], style, color=colour, label=label, alpha=0.85)
                for p in pts:
                    if recovered or i == 1:
                        ax.annotate(p[4], (p[0], p[i]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    axes[0].axhline(base["metrics"]["align_mean"], color="k", lw=0.8, ls=":", label="unpruned (2,000 images)")
    axes[0].axhline(base["metrics"]["align_mean"] - 0.02, color="grey", lw=0.8, ls=":", label="unpruned - 2 points")
    labels = (("prompt alignment (mean of garment, colour, position) ↑", "alignment"),
              (f"FID@{n_fid} vs world test split ↓", f"FID@{n_fid}"),
              ("PSNR to unpruned images, dB ↑", "fidelity to the unpruned model"))
    if with_fid:
        axes[1].axhline(value(base, "fid"), color="k", lw=0.8, ls=":", label=f"unpruned FID@{n_fid}")
        axes[1].axhline(value(base, "fid") * 1.1, color="grey", lw=0.8, ls=":", label="unpruned + 10 %")
        fids = [v for r in rows.values() if r.get("spec") for v in [value(r, "fid")] if v] + [value(base, "fid")]
        if max(fids) / min(fids) > 3:  # destroyed models (FID in the hundreds) beside recovered ones
            axes[1].set_yscale("log")
        axes[1].legend(fontsize=6)
    else:
        labels = labels[::2]
    for ax, (ylabel, title) in zip(axes, labels):
        ax.axvline(1.4, color="grey", lw=0.8, ls="-.")
        ax.set(xlabel="UNet speed-up on this CPU (batch 16, 2 threads)", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle("Pruned UNets, images made on an H100: no recovery (solid) on 256 images (seeds 0-255); recovered "
                 "(dashed) 2,000 steps on 256 images, or the larger budgets (labels) on 2,000"
                 + (f"; FID@{n_fid} on this CPU for every point" if with_fid else ""), fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(args.out)


def table(args) -> None:
    """The docs' markdown tables from the `summary` JSON: recovered models (N=2,000) and no recovery (N=256)."""
    rows = json.loads(Path(args.summary).read_text())["rows"]
    base = rows["unpruned"]

    def q(row, n, key, scale=1.0, fmt="{:.2f}"):
        v = row.get(f"cpu_quality@{n}", {}).get(key)
        return "-" if v is None else fmt.format(v * scale)

    def fid_cell(row, n, base_fid):
        f = row.get(f"cpu_quality@{n}", {})
        if "fid" not in f:
            return "-"
        ci = f" [{f['fid_lo']:.1f}, {f['fid_hi']:.1f}]" if "fid_lo" in f else ""
        rel = "" if row is base else f" ({100 * (f['fid'] / base_fid - 1):+.1f} %)"
        return f"{f['fid']:.2f}{ci}{rel}"

    def align(row):
        m = row["metrics"]
        return (f"{100 * m['align_mean']:.1f} % ({100 * (m['align_mean'] - base['metrics']['align_mean']):+.1f}) | "
                f"{100 * m['align_garment']:.1f} / {100 * m['align_colour']:.1f} / {100 * m['align_position']:.1f}")

    def size(row):
        if not row.get("spec"):
            return f"{base_params / 1e6:.2f} M | 1.00 / 1.00"
        return (f"{row['params_after'] / 1e6:.2f} M ({row['params_after'] / row['params_before']:.2f}x) | "
                f"{row['cpu_speedup_b2']:.2f} / {row['cpu_speedup_b16']:.2f}")

    def psnr_cell(f):
        return "-" if "psnr" not in f else f"{f['psnr']:.1f} dB / {f['ssim']:.3f}"

    base_params = next(r["params_before"] for r in rows.values() if r.get("params_before"))
    b2000 = base.get("cpu_quality@2000", {}).get("fid")
    print("| model | UNet params | CPU UNet speed-up b2 / b16 | recovery on the H100 | KD MSE before -> after | "
          "alignment (vs unpruned) | garment / colour / position | CLIP score | FID@2,000 [95 % CI] (vs unpruned) | "
          "KID x1e3 (sd) | PSNR / SSIM to unpruned |")
    print("|" + "---|" * 11)
    for name, row in rows.items():
        if row.get("images") != 2000:
            continue
        rec = row.get("recovery") or {}
        cost = (f"{rec['steps']:,} steps x {rec['batch_size']}: {row['recovery_s']:.0f} s ({1e3 * rec['step_s']:.0f} ms/step)"
                if rec else "-")
        kd = f"{rec['kd_mse_before']:.4f} -> {rec['kd_mse_after']:.4f}" if rec else "-"
        fid_row = row.get("cpu_quality@2000", {})
        print(f"| {name} | {size(row)} | {cost} | {kd} | {align(row)} | {row['metrics']['clip_score']:.2f} | "
              f"{fid_cell(row, 2000, b2000)} | {q(row, 2000, 'kid', 1e3)} ({q(row, 2000, 'kid_sd', 1e3)}) | "
              f"{psnr_cell(fid_row)} |")
    print()
    b256 = base.get("cpu_quality@256", {}).get("fid")
    print("| model | UNet params | CPU UNet speed-up b2 / b16 | KD MSE to unpruned | alignment (vs unpruned@256) | "
          "CLIP score | FID@256 (vs unpruned) | KID x1e3 (sd) | PSNR / SSIM to unpruned |")
    print("|" + "---|" * 9)
    ref = rows.get("unpruned@256", base)
    for name, row in [("unpruned (first 256)", ref)] + [(n, r) for n, r in rows.items()
                                                        if r.get("spec") and r["images"] == 256]:
        m = row["metrics"]
        d = 100 * (m["align_mean"] - ref["metrics"]["align_mean"])
        fid_src = base if name.startswith("unpruned") else row
        fq = fid_src.get("cpu_quality@256", {})
        fid = "-" if "fid" not in fq else f"{fq['fid']:.1f}" + ("" if fid_src is base else f" ({100 * (fq['fid'] / b256 - 1):+.0f} %)")
        kid = "-" if "kid" not in fq else f"{1e3 * fq['kid']:.1f} ({1e3 * fq['kid_sd']:.1f})"
        ps = "-" if "psnr" not in m else f"{m['psnr']:.1f} dB / {m['ssim']:.3f}"
        kdm = "0" if name.startswith("unpruned") else f"{row['kd_mse']:.4f}"
        print(f"| {name} | {size(row)} | {kdm} | {100 * m['align_mean']:.1f} % ({d:+.1f}) | {m['clip_score']:.2f} | "
              f"{fid} | {kid} | {ps} |")


def ratios(args) -> None:
    """The docs' every-ratio table: per method and ratio, the model without recovery beside the recovered one
    (FID@256 for both: the first 256 images, seeds 0-255; alignment and PSNR over each row's own images)."""
    rows = json.loads(Path(args.summary).read_text())["rows"]
    b256 = rows["unpruned"]["cpu_quality@256"]["fid"]
    ref_align = {2000: rows["unpruned"]["metrics"]["align_mean"], 256: rows["unpruned@256"]["metrics"]["align_mean"]}

    def cells(row):
        if row is None:
            return "- | - | - | -"
        m, f = row["metrics"], row.get("cpu_quality@256", {})
        ref = ref_align[row["images"]]  # alignment against the unpruned model's same images
        psnr = f.get("psnr", m.get("psnr"))
        fid = "-" if "fid" not in f else f"{f['fid']:.1f} ({100 * (f['fid'] / b256 - 1):+.0f} %)"
        return (f"{100 * m['align_mean']:.1f} ({100 * (m['align_mean'] - ref):+.1f}) | {fid} | "
                + ("-" if psnr is None else f"{psnr:.1f}") + f" | {row['images']:,}")

    print("| method | ratio | UNet params | GFLOPs | CPU speed-up b2 / b16 | no recovery: alignment % (vs unpruned) | "
          "FID@256 (vs unpruned) | PSNR dB | images | recovered: steps | alignment % (vs unpruned) | "
          "FID@256 (vs unpruned) | PSNR dB | images |")
    print("|" + "---|" * 14)
    def recovered(method, ratio):
        rec = sorted((r for r in rows.values() if r.get("spec") and r["spec"]["method"] == method
                      and r["spec"]["ratio"] == ratio and r["spec"]["recovery_steps"]),
                     key=lambda r: r["spec"]["recovery_steps"])
        return rec[-1] if rec else None  # the largest budget measured

    for method in ("channels-magnitude", "channels-taylor", "heads", "blocks"):
        for ratio in (0.1, 0.2, 0.3, 0.4, 0.5):
            plain = rows.get(f"{method}-{ratio}-r0")
            if plain is None:
                continue
            rec, twin = recovered(method, ratio), ""
            if rec is None:  # a ratio that removes the same structure as a smaller one (same parameter count)
                same = [r for r in (0.1, 0.2, 0.3, 0.4) if r < ratio and rows.get(f"{method}-{r}-r0", {})
                        .get("params_after") == plain["params_after"] and recovered(method, r)]
                if same:
                    rec, twin = recovered(method, same[-1]), f" (= {same[-1]}'s model)"
            gflops = f"{plain['flops_after'] / 1e9:.3f}" if plain.get("flops_after") else "-"
            steps = f"{rec['spec']['recovery_steps']:,}{twin}" if rec else "-"
            print(f"| {method} | {ratio} | {plain['params_after'] / 1e6:.2f} M | {gflops} | "
                  f"{plain['cpu_speedup_b2']:.2f} / {plain['cpu_speedup_b16']:.2f} | {cells(plain)} | {steps} | "
                  f"{cells(rec)} |")


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
    f.add_argument("--fidelity-only", action="store_true", help="only PSNR/SSIM to the unpruned images")
    f.add_argument("--out", default="results/prune-fid.json")
    f.set_defaults(func=fid)
    m = sub.add_parser("summary")
    m.add_argument("--recovery", required=True, help="comma-separated recovery JSONs of benchmarks.prune_recovery")
    m.add_argument("--fid", required=True, help="comma-separated JSONs of `fid`")
    m.add_argument("--speed", default="docs/pruning-data/prune-speed.json")
    m.add_argument("--out", default="docs/pruning-data/prune-h100-summary.json")
    m.set_defaults(func=summary)
    tb = sub.add_parser("table")
    tb.add_argument("--summary", default="docs/pruning-data/prune-h100-summary.json")
    tb.set_defaults(func=table)
    r = sub.add_parser("ratios")
    r.add_argument("--summary", default="docs/pruning-data/prune-h100-summary.json")
    r.set_defaults(func=ratios)
    g = sub.add_parser("figure")
    g.add_argument("--summary", default="docs/pruning-data/prune-h100-summary.json")
    g.add_argument("--fid-n", type=int, default=256, help="the FID panel's N (equal for every point)")
    g.add_argument("--out", default="docs/pruning_quality_latency.png")
    g.set_defaults(func=figure)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
