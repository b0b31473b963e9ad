"""Compressed UNets as cached artifacts: teacher samples -> prune -> recover -> save, each built once.

    unet, report = pruned_unet(pipe, PruneSpec("channels-taylor", 0.3, recovery_steps=500), prompts, "world-v1@ab12")

Two artifact kinds go through `cache.cached`: `teacher-samples` (the unpruned model's own generations for a
prompt set, shared by every method and ratio) and `pruned-unet` (safetensors + pruned.json + meta.json with the
build cost). A trial that asks for an artifact another trial built only loads it.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from workbench.compress import cache, prune
from workbench.compress.distill import (DistillConfig, Samples, _encode, distill, folder_samples, noised_batches,
                                        output_mse, teacher_samples)
from workbench.compress.specs import PruneSpec
from workbench.prompts import prompts_for

TEACHER = {"n": 128, "steps": 20, "guidance": 7.5, "sampler": "DPMSolverMultistepScheduler", "seed": 0}
# GPU budgets (above 1,000 recovery steps): 8,192 teacher generations (1,024 left the student fitting too few
# scenes: FID@1,000 +14.8 % after 3,000 steps) and batch 128 (an H100 step of this UNet is launch-bound: batch 32
# used the GPU for a fraction of its 90 ms, so 4x the samples cost little more per step). CPU budgets keep
# 128 generations and batch 32.
LARGE_BUDGET = {"above_steps": 1000, "teacher_n": 8192, "batch_size": 128}
CALIBRATION = {"batches": 4, "batch_size": 16, "seed": 1}  # Taylor gradients / block importance
SEED = 0  # the seed of everything random in a build (part of the key)


def large_budget(spec: PruneSpec) -> bool:
    return spec.recovery_steps > LARGE_BUDGET["above_steps"]


def teacher_settings(spec: PruneSpec) -> dict:
    """The data-free distillation set for `spec`: TEACHER, with more generations for GPU budgets."""
    return {**TEACHER, "n": LARGE_BUDGET["teacher_n"] if large_budget(spec) else TEACHER["n"]}


def distill_config(spec: PruneSpec) -> DistillConfig:
    """The recovery settings for `spec` (part of the artifact key): DistillConfig's, batch 128 for GPU budgets."""
    batch = LARGE_BUDGET["batch_size"] if large_budget(spec) else DistillConfig.batch_size
    return DistillConfig(steps=spec.recovery_steps, batch_size=batch, seed=SEED)


def _tokens(pipe) -> int:
    return int(pipe.tokenizer.model_max_length)


def samples_for(pipe, spec: PruneSpec, prompts: list[str], prompt_set_id: str, device, progress: bool) -> tuple[Samples, dict]:
    """Distillation / calibration data: the teacher's generations (cached) or the recovery folder's images."""
    if spec.recovery_data != "teacher":
        t0 = time.time()
        return folder_samples(pipe, spec.recovery_data, device), {"samples_s": time.time() - t0,
                                                                  "data": str(Path(spec.recovery_data).resolve())}
    return teacher_set(pipe, teacher_settings(spec), prompts, prompt_set_id, device, progress)


def teacher_set(pipe, teacher: dict, prompts: list[str], prompt_set_id: str, device, progress: bool) -> tuple[Samples, dict]:
    """The model's own generations (settings `teacher`, e.g. TEACHER) as a cached `teacher-samples` artifact."""
    inputs = {"model": cache.state_fingerprint(pipe.unet), "text_encoder": cache.state_fingerprint(pipe.text_encoder),
              "prompt_set": prompt_set_id, **teacher}

    def build(folder: Path) -> dict:
        from diffusers import DPMSolverMultistepScheduler

        original = pipe.scheduler
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(original.config)
        try:
            t0 = time.time()
            samples = teacher_samples(pipe, prompts, teacher["n"], teacher["steps"], teacher["guidance"],
                                      teacher["seed"], device=device, batch_size=16 if device.type == "cpu" else 256,
                                      progress=progress)
            samples.save(folder / "samples.safetensors")
            return {"cost_s": {"samples_s": time.time() - t0}, "device": str(device)}
        finally:
            pipe.scheduler = original

    art = cache.cached("teacher-samples", inputs, build)
    return Samples.load(art.folder / "samples.safetensors"), {"samples_s": art.meta["cost_s"]["samples_s"],
                                                              "data": f"teacher samples {art.key}"}


