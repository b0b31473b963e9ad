"""Prune knob: structured pruning of the UNet (`prune_ratio`, `prune_method`) with optional distillation recovery
(`recovery_steps`, `recovery_data`). Thin: validates its fields and asks `workbench.compress` for the cached
pruned UNet (built once per model, method, ratio, recovery budget, seed and code version)."""
from __future__ import annotations

from pathlib import Path

from workbench.errors import ConfigError

METHODS = ("channels-magnitude", "channels-taylor", "heads", "blocks")  # = workbench.compress.prune.METHODS
MAX_RATIO = 0.75
# workbench.fields: the bounds and choices check() enforces; every prune field changes the UNet (a rebuild)
FIELDS = {"prune_ratio": {"low": 0.0, "high": MAX_RATIO}, "prune_method": {"choices": METHODS},
          "recovery_steps": {"low": 0}, "recovery_data": {"choices": ("teacher",), "open": True}}


def check(cfg, where: str = "config") -> None:
    """One ConfigError naming the first bad prune field and its fix (before any work)."""
    if not 0.0 <= cfg.prune_ratio <= MAX_RATIO:
        raise ConfigError(f"{where}.prune_ratio: is the fraction of UNet structure removed: 0 (off) to {MAX_RATIO}, "
                          f"got {cfg.prune_ratio}")
    if cfg.prune_method not in METHODS:
        raise ConfigError(f"{where}.prune_method: {cfg.prune_method!r} is not one of {', '.join(METHODS)}")
    if cfg.recovery_steps < 0:
        raise ConfigError(f"{where}.recovery_steps: must be 0 (no recovery) or a positive number of distillation "
                          f"steps, got {cfg.recovery_steps}")
    if cfg.recovery_steps and cfg.prune_ratio == 0:
        raise ConfigError(f"{where}.recovery_steps: recovery distils a pruned UNet, but prune_ratio is 0; set "
                          f"prune_ratio > 0 or recovery_steps: 0")
    if cfg.recovery_data != "teacher":
        from workbench.compress.distill import count_folder_samples

        if not Path(cfg.recovery_data).is_dir():
            raise ConfigError(f"{where}.recovery_data: folder {cfg.recovery_data!r} does not exist; use 'teacher' "
                              "(data-free) or a folder of images with a .txt caption beside each")
        if count_folder_samples(cfg.recovery_data) == 0:
            raise ConfigError(f"{where}.recovery_data: folder {cfg.recovery_data!r} has no image with a caption "
                              "file beside it (x.png + x.txt)")


def apply(pipe, cfg):
    """Swap in the pruned (and recovered) UNet; its report (artifact key, cost, sizes) goes to `pipe.prune_report`."""
    pipe.prune_report = None
    if cfg.prune_ratio == 0:
        return pipe
    from workbench.compress.build import PruneSpec, pruned_unet
    from workbench.models import resolve_device
    from workbench.prompts import load_prompts, prompt_set_version

    spec = PruneSpec(cfg.prune_method, cfg.prune_ratio, cfg.recovery_steps, cfg.recovery_data)
    unet, report = pruned_unet(pipe, spec, load_prompts(cfg.prompt_set), prompt_set_version(cfg.prompt_set),
                               device=resolve_device(cfg.device))
    pipe.unet = unet
    pipe.prune_report = report
    return pipe


def row_fields(pipe) -> tuple[dict, dict, dict]:
    """(metrics, protocols, artifacts) of the prune knob for the trial's row; empty when pruning is off."""
    report = getattr(pipe, "prune_report", None)
    if not report:  # unpruned: its UNet size still belongs on the row (the anchor of size-vs-quality figures)
        return {"unet_params_m": sum(p.numel() for p in pipe.unet.parameters()) / 1e6}, {}, {}
    metrics = {"unet_params_m": report["params_after"] / 1e6, "unet_params_before_m": report["params_before"] / 1e6,
               "unet_gflops": report["flops_after"] / 1e9, "unet_gflops_before": report["flops_before"] / 1e9,
               "prune_s": report["prune_s"], "recovery_s": report["recovery_s"], "unet_kd_mse": report["kd_mse"]}
    protocol = {"artifact": report["key"], "folder": report["folder"], "loaded_from_cache": not report["built"], "spec": report["spec"],
                "build_device": report["build_device"], "samples_s": report["samples_s"],
                "recovery_data": report["recovery_data"], "recovery": report["recovery"],
                **{k: v for k, v in report["prune"].items() if k in ("stage_ratio", "stage_kept", "removed", "heads")},
                "flops": "torch FlopCounterMode, one UNet call at batch 1 (the CPU SDPA kernel is not counted)",
                "unet_kd_mse": "MSE of noise predictions vs the unpruned UNet, 16 noised unit-Gaussian latents with "
                               "the prompt set's embeddings, random timesteps (fixed seeds)"}
    return metrics, {"prune": protocol}, {"pruned_unet": report["folder"]}
