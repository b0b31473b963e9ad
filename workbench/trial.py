"""A trial: one validated, frozen configuration measured for quality and cost -> one row.

    row = run_trial(TrialConfig(steps=10, scheduler="ddim"))

The row holds the configuration, metrics (with the protocol of each quality number, and the reason for any
metric that could not be computed), status, timings, provenance and artifact paths (images, grid).
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
import traceback
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench import __version__
from workbench.config import TrialConfig
from workbench.knobs import cfg_cutoff, precision, prune, scheduler
from workbench.measure import cost
from workbench.models import load_pipeline, native_resolution, quality_is_meaningful, resolve_device
from workbench.prompts import load_prompts, prompt_set_version

RESULTS = Path(os.environ.get("WORKBENCH_RESULTS", "results"))
WORLD_REFERENCE = "world-v1 test split, seed-0 scenes (workbench.world.reference_images)"


def build_pipeline(cfg: TrialConfig, device: torch.device):
    """A fresh pipeline with every knob applied, on the device (knobs never undo each other)."""
    pipe = load_pipeline(cfg.model)
    for knob in (prune, scheduler, precision):  # prune first: it builds in fp32
        pipe = knob.apply(pipe, cfg)
    return pipe.to(device)


def generate(pipe, cfg: TrialConfig, prompts: list[str], seeds: list[int], resolution: int, device: torch.device):
    """Images for (prompt, seed) pairs as uint8 [B, 3, H, W]: one generator per image, so batching never changes them."""
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    kwargs = {"guidance_scale": cfg.cfg_scale, **cfg_cutoff.call_kwargs(cfg)}
    out = pipe(prompts, num_inference_steps=cfg.steps, generator=generators, height=resolution, width=resolution,
               output_type="pt", **kwargs).images
    return (out.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def run_trial(config: TrialConfig | dict, *, baseline_dir: str | Path | None = None,
              artifacts_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Run one trial and return its row (status 'ok'); errors propagate (see `record_trial` for the store)."""
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    t_start = time.time()
    device = resolve_device(cfg.device)
    precision.check_supported(cfg.precision, device)
    seeds, prompt_list = cfg.seed_list, load_prompts(cfg.prompt_set)
    prompts = [prompt_list[i % len(prompt_list)] for i in range(len(seeds))]
    artifacts = Path(artifacts_dir) if artifacts_dir else RESULTS / "artifacts" / f"adhoc-{int(t_start)}"
    (artifacts / "images").mkdir(parents=True, exist_ok=True)

    load_time: list[float] = []
    with cost.timed(device, load_time):
        pipe = build_pipeline(cfg, device)
    timings = {"load_s": load_time[0]}
    resolution = cfg.resolution or native_resolution(pipe)
    timer = cost.StageTimer(pipe, device)
    batches = [list(range(i, min(i + cfg.batch_size, len(seeds)))) for i in range(0, len(seeds), cfg.batch_size)]
    images: list[torch.Tensor] = []
    batch_times: list[float] = []
    stage_per_image: dict[str, list[float]] = {name: [] for name in cost.STAGES}
    unet_calls: list[float] = []

    def run_batch(idx: list[int]) -> torch.Tensor:
        return generate(pipe, cfg, [prompts[i] for i in idx], [seeds[i] for i in idx], resolution, device)

    def record_timing(n_images: int) -> None:
        for name, calls in timer.calls.items():
            stage_per_image[name].append(sum(calls) / n_images)
        unet_calls.extend(timer.calls["unet"])
        timer.reset()

    with cost.PeakMemory(device) as peak:
        warm = []
        with cost.timed(device, warm):
            images.append(run_batch(batches[0]))
        timings["warmup_s"] = warm[0]
        timer.enabled = True
        for idx in tqdm(batches[1:], desc="generate", disable=not progress, leave=False):
            with cost.timed(device, batch_times if len(idx) == cfg.batch_size else []):
                images.append(run_batch(idx))
            if len(idx) == cfg.batch_size:
                record_timing(len(idx))
            else:
                timer.reset()
        while len(batch_times) < cfg.timing_repeats:  # timing-only repeats of the first batch
            with cost.timed(device, batch_times):
                run_batch(batches[0])
            record_timing(len(batches[0]))
        timer.enabled = False
    timer.remove()
    per_image = [t / len(batches[0]) for t in batch_times]  # every timed batch has the first batch's size
    flops: dict = {}
    with cost.count_flops(flops):
        run_batch(batches[0][:1])
    images_u8 = torch.cat(images)
    _save_images(images_u8, seeds, artifacts)

    latency = cost.summary(per_image)
    metrics: dict[str, float | None] = {
        "latency_s": latency["median"], "latency_iqr_s": latency["iqr"],
        "text_encoder_s": float(np.median(stage_per_image["text_encoder"])),
        "unet_s": float(np.median(stage_per_image["unet"])),
        "unet_step_s": float(np.median(unet_calls)) if unet_calls else None,
        "vae_decode_s": float(np.median(stage_per_image["vae_decode"])),
        "warmup_s": timings["warmup_s"],
        "peak_memory_mb": peak.bytes / 2**20 if peak.bytes else None,
        "params_m": cost.parameter_counts(pipe)["total"] / 1e6,
        "model_size_mb": cost.model_bytes(pipe) / 2**20,
        "gflops_per_image": flops["flops"] / 1e9,
    }
    protocols: dict[str, dict] = {
        "latency_s": {"what": "end-to-end pipeline call per image (prompt encoding to decoded image), median over "
                              "timed batches after one warm-up batch", "batches": len(batch_times),
                      "batch_size": cfg.batch_size, "spread": latency},
        "peak_memory_mb": {"kind": peak.kind, "region": "warm-up and timed generation"},
        "gflops_per_image": {"implementation": "torch.utils.flop_counter.FlopCounterMode", "images": 1},
    }
    prune_metrics, prune_protocols, _ = prune.row_fields(pipe)  # artifact key, sizes before/after, build cost
    metrics.update(prune_metrics)
    protocols.update(prune_protocols)
    absent: dict[str, str] = {}
    pipe = None  # release the model before the quality networks load
    if cfg.quality:
        t_quality = time.time()
        _quality(cfg, images_u8, prompts, seeds, device, baseline_dir, metrics, protocols, absent)
        timings["quality_s"] = time.time() - t_quality
    else:
        for name in ("fid", "clip_score", "align_mean", "psnr", "ssim"):
            absent[name] = "quality disabled (quality: false)"
    timings["total_s"] = time.time() - t_start
    return {
        "config": cfg.to_dict(), "status": "ok", "reason": None,
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "protocols": protocols, "absent": absent, "timings": timings,
        "quality_meaningful": quality_is_meaningful(cfg.model),
        "provenance": provenance(device, cfg),
        "artifacts": {"images": str(artifacts / "images"), "grid": str(artifacts / "grid.png")},
    }


