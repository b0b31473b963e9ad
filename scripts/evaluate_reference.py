"""Evaluate the bundled reference model for its model card: FID and alignment against steps, CFG and scheduler.

Every row is a normal workbench trial (`run_trial`), so the card's numbers use the same code and protocols as
sweeps. FID uses the same N for every row (N generated vs N reference images of the world's test split).

    python -m scripts.evaluate_reference --images 2000 --out results/reference-eval.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workbench.config import TrialConfig
from workbench.trial import run_trial

STEPS = (4, 8, 15, 25, 50)
SCHEDULERS = ("ddim", "dpm++2m")


def grid(images: int, device: str, schedulers=SCHEDULERS, cfg_rows: bool = True) -> list[TrialConfig]:
    """Steps x scheduler at CFG 7.5, plus CFG 1.0 and 3.0 at 25 DPM++ 2M steps."""
    base = TrialConfig(seeds=f"0-{images - 1}", batch_size=250, device=device, timing_repeats=1, cfg_scale=7.5)
    configs = [base.replace(scheduler=s, steps=n) for s in schedulers for n in STEPS]
    if cfg_rows:
        configs += [base.replace(scheduler="dpm++2m", steps=25, cfg_scale=c) for c in (1.0, 3.0)]
    return configs


def clip_zero_shot(images: int) -> dict:
    """Zero-shot accuracy of the shipped CLIP on real test-split scenes (the FID reference set)."""
    from workbench.measure.alignment import ZeroShotWorld
    from workbench.measure.clip_score import load_clip
    from workbench.world import render as world

    model, processor = load_clip("reference")
    scene = world.sample_scenes("test", images, seed=0)
    return ZeroShotWorld(model, processor.tokenizer).accuracy(world.render(scene, "test"), scene.captions())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--device", default="auto")
    p.add_argument("--schedulers", default=",".join(SCHEDULERS), help="comma-separated scheduler aliases")
    p.add_argument("--no-cfg-rows", action="store_true", help="skip the CFG 1.0 / 3.0 rows")
    p.add_argument("--out", type=Path, default=Path("results/reference-eval.json"))
    args = p.parse_args(argv)
    result = {"images": args.images, "clip_zero_shot_real": clip_zero_shot(args.images), "rows": []}
    print("zero-shot CLIP on real scenes:", result["clip_zero_shot_real"], flush=True)
    for cfg in grid(args.images, args.device, args.schedulers.split(","), not args.no_cfg_rows):
        t0 = time.time()
        row = run_trial(cfg, artifacts_dir=Path("results/artifacts/reference-eval") / f"{cfg.scheduler}-{cfg.steps}-"
                        f"cfg{cfg.cfg_scale}", progress=False)
        keep = {k: row[k] for k in ("config", "metrics", "protocols", "provenance")}
        result["rows"].append(keep)
        m = row["metrics"]
        print(f"{cfg.scheduler:8s} steps {cfg.steps:2d} cfg {cfg.cfg_scale:4.1f}: FID {m['fid']:7.2f} "
              f"align g/c/p {m['align_garment']:.3f}/{m['align_colour']:.3f}/{m['align_position']:.3f} "
              f"CLIP {m['clip_score']:.2f} ({time.time() - t0:.0f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))


def plot_card(eval_json: Path, out_png: Path) -> Path:
    """The model card's figure: FID and prompt alignment against steps, one line per scheduler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(Path(eval_json).read_text())["rows"]
    fig, (ax_fid, ax_align) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=150)
    for sched in SCHEDULERS:
        pts = sorted((r["config"]["steps"], r["metrics"]) for r in rows
                     if r["config"]["scheduler"] == sched and r["config"]["cfg_scale"] == 7.5)
        steps = [s for s, _ in pts]
        ax_fid.plot(steps, [m["fid"] for _, m in pts], "-o", label=sched)
        ax_align.plot(steps, [m["align_mean"] for _, m in pts], "-o", label=sched)
    n = rows[0]["protocols"]["fid"]["n_generated"]
    ax_fid.set(xscale="log", xlabel="steps", ylabel=f"FID, N={n} (↓ better)", title="FID vs steps (CFG 7.5)")
    ax_align.set(xscale="log", xlabel="steps", ylabel="prompt alignment, mean of garment/colour/position (↑)",
                 title="alignment vs steps (CFG 7.5)")
    for ax in (ax_fid, ax_align):
        ax.set_xticks(STEPS, [str(s) for s in STEPS])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


if __name__ == "__main__":
    main()