def pruned_unet(pipe, spec: PruneSpec, prompts: list[str], prompt_set_id: str, device: torch.device | None = None,
                progress: bool = True):
    """The pruned (and recovered) UNet of `pipe` for `spec`, from the cache or built now; and its report.

    `pipe` is the unpruned fp32 pipeline; its UNet is the teacher and is left unchanged."""
    device = torch.device(device or "cpu")
    teacher = pipe.unet
    before = prune.unet_cost(teacher, _tokens(pipe))
    needs_data = spec.method in prune.NEEDS_DATA or spec.recovery_steps > 0
    inputs = {"model": cache.state_fingerprint(teacher), **spec.to_dict(), "seed": SEED,
              "prompt_set": prompt_set_id if needs_data and spec.recovery_data == "teacher" else None,
              "teacher": teacher_settings(spec) if needs_data and spec.recovery_data == "teacher" else None,
              "calibration": CALIBRATION if spec.method in prune.NEEDS_DATA else None,
              "distill": distill_config(spec).to_dict() if spec.recovery_steps else None}

    def build(folder: Path) -> dict:
        torch.manual_seed(SEED)
        pipe.to(device)
        samples, data = (samples_for(pipe, spec, prompts, prompt_set_id, device, progress) if needs_data
                         else (None, {}))
        student = copy.deepcopy(teacher).to(device).float()
        batches = (noised_batches(samples, pipe.scheduler.config, CALIBRATION["batches"], CALIBRATION["batch_size"],
                                  CALIBRATION["seed"], device=device) if spec.method in prune.NEEDS_DATA else None)
        t0 = time.time()
        info = prune.prune_unet(student, spec.method, spec.ratio, batches, _tokens(pipe))
        prune_s = time.time() - t0
        recovery: dict = {}
        recovery_s = 0.0
        if spec.recovery_steps:
            t0 = time.time()
            recovery = distill(student, teacher, samples, pipe.scheduler.config, distill_config(spec), device=device,
                               progress=progress)
            recovery_s = time.time() - t0
        student.to("cpu")
        pipe.to("cpu")
        prune.save_pruned(student, folder, info)
        return {"cost_s": {"prune_s": prune_s, "recovery_s": recovery_s, **({"samples_s": data["samples_s"]}
                                                                           if data else {})},
                "device": str(device), "prune": info, "recovery": recovery,
                "recovery_data": data.get("data")}

    art = cache.cached("pruned-unet", inputs, build)
    unet = prune.load_pruned(art.folder)
    after = prune.unet_cost(unet, _tokens(pipe))
    held_out = _held_out(pipe, unet, teacher, prompts)
    report = {"key": art.key, "folder": str(art.folder), "built": art.built, "spec": spec.to_dict(),
              "params_before": before["params"], "params_after": after["params"],
              "flops_before": before["flops"], "flops_after": after["flops"],
              "prune_s": art.meta["cost_s"]["prune_s"], "recovery_s": art.meta["cost_s"]["recovery_s"],
              "samples_s": art.meta["cost_s"].get("samples_s"), "build_device": art.meta["device"],
              "kd_mse": held_out, "prune": art.meta["prune"], "recovery": art.meta["recovery"],
              "recovery_data": art.meta["recovery_data"]}
    return unet, report


@torch.no_grad()
def _held_out(pipe, student, teacher, prompts: list[str]) -> float:
    """Output MSE of the pruned UNet to the unpruned one on fixed batches (unit-Gaussian x0, the prompts' embeddings,
    random timesteps): cheap and data-free, so every row has it."""
    c = teacher.config
    gen = torch.Generator().manual_seed(12345)
    embeds = _encode(pipe, prompts_for(prompts, 16), "cpu")
    latents = torch.randn(16, c.in_channels, c.sample_size, c.sample_size, generator=gen)
    batches = noised_batches(Samples(latents, embeds, embeds[:1]), pipe.scheduler.config, 2, 8, seed=7)
    return output_mse(student, teacher, batches)
