"""Quality of INT8 UNets vs the kept fraction: PTQ and QAT, by each importance method and a random kept set.

    python -m benchmarks.quant_quality trials --images 64 --out results/quant-quality.json
    python -m benchmarks.quant_quality figure --quality results/quant-quality.json --out docs/quant_quality_keep.png

`trials` runs one `run_trial` per setting on this CPU (the reference model's default sampling: DPM++ 2M, 25 steps,
CFG 7.5; seeds 0..N-1, prompts cycling world-v1), the ONNX Runtime fp32 pipeline first: its images are the
baseline of PSNR/SSIM ("PSNR to float images of the same seeds"). Each trial reports FID@N against N world
test-split scenes (with its bootstrap interval), KID, alignment (Wilson interval), CLIP score and PSNR/SSIM; the
UNet is quantised, the text encoder and VAE decoder stay fp32 in ONNX Runtime. Rows already in --out are skipped,
so an interrupted run resumes. `figure` draws PSNR to float, alignment and FID@N against the kept fraction.

On a machine without the FID Inception weights (the H100 machine: they do not travel), `trials --fid-later` runs
the same trials with FID/KID/CMMD deferred (their columns say so) and keeps every trial's images; `fid` then
computes FID@N (with its bootstrap interval) and KID for those rows on this CPU from the images, with the trial's
own functions and reference set, and merges several `trials` JSONs into one:

    python -m benchmarks.quant_quality fid --inputs a.json,b.json --images-root DIR --out results/quant-quality.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from workbench import paths

KEEP = (0.0, 0.05, 0.1, 0.2, 0.4)
IMPORTANCE = ("sensitivity", "actgrad", "random")


def settings(modes: list[str], keeps: list[float], methods: list[str], qat_steps: int) -> dict[str, dict]:
    """name -> knob values; keep 0 is one setting per mode (no ranking involved)."""
    out = {"ORT fp32": {"backend": "onnxruntime"}}
    for mode in modes:
        for keep in keeps:
            for method in (methods if keep else methods[:1]):
                name = f"{mode} keep {keep:.0%}" + (f" {method}" if keep else "")
                out[name] = {"backend": "onnxruntime", "quant": mode, "quant_keep": keep, "importance": method,
                             **({"qat_steps": qat_steps} if mode == "qat" else {})}
    return out


DEFERRED = "deferred: computed on the CPU from this trial's images by `python -m benchmarks.quant_quality fid`"


def defer_distribution() -> None:
    """Trials without Inception features: FID, KID and CMMD are left for `fid` (see the module's docstring)."""
    import torch

    from workbench.measure import quality

    quality.fid_mod.features = lambda images, device, batch=64: torch.zeros(len(images), 0)

    def _distribution(self, metrics, protocols, absent, note) -> None:
        for name in quality.DISTRIBUTION:
            absent[name] = DEFERRED

    quality.Quality._distribution = _distribution


def folder_of(name: str) -> str:
    return name.replace(" ", "-").replace("%", "")


def trials(args) -> None:
    from workbench.config import TrialConfig
    from workbench.trial import run_trial

    if args.fid_later:
        defer_distribution()

    out = Path(args.out)
    result = json.loads(out.read_text()) if out.is_file() else {"images": args.images, "rows": {}}
    root = Path("results/artifacts/quant-quality")
    base = root / "ORT-fp32"
    todo = settings(args.modes.split(","), [float(k) for k in args.keeps.split(",")], args.importance.split(","),
                    args.qat_steps)
    for name, knobs in todo.items():
        if name in result["rows"]:
            continue
        cfg = TrialConfig.from_dict({"seeds": f"0-{args.images - 1}", "timing_repeats": 1, "batch_size": 8,
                                     "device": "cpu", **knobs})
        folder = root / folder_of(name)
        row = run_trial(cfg, baseline_dir=None if name == "ORT fp32" else base / "images", artifacts_dir=folder,
                        progress=False)
        quant = row["protocols"].get("quant", {})
        result["rows"][name] = {"knobs": knobs, "metrics": row["metrics"],
                                "kept": {c: len(p["kept"]) for c, p in quant.get("components", {}).items()},
                                "qat": {c: p["qat"] for c, p in quant.get("components", {}).items() if p.get("qat")}}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str))
        m = row["metrics"]
        fid = f"{m['fid']:7.2f} [{m['fid_lo']:.1f}, {m['fid_hi']:.1f}]" if "fid" in m else "deferred"
        print(f"{name:32s} FID@{args.images} {fid}  align {m['align_mean']:.3f}  PSNR {m.get('psnr', float('nan')):6.2f}  UNet {m['unet_s']:.3f} s/img",
              flush=True)


