"""A trial: one validated, frozen configuration measured for quality and cost -> one row.

    row = run_trial(TrialConfig(steps=10, scheduler="ddim"))

`run_trial` conducts four steps, each its own function: build the pipeline (load, then every knob of the
registry), generate and time (images streamed to disk, warm-up excluded), cost (parameters, size, FLOPs) and
quality (every metric from the images on disk). The row holds the configuration, metrics (with the protocol of
each quality number, and the reason for any metric that could not be computed), status, timings, provenance and
artifact paths (images, grid).
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench import __version__, knobs, paths
from workbench.config import TrialConfig
from workbench.images import ImageGrid, load_images, save_images
from workbench.knobs import compile as compile_knob
from workbench.knobs.spec import Row
from workbench.measure import cost, fence, gpu
from workbench.measure.energy import EnergyMeter
from workbench.measure.quality import Quality
from workbench.metrics import QUALITY
from workbench.models import (load_pipeline, native_resolution, pin_execution_device, quality_is_meaningful,
                              resolve_device)
from workbench.prompts import load_prompts, prompt_set_version, prompts_for

PER_IMAGE = "per_image.npz"  # beside the images when cfg.per_image: every image's quality evidence


@dataclass(frozen=True)
class Plan:
    """What a trial generates: one (seed, prompt) per image, in batches; every timed batch has the first's size."""
    seeds: list[int]
    prompts: list[str]
    batches: list[list[int]]   # image indices per pipeline call
    resolution: int


def build_pipeline(cfg: TrialConfig, device: torch.device) -> tuple[object, Row]:
    """A fresh pipeline with every knob applied, on the device (the precision knob places it), and what the knobs
    add to the row."""
    pipe = load_pipeline(cfg.model, device)  # a random-weight preset is built on the device directly
    row = knobs.apply(pipe, cfg, device)
    pin_execution_device(pipe, device)  # diffusers would search every submodule for it on every call
    return pipe, row


