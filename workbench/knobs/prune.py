"""Prune knob: structured pruning of the UNet (`prune_ratio`, `prune_method`) with optional distillation recovery
(`recovery_steps`, `recovery_data`). Thin: validates its fields and asks `workbench.compress` for the cached
pruned UNet (built once per model, method, ratio, recovery budget, seed and code version)."""
from __future__ import annotations

from pathlib import Path

from workbench.compress.specs import MAX_PRUNE_RATIO, PRUNE_METHODS, PruneSpec
from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row
from workbench.models import model_family
from workbench.prompts import load_prompts, prompt_set_version

FIELDS = (
    Field("prune_ratio", 0.0, f"fraction of UNet structure pruned away, 0 (off) to {MAX_PRUNE_RATIO}", low=0.0,
          high=MAX_PRUNE_RATIO),
    Field("prune_method", "channels-taylor", " | ".join(PRUNE_METHODS), choices=PRUNE_METHODS),
    Field("recovery_steps", 0, "distillation steps toward the unpruned UNet after pruning, 0 (no recovery) or more",
          low=0),
    Field("recovery_data", "teacher", "teacher (its own generations, data-free) or a folder of images + .txt captions",
          choices=("teacher",), open=True),
)


def check(cfg, where: str = "config") -> None:
    """SD UNets only; recovery needs something pruned; a recovery folder must hold captioned images. Before any work."""
    if cfg.prune_ratio > 0 and model_family(cfg.model, f"{where}.model") == "sdxl":
        raise ConfigError(f"{where}.prune_ratio: pruning handles Stable Diffusion 1.x/2.x UNets, and {cfg.model!r} is "
                          "SDXL; set prune_ratio: 0 or pick an SD model")
    if cfg.recovery_steps and cfg.prune_ratio == 0:
        raise ConfigError(f"{where}.recovery_steps: recovery distils a pruned UNet, but prune_ratio is 0; set "
                          f"prune_ratio > 0 or recovery_steps: 0")
    if cfg.recovery_data != "teacher":
        if not Path(cfg.recovery_data).is_dir():
            raise ConfigError(f"{where}.recovery_data: folder {cfg.recovery_data!r} does not exist; use 'teacher' "
                              "(data-free) or a folder of images with a .txt caption beside each")
        from workbench.compress.distill import count_folder_samples  # heavy: torch

        if count_folder_samples(cfg.recovery_data) == 0:
            raise ConfigError(f"{where}.recovery_data: folder {cfg.recovery_data!r} has no image with a caption "
                              "file beside it (x.png + x.txt)")


def apply(pipe, cfg, device) -> Row:
    """Swap in the pruned (and recovered) UNet; the row gets its artifact key, build cost and sizes."""
    if cfg.prune_ratio == 0:  # unpruned: its UNet size still belongs on the row (the anchor of size-vs-quality)
        return Row({"unet_params_m": sum(p.numel() for p in pipe.unet.parameters()) / 1e6})
    from workbench.compress.build import pruned_unet  # heavy: torch, torch-pruning

    spec = PruneSpec(cfg.prune_method, cfg.prune_ratio, cfg.recovery_steps, cfg.recovery_data)
    pipe.unet, report = pruned_unet(pipe, spec, load_prompts(cfg.prompt_set), prompt_set_version(cfg.prompt_set),
                                    device=device)
    metrics = {"unet_params_m": report["params_after"] / 1e6, "unet_params_before_m": report["params_before"] / 1e6,
               "unet_gflops": report["flops_after"] / 1e9, "unet_gflops_before": report["flops_before"] / 1e9,
               "prune_s": report["prune_s"], "recovery_s": report["recovery_s"], "unet_kd_mse": report["kd_mse"]}
    protocol = {"artifact": report["key"], "folder": report["folder"], "loaded_from_cache": not report["built"],
                "spec": report["spec"], "build_device": report["build_device"], "samples_s": report["samples_s"],
                "recovery_data": report["recovery_data"], "recovery": report["recovery"],
                **{k: v for k, v in report["prune"].items() if k in ("stage_ratio", "stage_kept", "removed", "heads")},
                "flops": "torch FlopCounterMode, one UNet call at batch 1 (the CPU SDPA kernel is not counted)",
                "unet_kd_mse": "MSE of noise predictions vs the unpruned UNet, 16 noised unit-Gaussian latents with "
                               "the prompt set's embeddings, random timesteps (fixed seeds)"}
    return Row(metrics, {"prune": protocol}, {"pruned_unet": report["folder"]})