def fid(args) -> None:
    """Merge `trials` JSONs; FID@N + bootstrap interval + KID on this CPU for rows whose FID was deferred."""
    import torch

    from workbench.config import TrialConfig
    from workbench.measure import fid as fid_mod
    from workbench.measure import kid as kid_mod
    from workbench.measure.quality import fid_reference
    from workbench.images import load_images

    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.is_file() else {"rows": {}}
    for path in args.inputs.split(","):
        data = json.loads(Path(path).read_text())
        merged["images"] = merged.get("images", data["images"])
        if merged["images"] != data["images"]:
            raise SystemExit(f"{path}: {data['images']} images a trial, {out} has {merged['images']}; merge equal N only")
        for name, row in data["rows"].items():
            if "fid" in merged["rows"].get(name, {}).get("metrics", {}):
                continue
            merged["rows"][name] = {**row, "source": path}
    n = merged["images"]
    cpu = torch.device("cpu")
    ref_name, ref_images = fid_reference(TrialConfig(), n)
    real = fid_mod.reference_features(ref_name, n, ref_images, paths.fid_reference(), cpu).double()
    for name, row in merged["rows"].items():
        m = row["metrics"]
        if "fid" in m:
            continue
        images = load_images(Path(args.images_root) / folder_of(name) / "images", list(range(n)))
        fake = fid_mod.features(images, cpu).double()
        m["fid"] = fid_mod.fid(fake, real)
        m["fid_lo"], m["fid_hi"] = fid_mod.fid_interval(fake, real, fid_mod.bootstrap_resamples(n), point=m["fid"])
        m["kid"], m["kid_sd"] = kid_mod.kid(fake, real, size=kid_mod.subset_size(n, n))
        row["fid_protocol"] = (f"FID@{n} and KID on a 2-core CPU from the trial's PNGs (same functions, reference "
                               f"set {ref_name}), the trial itself ran with FID deferred")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=1, default=str))
        print(f"{name:32s} FID@{n} {m['fid']:7.2f} [{m['fid_lo']:.1f}, {m['fid_hi']:.1f}]  "
              f"align {m['align_mean']:.3f}  PSNR {m.get('psnr', float('nan')):6.2f}", flush=True)
    out.write_text(json.dumps(merged, indent=1, default=str))


