"""Recovery at GPU budgets: build pruned + distilled UNets, then judge them on many images (made for the H100).

    python -m benchmarks.prune_recovery --specs channels-taylor:0.3:4000,blocks:0.5:4000 --images 2000 --out DIR

For the unpruned model and each spec (method:ratio:recovery_steps): build the artifact through the same cached
path trials use (`workbench.compress.build.pruned_unet`), generate `--images` images (seeds 0..N-1, the reference
model's recommended DPM++ 2M, 25 steps, CFG 7.5, prompts cycling through world-v1), and measure prompt alignment
(reference CLIP zero-shot), CLIP score and PSNR/SSIM to the unpruned model's images of the same seeds. FID needs
the Inception weights, which do not travel to the GPU machine: the images are written as compressed uint8 arrays
(`images-<name>.npy.xz`) and `--fid DIR` computes FID@N for them on the CPU afterwards. Each artifact is also
written as a tar of its cache folder, so it can be put under results/compressed/ and loaded by CPU trials.
"""
from __future__ import annotations

import argparse
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from workbench.compress.specs import PruneSpec


def save_images(path: Path, images: torch.Tensor) -> None:
    """uint8 [N, 3, H, W] as an xz-compressed .npy (the world's flat backgrounds compress about 5x)."""
    import io
    import lzma

    buf = io.BytesIO()
    np.save(buf, images.numpy())
    path.write_bytes(lzma.compress(buf.getvalue(), preset=6))


def load_images(path: Path) -> torch.Tensor:
    import io
    import lzma

    return torch.from_numpy(np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes()))))


def _name(spec) -> str:
    return f"{spec.method}-{spec.ratio}-r{spec.recovery_steps}"


def _images(pipe, cfg, prompts, seeds, device, batch) -> torch.Tensor:
    from workbench.trial import generate

    out = [generate(pipe, cfg, prompts[i:i + batch], seeds[i:i + batch], 64, device) for i in range(0, len(seeds), batch)]
    return torch.cat(out)


def _quality(images, prompts, base, device) -> dict:
    from workbench.measure.alignment import REPORTED
    from workbench.measure.clip_score import clip_score
    from workbench.measure.fidelity import fidelity
    from workbench.measure.quality import _zero_shot

    zero_shot = _zero_shot(str(device))
    zero_shot.clip.to(device)  # the CLIP is shared (cached) with clip_score below, whose torchmetrics moves it
    acc = zero_shot.accuracy(images.float().to(device) / 255, prompts)
    m = {f"align_{a}": acc[a] for a in REPORTED}
    m["align_mean"] = float(np.mean([acc[a] for a in REPORTED]))
    m["clip_score"] = clip_score(images, prompts, "reference")
    if base is not None:
        m.update(fidelity(images, base))
    return m


def main(argv=None) -> None:
    from workbench.compress.build import pruned_unet
    from workbench.config import TrialConfig
    from workbench.models import load_pipeline, resolve_device
    from workbench.prompts import load_prompts, prompt_set_version, prompts_for

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specs", required=True, help="comma-separated method:ratio:recovery_steps ('': unpruned only)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--deadline-s", type=float, default=540, help="skip specs that would start after this")
    p.add_argument("--tar", default="", help="comma-separated spec names whose artifact to tar into --out ('all')")
    p.add_argument("--save-images", default="all", help="'all', 'pruned' (all but unpruned), 'none' or names")
    p.add_argument("--no-unpruned", action="store_true",
                   help="skip the unpruned row (no PSNR/SSIM here; `prune_quality fid` computes them from the images)")
    p.add_argument("--tag", default="", help="suffix of recovery.json, for several processes sharing --out")
    args = p.parse_args(argv)
    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    device = resolve_device("auto")
    cfg = TrialConfig(seeds=f"0-{args.images - 1}", device=str(device))
    prompt_list = load_prompts(cfg.prompt_set)
    prompts = prompts_for(prompt_list, args.images)
    seeds = cfg.seed_list
    result = {"images": args.images, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "rows": []}
    pipe = load_pipeline("reference")
    base = None
    specs = [None] * (not args.no_unpruned) + [PruneSpec(m, float(r), int(s))
                                               for m, r, s in (x.split(":") for x in args.specs.split(",") if x)]
    for spec in specs:
        if time.time() - t_start > args.deadline_s:
            print(f"deadline: skipping {spec}", flush=True)
            continue
        t0 = time.time()
        pipe = load_pipeline("reference")
        report = {}
        if spec is not None:
            unet, report = pruned_unet(pipe, spec, prompt_list, prompt_set_version(cfg.prompt_set), device=device,
                                       progress=False)
            pipe.unet = unet
        pipe = pipe.to(device)  # generate() swaps in the configured scheduler on every call
        t_gen = time.time()
        images = _images(pipe, cfg, prompts, seeds, device, args.batch)
        gen_s = time.time() - t_gen
        name = "unpruned" if spec is None else _name(spec)
        metrics = _quality(images, prompts, base, device)
        if spec is None:
            base = images
        row = {"name": name, "spec": None if spec is None else spec.to_dict(), "metrics": metrics,
               "generate_s": gen_s, "total_s": time.time() - t0,
               **{k: report.get(k) for k in ("key", "params_before", "params_after", "flops_before", "flops_after",
                                             "prune_s", "recovery_s", "samples_s", "kd_mse", "recovery", "prune")}}
        result["rows"].append(row)
        if (args.save_images == "all" or (args.save_images == "pruned" and spec is not None)
                or name in args.save_images.split(",")):
            save_images(args.out / f"images-{name}.npy.xz", images)
        if spec is not None and (args.tar == "all" or name in args.tar.split(",")):
            with tarfile.open(args.out / f"{report['key']}.tar", "w") as tar:
                tar.add(report["folder"], arcname=report["key"])
        (args.out / f"recovery{args.tag}.json").write_text(json.dumps(result, indent=1, default=str))
        rec = report.get("recovery") or {}
        print(f"{name:32s} align {metrics['align_mean']:.3f} clip {metrics['clip_score']:.2f} "
              f"psnr {metrics.get('psnr', float('nan')):.2f} recovery {report.get('recovery_s') or 0:.0f}s "
              f"kd {rec.get('kd_mse_before', float('nan')):.4f}->{rec.get('kd_mse_after', float('nan')):.4f} "
              f"step {1000 * (rec.get('step_s') or 0):.0f}ms gen {gen_s:.0f}s "
              f"({time.time() - t0:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
