"""The declared schema of every metric a trial row can hold: label, unit and which direction is better."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    label: str
    unit: str
    better: str  # "minimize" | "maximize"


METRICS: dict[str, Metric] = {
    # quality
    "fid": Metric("FID", "", "minimize"),
    "clip_score": Metric("CLIP score", "100·cos", "maximize"),
    "align_garment": Metric("garment alignment", "fraction", "maximize"),
    "align_colour": Metric("colour alignment", "fraction", "maximize"),
    "align_position": Metric("position alignment", "fraction", "maximize"),
    "align_mean": Metric("prompt alignment (mean of garment, colour, position)", "fraction", "maximize"),
    "psnr": Metric("PSNR vs baseline", "dB", "maximize"),
    "ssim": Metric("SSIM vs baseline", "", "maximize"),
    # cost
    "latency_s": Metric("latency per image", "s", "minimize"),
    "latency_iqr_s": Metric("latency per image, interquartile range", "s", "minimize"),
    "text_encoder_s": Metric("text encoder per image", "s", "minimize"),
    "unet_s": Metric("UNet per image (all steps)", "s", "minimize"),
    "unet_step_s": Metric("UNet per step (one call, whole batch)", "s", "minimize"),
    "vae_decode_s": Metric("VAE decode per image", "s", "minimize"),
    "warmup_s": Metric("warm-up (first batch)", "s", "minimize"),
    "peak_memory_mb": Metric("peak memory", "MiB", "minimize"),
    "params_m": Metric("parameters", "M", "minimize"),
    "model_size_mb": Metric("model size in memory", "MiB", "minimize"),
    "gflops_per_image": Metric("GFLOPs per image", "GFLOP", "minimize"),
    # pruning (workbench.knobs.prune): sizes before/after, and the one-off build cost of the cached artifact
    "unet_params_m": Metric("UNet parameters", "M", "minimize"),
    "unet_params_before_m": Metric("UNet parameters before pruning", "M", "minimize"),
    "unet_gflops": Metric("UNet GFLOPs per call (batch 1)", "GFLOP", "minimize"),
    "unet_gflops_before": Metric("UNet GFLOPs per call before pruning (batch 1)", "GFLOP", "minimize"),
    "prune_s": Metric("pruning time (artifact build, once)", "s", "minimize"),
    "recovery_s": Metric("recovery distillation time (artifact build, once)", "s", "minimize"),
    "unet_kd_mse": Metric("UNet output MSE to the unpruned UNet", "", "minimize"),
}


def check_metric(name: str, field: str) -> Metric:
    from workbench.errors import ConfigError

    if name not in METRICS:
        import difflib
        close = difflib.get_close_matches(name, list(METRICS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(METRICS)
        raise ConfigError(f"{field}: unknown metric {name!r}; {hint}")
    return METRICS[name]


def axis_label(name: str) -> str:
    m = METRICS[name]
    arrow = "↓ better" if m.better == "minimize" else "↑ better"
    return f"{m.label}" + (f" [{m.unit}]" if m.unit else "") + f" ({arrow})"