def figure(args) -> None:
    import matplotlib.pyplot as plt

    from workbench.report.style import PAPER, save_figure

    data = json.loads(Path(args.quality).read_text())
    rows, n = data["rows"], data["images"]
    plt.rcParams.update(PAPER)
    fig, axes = plt.subplots(1, 3, figsize=(7.0, 2.4))
    panels = (("psnr", "PSNR to fp32 images (dB)"), ("align_mean", "alignment"), ("fid", f"FID@{n}"))
    styles = {"sensitivity": "o-", "actgrad": "s-", "random": "x:"}
    for mode, colour in (("ptq", "C0"), ("qat", "C3")):
        for method in IMPORTANCE:
            pts = sorted((r["knobs"]["quant_keep"], r["metrics"]) for k, r in rows.items()
                         if r["knobs"].get("quant") == mode and (r["knobs"]["quant_keep"] == 0 or
                                                                  r["knobs"]["importance"] == method))
            if len(pts) < 2:
                continue
            for ax, (metric, label) in zip(axes, panels):
                ax.plot([100 * k for k, _ in pts], [m.get(metric, float("nan")) for _, m in pts], styles[method],
                        color=colour, ms=3, lw=1, label=f"{mode.upper()} {method}")
                ax.set_xlabel("layers kept in float (%)")
                ax.set_ylabel(label)
    if "ORT fp32" in rows:
        for ax, (metric, _) in zip(axes[1:], panels[1:]):
            ax.axhline(rows["ORT fp32"]["metrics"][metric], color="k", lw=0.8, ls="--", label="fp32")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=7, fontsize=6, frameon=False)
    fig.suptitle(f"INT8 UNet (NNCF, ONNX Runtime) vs kept fraction, reference model, N={n} images", fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure(fig, Path(args.out))


def paired_deltas(args) -> None:
    """Paired quality differences of one row against ORT fp32 on the same seeds and prompts (the images of `trials`),
    with 95 % paired bootstrap intervals: what "within 2 points of alignment" needs, beyond two separate intervals."""
    import numpy as np
    import torch

    from workbench.config import TrialConfig
    from workbench.measure import paired, quality as measure_quality
    from workbench.trial import PER_IMAGE, plan, quality

    data = json.loads(Path(args.quality).read_text())
    n = data["images"]
    evidence = {}
    for name in ("ORT fp32", args.candidate):
        cfg = TrialConfig.from_dict({"seeds": f"0-{n - 1}", "batch_size": 8, "device": "cpu", "per_image": True,
                                     **data["rows"][name]["knobs"]})
        work = plan(cfg)
        folder = Path(args.images_root) / folder_of(name)
        quality(cfg, work, folder, None, torch.device("cpu"), progress=False)  # writes the per-image evidence
        with np.load(folder / PER_IMAGE) as saved:
            evidence[name] = {k: saved[k] for k in saved.files}
    real = measure_quality.reference_evidence(cfg, measure_quality.fid_reference(cfg, n), n, torch.device("cpu"),
                                              paths.fid_reference())
    deltas = paired.compare(evidence[args.candidate], evidence["ORT fp32"], *real)
    data.setdefault("paired", {})[args.candidate] = {
        "against": "ORT fp32", "n": n, "resamples": paired.RESAMPLES, "deltas": deltas,
        "spread": "95 % paired bootstrap interval over image indices (same seeds and prompts)",
        "command": f"python -m benchmarks.quant_quality paired --quality {args.quality} --candidate '{args.candidate}'"}
    Path(args.quality).write_text(json.dumps(data, indent=1, default=str))
    for metric, d in deltas.items():
        print(f"{metric:12s} {args.candidate} - ORT fp32: {d['delta']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] "
              f"({d['candidate']:.4f} vs {d['baseline']:.4f})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("trials")
    t.add_argument("--images", type=int, default=64)
    t.add_argument("--modes", default="ptq,qat")
    t.add_argument("--keeps", default=",".join(str(k) for k in KEEP))
    t.add_argument("--importance", default=",".join(IMPORTANCE))
    t.add_argument("--qat-steps", type=int, default=100)
    t.add_argument("--out", default="results/quant-quality.json")
    t.add_argument("--fid-later", action="store_true", help="defer FID/KID/CMMD to `fid` (no Inception weights here)")
    d = sub.add_parser("fid")
    d.add_argument("--inputs", required=True, help="comma-separated JSONs of `trials`")
    d.add_argument("--images-root", default="results/artifacts/quant-quality", help="the trials' artifact folders")
    d.add_argument("--out", default="results/quant-quality.json")
    f = sub.add_parser("figure")
    f.add_argument("--quality", default="results/quant-quality.json")
    f.add_argument("--out", default="docs/quant_quality_keep.png")
    q = sub.add_parser("paired")
    q.add_argument("--quality", required=True, help="a `trials` JSON whose images are under --images-root")
    q.add_argument("--candidate", required=True, help="the row compared with ORT fp32, e.g. 'ptq keep 0%%'")
    q.add_argument("--images-root", default="results/artifacts/quant-quality")
    args = p.parse_args(argv)
    {"trials": trials, "fid": fid, "figure": figure, "paired": paired_deltas}[args.command](args)


if __name__ == "__main__":
    main()