def _quality(cfg, images, prompts, seeds, device, baseline_dir, metrics, protocols, absent) -> None:
    from workbench.measure import fid as fid_mod
    from workbench.measure.clip_score import clip_folder, clip_score
    from workbench.measure.fidelity import fidelity

    n = len(images)
    note = {} if quality_is_meaningful(cfg.model) else {"warning": "random weights: quality is meaningless"}
    if n < 2:
        absent["fid"] = "FID needs at least 2 images; give more seeds"
    else:
        reference = _fid_reference(cfg, n)
        if isinstance(reference, str):
            absent["fid"] = reference
        else:
            name, images_fn = reference
            stats = fid_mod.reference_stats(name, n, images_fn, RESULTS / "fid-reference", device)
            metrics["fid"] = fid_mod.fid(images, stats, device)
            protocols["fid"] = {"implementation": "torchmetrics FrechetInceptionDistance", **note,
                                "feature_extractor": fid_mod.EXTRACTOR, "resize": fid_mod.RESIZE,
                                "n_generated": n, "n_reference": n, "reference_set": name}
    metrics["clip_score"] = clip_score(images, prompts, cfg.clip_model)
    protocols["clip_score"] = {"implementation": "torchmetrics CLIPScore (100*cos)", **note,
                               "clip_model": str(clip_folder(cfg.clip_model)), "n_images": n}
    _alignment(images, prompts, metrics, protocols, absent, note)
    base = _baseline_images(baseline_dir, seeds, images.shape)
    if isinstance(base, str):
        absent["psnr"] = absent["ssim"] = base
    else:
        metrics.update(fidelity(images, base))
        protocols["psnr"] = protocols["ssim"] = {"implementation": "torchmetrics functional PSNR/SSIM, data range 1",
                                                 "against": str(baseline_dir), "n_images": n, **note}