def generate(pipe, cfg: TrialConfig, prompts: list[str], seeds: list[int], resolution: int, device: torch.device):
    """Images for (prompt, seed) pairs as uint8 [B, 3, H, W]: one generator per image, so batching never changes them."""
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    out = pipe(prompts, generator=generators, height=resolution, width=resolution, output_type="pt",
               **knobs.call(pipe, cfg)).images
    if not torch.isfinite(out).all():  # uint8 would turn NaN into black pixels silently
        raise FloatingPointError(f"{int((~torch.isfinite(out)).sum())} of {out.numel()} pixel values are NaN or inf: a "
                                 f"component overflowed in {cfg.precision} (an fp16 VAE without upcast, an FP8 scale); "
                                 "use vae_upcast: auto, precision: fp32 / bf16, or drop the quantisation")
    return (out.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def plan(cfg: TrialConfig, pipe=None) -> Plan:
    """The trial's images in batches; the resolution is the configuration's, else the pipeline's native one (0 when
    neither is known: measuring images already on disk needs none)."""
    seeds = cfg.seed_list
    batches = [list(range(i, min(i + cfg.batch_size, len(seeds)))) for i in range(0, len(seeds), cfg.batch_size)]
    return Plan(seeds, prompts_for(load_prompts(cfg.prompt_set), len(seeds)), batches,
                cfg.resolution or (native_resolution(pipe) if pipe is not None else 0))


def regenerate(cfg: TrialConfig, folder: Path) -> dict:
    """A trial's images again, into `folder`, without timing, cost or quality (a baseline's images on a host that
    did not run it); returns the provenance of where they were made."""
    device = resolve_device(cfg.device)
    knobs.check_device(cfg, device)
    pipe, _ = build_pipeline(cfg, device)
    work = plan(cfg, pipe)
    folder.mkdir(parents=True, exist_ok=True)
    for idx in work.batches:
        seeds = [work.seeds[i] for i in idx]
        save_images(generate(pipe, cfg, [work.prompts[i] for i in idx], seeds, work.resolution, device), seeds, folder)
    return provenance(device, cfg)


def generate_and_time(pipe, cfg: TrialConfig, work: Plan, artifacts: Path, device: torch.device,
                      progress: bool = True) -> tuple[dict, dict, dict]:
    """Generate every image to disk (and the grid), timing the pipeline per stage after one warm-up batch.

    Returns (metrics, protocols, absent). A last batch smaller than the rest is generated but not timed; if fewer
    than `timing_repeats` full batches were timed, the first batch is generated again for timing only. On CUDA the
    row also gets achieved UNet TFLOP/s (FLOPs of the timed UNet calls, counted on the meta device, over their
    time), its % of the device's dense peak, energy per image over the timed batches (NVML) and peak reserved
    memory; on a CPU these are absent with the reason."""
    timer = cost.StageTimer(pipe, device)
    grid = ImageGrid(artifacts / "grid.png")
    batch_times: list[float] = []
    stage_per_image: dict[str, list[float]] = {name: [] for name in cost.STAGES}
    unet_calls: list[float] = []
    unet_inputs: list = []  # the signature of each timed UNet call, beside its time

    def run_batch(idx: list[int]) -> torch.Tensor:
        return generate(pipe, cfg, [work.prompts[i] for i in idx], [work.seeds[i] for i in idx], work.resolution,
                        device)

    unet_counts: list[int] = []  # UNet calls of each timed batch (feature caching and early stop change them)

    def record_timing(n_images: int) -> None:
        seconds = timer.calls
        for name, calls in seconds.items():
            stage_per_image[name].append(sum(calls) / n_images)
        unet_counts.append(len(seconds["unet"]))
        unet_calls.extend(seconds["unet"])  # flat, beside their signatures (unet_inputs)
        unet_inputs.extend(timer.inputs["unet"])
        timer.reset()

    first = work.batches[0]
    # the fence keeps a warm kernel's preparation of the next trial off the CPU while this one times
    with fence.timed(), cost.PeakMemory(device) as peak, EnergyMeter(device) as energy:
        warm: list[float] = []
        with cost.timed(device, warm):
            images = run_batch(first)
        save_images(images, [work.seeds[i] for i in first], artifacts / "images")
        grid.add(images)
        timer.enabled = True
        for idx in tqdm(work.batches[1:], desc="generate", disable=not progress, leave=False):
            full = len(idx) == len(first)
            with energy.region() if full else nullcontext(), cost.timed(device, batch_times if full else []):
                images = run_batch(idx)
            save_images(images, [work.seeds[i] for i in idx], artifacts / "images")
            grid.add(images)
            record_timing(len(idx)) if full else timer.reset()
        while len(batch_times) < cfg.timing_repeats:  # timing-only repeats of the first batch
            with energy.region(), cost.timed(device, batch_times):
                run_batch(first)
            record_timing(len(first))
        timer.enabled = False
    timer.remove()
    grid.save()
    latency = cost.summary([t / len(first) for t in batch_times])
    metrics = {"latency_s": latency["median"], "latency_iqr_s": latency["iqr"],
               "unet_calls": float(np.median(unet_counts)) if unet_counts else None,
               "text_encoder_s": float(np.median(stage_per_image["text_encoder"])),
               "unet_s": float(np.median(stage_per_image["unet"])),
               "unet_step_s": float(np.median(unet_calls)) if unet_calls else None,
               "vae_decode_s": float(np.median(stage_per_image["vae_decode"])),
               "warmup_s": warm[0], "peak_memory_mb": peak.bytes / 2**20 if peak.bytes else None}
    if cfg.compile != "none":  # what compiling every shape cost, beyond a warm batch: never in the latency
        metrics["compile_s"] = max(0.0, warm[0] - float(np.median(batch_times)))
    absent: dict = {}
    if unet_counts and not any(unet_counts):  # images came, no UNet call was seen: a graph recorded untimed
        unseen = ["unet_s", "unet_step_s", "unet_calls"] + (["vae_decode_s"] if not any(stage_per_image["vae_decode"])
                                                            else [])
        reason = ("ran inside a recorded CUDA graph of the whole pipeline call (compile_scope: loop-captured) that "
                  "was recorded before this trial's stage timer existed, so it holds no timing events: latency_s "
                  "less text_encoder_s is the steps and the decode together")
        metrics.update(dict.fromkeys(unseen))
        absent.update(dict.fromkeys(unseen, reason))
    protocols = {"latency_s": {"what": "end-to-end pipeline call per image (prompt encoding to decoded image), "
                                       "median over timed batches after one warm-up batch",
                               "batches": len(batch_times), "batch_size": cfg.batch_size, "spread": latency},
                 "peak_memory_mb": {"kind": peak.kind, "region": "warm-up and timed generation"}}
    row = Row(metrics, protocols)
    for part in (gpu.unet_throughput(pipe.unet, device, unet_calls, unet_inputs, timer.examples),
                 gpu.energy_per_image(energy, len(batch_times) * len(first)), gpu.reserved_memory(peak, device)):
        row.update(Row(*part[:2]))
        absent.update(part[2])
    return row.metrics, row.protocols, absent


def model_cost(pipe, cfg: TrialConfig, work: Plan, device: torch.device) -> tuple[dict, dict, dict]:
    """(metrics, protocols, absent): parameters, size in memory and FLOPs of one image."""
    metrics = {"params_m": cost.parameter_counts(pipe)["total"] / 1e6, "model_size_mb": cost.model_bytes(pipe) / 2**20}
    protocols = {"gflops_per_image": {"implementation": "torch.utils.flop_counter.FlopCounterMode", "images": 1}}
    ort = cost.onnx_components(pipe)
    if ort:  # FlopCounterMode sees torch operators only
        return metrics, protocols, {"gflops_per_image": (
            f"{', '.join(ort)} run in ONNX Runtime, which torch's FlopCounterMode does not see; the torch-backend "
            "row of the same model has the count")}
    flops: dict = {}
    one = work.batches[0][:1]
    with compile_knob.eager(), cost.count_flops(flops):  # compiled and recorded modules count as eager
        generate(pipe, cfg, [work.prompts[i] for i in one], [work.seeds[i] for i in one], work.resolution, device)
    metrics["gflops_per_image"] = flops["flops"] / 1e9
    return metrics, protocols, {}


def quality(cfg: TrialConfig, work: Plan, artifacts: Path, baseline_dir, device: torch.device,
            progress: bool = True) -> tuple[dict, dict, dict]:
    """(metrics, protocols, absent) of every quality metric, streamed from the images on disk batch by batch."""
    if not cfg.quality:
        return {}, {}, {name: "quality disabled (quality: false)" for name in QUALITY}
    measured = Quality(cfg, device, baseline_dir, paths.fid_reference(), meaningful=quality_is_meaningful(cfg.model))
    for idx in tqdm(work.batches, desc="quality", disable=not progress, leave=False):
        chosen = [work.seeds[i] for i in idx]
        measured.update(load_images(artifacts / "images", chosen), [work.prompts[i] for i in idx], chosen)
    if cfg.per_image:  # what a paired comparison on the same seeds resamples (workbench confirm)
        np.savez(artifacts / PER_IMAGE, **measured.per_image(work.seeds))
    return measured.finish()


def run_trial(config: TrialConfig | dict, *, baseline_dir: str | Path | None = None,
              artifacts_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Run one trial and return its row (status 'ok'); errors propagate (`workbench.study.executors.record_trial` writes it to the store).

    Images stream to disk batch by batch and quality is measured from there, so memory is bounded by the batch.
    """
    cfg = config if isinstance(config, TrialConfig) else TrialConfig.from_dict(config)
    t_start = time.time()
    device = resolve_device(cfg.device)
    knobs.check_device(cfg, device)
    artifacts = Path(artifacts_dir) if artifacts_dir else paths.results() / "artifacts" / f"adhoc-{int(t_start)}"
    (artifacts / "images").mkdir(parents=True, exist_ok=True)

    load_time: list[float] = []
    with cost.timed(device, load_time):
        pipe, knob_row = build_pipeline(cfg, device)
    work = plan(cfg, pipe)
    g_metrics, g_protocols, g_absent = generate_and_time(pipe, cfg, work, artifacts, device, progress)
    row = Row(g_metrics, g_protocols)
    timings = {"load_s": load_time[0], "warmup_s": row.metrics["warmup_s"]}
    observed = knobs.observe(pipe, cfg)  # what the knobs saw while generating (steps run, cache hits)
    metrics, protocols, absent = model_cost(pipe, cfg, work, device)
    absent.update(g_absent)
    row.update(Row(metrics, protocols)).update(knob_row).update(observed)  # artifact keys, sizes, build costs
    if "compile_s" in row.metrics:  # precompiled code is loaded while torch.compile wraps the modules, at build time
        row.metrics["compile_s"] += row.metrics.get("compile_load_s", 0.0)
    pipe = None  # release the model before the quality networks load
    t_quality = time.time()
    q_metrics, q_protocols, q_absent = quality(cfg, work, artifacts, baseline_dir, device, progress)
    row.update(Row(q_metrics, q_protocols))
    absent.update(q_absent)
    if cfg.quality:
        timings["quality_s"] = time.time() - t_quality
    timings["total_s"] = time.time() - t_start
    return {
        "config": cfg.to_dict(), "status": "ok", "reason": None,
        "metrics": {k: v for k, v in row.metrics.items() if v is not None},
        "protocols": row.protocols, "absent": absent, "timings": timings,
        "quality_meaningful": quality_is_meaningful(cfg.model),
        "provenance": provenance(device, cfg),
        "artifacts": {"images": str(artifacts / "images"), "grid": str(artifacts / "grid.png"), **row.artifacts,
                      **({"per_image": str(artifacts / PER_IMAGE)} if cfg.per_image and cfg.quality else {})},
    }


def provenance(device: torch.device, cfg: TrialConfig) -> dict:
    """Where and with what a row was measured."""
    import diffusers
    import torchmetrics
    import transformers

    try:  # "-dirty" when tracked files differ from the commit: the row was measured with code no commit holds
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7", "--exclude=*"],
                                capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {"workbench": __version__, "git_commit": commit, "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "torchmetrics": torchmetrics.__version__, "device": str(device), "device_name": name,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "host": socket.gethostname(),
            "prompt_set": prompt_set_version(cfg.prompt_set), "seeds": cfg.seeds}
