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
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench import __version__
from workbench.config import TrialConfig
from workbench.knobs import backend, cfg_cutoff, precision, prune, quant, scheduler
from workbench.measure import cost
from workbench.measure.quality import Quality
from workbench.models import load_pipeline, native_resolution, quality_is_meaningful, resolve_device
from workbench.prompts import load_prompts, prompt_set_version

RESULTS = Path(os.environ.get("WORKBENCH_RESULTS", "results"))


def build_pipeline(cfg: TrialConfig, device: torch.device):
    """A fresh pipeline with every knob applied, on the device (knobs never undo each other)."""
    pipe = load_pipeline(cfg.model)
    pipe.model_scheduler_config = pipe.scheduler.config  # every scheduler swap starts from the model's own
    for knob in (prune, quant, backend, scheduler, precision):  # compression first: it builds from the fp32 model
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
    """Run one trial and return its row (status 'ok'); errors propagate (see `record_trial` for the store).

    Images stream to disk batch by batch and quality is measured from there, so memory is bounded by the batch.
    """
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
    grid = ImageGrid(artifacts / "grid.png")
    batch_times: list[float] = []
    stage_per_image: dict[str, list[float]] = {name: [] for name in cost.STAGES}
    unet_calls: list[float] = []

    def run_batch(idx: list[int]) -> torch.Tensor:
        return generate(pipe, cfg, [prompts[i] for i in idx], [seeds[i] for i in idx], resolution, device)

    def keep(idx: list[int], images: torch.Tensor) -> None:
        save_images(images, [seeds[i] for i in idx], artifacts / "images")
        grid.add(images)

    def record_timing(n_images: int) -> None:
        for name, calls in timer.calls.items():
            stage_per_image[name].append(sum(calls) / n_images)
        unet_calls.extend(timer.calls["unet"])
        timer.reset()

    with cost.PeakMemory(device) as peak:
        warm = []
        with cost.timed(device, warm):
            images = run_batch(batches[0])
        keep(batches[0], images)
        timings["warmup_s"] = warm[0]
        timer.enabled = True
        for idx in tqdm(batches[1:], desc="generate", disable=not progress, leave=False):
            with cost.timed(device, batch_times if len(idx) == cfg.batch_size else []):
                images = run_batch(idx)
            keep(idx, images)
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
    del images
    grid.save()
    per_image = [t / len(batches[0]) for t in batch_times]  # every timed batch has the first batch's size
    flops: dict = {}
    ort = cost.onnx_components(pipe)
    if not ort:  # FlopCounterMode sees torch operators only
        with cost.count_flops(flops):
            run_batch(batches[0][:1])

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
        "gflops_per_image": flops["flops"] / 1e9 if flops else None,
    }
    protocols: dict[str, dict] = {
        "latency_s": {"what": "end-to-end pipeline call per image (prompt encoding to decoded image), median over "
                              "timed batches after one warm-up batch", "batches": len(batch_times),
                      "batch_size": cfg.batch_size, "spread": latency},
        "peak_memory_mb": {"kind": peak.kind, "region": "warm-up and timed generation"},
        "gflops_per_image": {"implementation": "torch.utils.flop_counter.FlopCounterMode", "images": 1},
    }
    absent: dict[str, str] = {}
    if ort:
        absent["gflops_per_image"] = (f"{', '.join(ort)} run in ONNX Runtime, which torch's FlopCounterMode does not "
                                      "see; the torch-backend row of the same model has the count")
    compiled: dict[str, str] = {}
    for knob in (prune, quant, backend):  # artifact keys, sizes, one-off build costs
        knob_metrics, knob_protocols, knob_artifacts = knob.row_fields(pipe)
        metrics.update(knob_metrics)
        protocols.update(knob_protocols)
        compiled.update(knob_artifacts)
    pipe = None  # release the model before the quality networks load
    if cfg.quality:
        t_quality = time.time()
        quality = Quality(cfg, device, baseline_dir, RESULTS / "fid-reference")
        for idx in tqdm(batches, desc="quality", disable=not progress, leave=False):
            chosen = [seeds[i] for i in idx]
            quality.update(load_images(artifacts / "images", chosen), [prompts[i] for i in idx], chosen)
        q_metrics, q_protocols, absent = quality.finish()
        metrics.update(q_metrics)
        protocols.update(q_protocols)
        timings["quality_s"] = time.time() - t_quality
    else:
        for name in ("fid", "kid", "cmmd", "clip_score", "align_mean", "psnr", "ssim"):
            absent[name] = "quality disabled (quality: false)"
    timings["total_s"] = time.time() - t_start
    return {
        "config": cfg.to_dict(), "status": "ok", "reason": None,
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "protocols": protocols, "absent": absent, "timings": timings,
        "quality_meaningful": quality_is_meaningful(cfg.model),
        "provenance": provenance(device, cfg),
        "artifacts": {"images": str(artifacts / "images"), "grid": str(artifacts / "grid.png"), **compiled},
    }


def image_name(seed: int) -> str:
    return f"seed{seed:06d}.png"


def save_images(images: torch.Tensor, seeds: list[int], folder: Path) -> None:
    """uint8 [B, 3, H, W] -> lossless PNGs named by seed."""
    from PIL import Image

    for img, seed in zip(images, seeds):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / image_name(seed))


def load_images(folder: Path, seeds: list[int]) -> torch.Tensor:
    """The PNGs of these seeds back as uint8 [B, 3, H, W] (bit-identical to what was generated)."""
    from PIL import Image

    arrays = [np.asarray(Image.open(folder / image_name(s)).convert("RGB")) for s in seeds]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class ImageGrid:
    """A contact sheet of the first 64 images, 8 to a row, filled batch by batch."""

    LIMIT = 64

    def __init__(self, path: Path):
        self.path, self.images = path, []

    def add(self, images: torch.Tensor) -> None:
        room = self.LIMIT - sum(len(i) for i in self.images)
        if room > 0:
            self.images.append(images[:room].clone())

    def save(self) -> None:
        from PIL import Image

        grid = torch.cat(self.images)
        cols = min(8, len(grid))
        rows = -(-len(grid) // cols)
        pad = torch.zeros(rows * cols - len(grid), *grid.shape[1:], dtype=torch.uint8)
        sheet = torch.cat([grid, pad]).view(rows, cols, *grid.shape[1:]).permute(0, 3, 1, 4, 2)
        Image.fromarray(sheet.reshape(rows * grid.shape[2], cols * grid.shape[3], 3).numpy()).save(self.path)


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