def _fid_reference(cfg: TrialConfig, n: int):
    """(name, image iterator factory) for the FID reference set, or the reason there is none."""
    from workbench.measure.fid import folder_images
    from workbench.world.render import reference_images

    if cfg.fid_reference != "auto":
        available = sum(1 for p in Path(cfg.fid_reference).iterdir()
                        if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if available < n:
            return f"fid_reference folder has {available} images, FID needs {n} (equal N); add images or use fewer seeds"
        return str(Path(cfg.fid_reference).resolve()), lambda: folder_images(cfg.fid_reference, n)
    if cfg.model in ("reference", "tiny-random"):
        return WORLD_REFERENCE, lambda: reference_images(n)
    return "no FID reference set for this model; set fid_reference to a folder of real images"


def _alignment(images, prompts, metrics, protocols, absent, note) -> None:
    from workbench.measure.alignment import REPORTED
    from workbench.world.render import parse_caption

    if any(parse_caption(p) is None for p in prompts):
        for name in ("align_mean",) + tuple(f"align_{a}" for a in REPORTED):
            absent[name] = "prompts are not captions of the captioned world; alignment needs prompt_set world-*"
        return
    acc = _zero_shot().accuracy(images.float() / 255, prompts)
    for a in REPORTED:
        metrics[f"align_{a}"] = acc[a]
    metrics["align_mean"] = float(np.mean([acc[a] for a in REPORTED]))
    protocols["align_mean"] = {"implementation": "zero-shot reference CLIP over all 3,200 world captions, "
                                                 "marginalised per attribute", "n_images": len(images), **note,
                               "size_accuracy": acc["size"], "background_accuracy": acc["background"]}


@lru_cache(maxsize=1)
def _zero_shot():
    """The reference CLIP's zero-shot classifier; its 3,200 caption embeddings are computed once per process."""
    from workbench.measure.alignment import ZeroShotWorld
    from workbench.measure.clip_score import load_clip

    model, processor = load_clip("reference")
    return ZeroShotWorld(model, processor.tokenizer)


def _save_images(images: torch.Tensor, seeds: list[int], artifacts: Path) -> None:
    from PIL import Image

    for img, seed in zip(images, seeds):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(artifacts / "images" / f"seed{seed:06d}.png")
    grid = images[:64]
    cols = min(8, len(grid))
    rows = -(-len(grid) // cols)
    pad = torch.zeros(rows * cols - len(grid), *grid.shape[1:], dtype=torch.uint8)
    sheet = torch.cat([grid, pad]).view(rows, cols, *grid.shape[1:]).permute(0, 3, 1, 4, 2)
    Image.fromarray(sheet.reshape(rows * grid.shape[2], cols * grid.shape[3], 3).numpy()).save(artifacts / "grid.png")


def _baseline_images(baseline_dir, seeds: list[int], shape):
    if baseline_dir is None:
        return "no baseline images (this trial is the baseline, or it ran alone)"
    from PIL import Image

    files = [Path(baseline_dir) / f"seed{s:06d}.png" for s in seeds]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        return f"baseline has no image for {missing[0]} (baseline failed or used other seeds)"
    base = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])).permute(0, 3, 1, 2)
    if tuple(base.shape) != tuple(shape):
        return f"baseline images are {tuple(base.shape[2:])}, these {tuple(shape[2:])}; fidelity needs equal resolution"
    return base


def provenance(device: torch.device, cfg: TrialConfig) -> dict:
    """Where and with what a row was measured."""
    import diffusers
    import torchmetrics
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"workbench": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "torchmetrics": torchmetrics.__version__, "device": str(device), "device_name": name,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "host": socket.gethostname(),
            "prompt_set": prompt_set_version(cfg.prompt_set), "seeds": cfg.seeds}


def failed_row(config: dict, reason: str, timings: dict | None = None) -> dict:
    """The row of a trial that raised, timed out or lost its kernel."""
    return {"config": config, "status": "failed", "reason": reason, "metrics": {}, "protocols": {}, "absent": {},
            "timings": timings or {}, "quality_meaningful": None, "provenance": {}, "artifacts": {}}


def record_trial(config: dict, storage: str, study: str, trial_number: int, baseline_dir: str | None,
                 artifacts_dir: str, progress: bool = True, notebook_out: str | None = None) -> dict:
    """Run a trial and write its row (ok or failed with the reason) to the store; re-raise on failure."""
    from workbench.store import Store

    store = Store(storage)
    t0 = time.time()
    try:
        row = run_trial(config, baseline_dir=baseline_dir, artifacts_dir=artifacts_dir, progress=progress)
    except BaseException as e:  # noqa: BLE001 - the row must say why, whatever it was
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        if isinstance(e, KeyboardInterrupt):
            raise
        store.write(study, trial_number, failed_row(config, reason, {"total_s": time.time() - t0}),
                    traceback_text=traceback.format_exc())
        raise
    row["artifacts"]["notebook"] = notebook_out
    store.write(study, trial_number, row)
    return row

