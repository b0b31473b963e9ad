"""The declared schema of every metric a trial row can hold: label, unit and which direction is better."""
from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class Metric:
    label: str
    unit: str
    better: str  # "minimize" | "maximize"


METRICS: dict[str, Metric] = {
    # quality
    "fid": Metric("FID", "", "minimize"),
    "kid": Metric("KID", "", "minimize"),
    "cmmd": Metric("CMMD", "", "minimize"),
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
    "peak_memory_mb": Metric("peak memory", "MiB", "minimize"),  # CUDA: allocator peak allocated; CPU: peak RSS
    "peak_reserved_mb": Metric("peak memory reserved by the CUDA caching allocator", "MiB", "minimize"),
    # GPU throughput and energy (workbench.measure.gpu): CUDA rows only, absent with the reason on a CPU
    "unet_tflops": Metric("achieved UNet throughput (timed calls)", "TFLOP/s", "maximize"),
    "unet_roofline_pct": Metric("UNet throughput, % of the device's dense peak", "%", "maximize"),
    "energy_j_per_image": Metric("GPU energy per image (NVML, timed batches)", "J", "minimize"),
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
    # quantisation and ONNX Runtime (workbench.knobs.quant, workbench.knobs.backend): one-off artifact build costs
    "calibration_s": Metric("calibration capture time (artifact build, once)", "s", "minimize"),
    "importance_s": Metric("layer importance time (artifact build, once)", "s", "minimize"),
    "quantize_s": Metric("NNCF quantisation time (artifact build, once)", "s", "minimize"),
    "qat_s": Metric("QAT distillation time (artifact build, once)", "s", "minimize"),
    "export_s": Metric("ONNX export time of float components (artifact build, once)", "s", "minimize"),
    "quantized_layers": Metric("layers run in INT8", "", "maximize"),
    # runtime (workbench.knobs.compile, workbench.knobs.torchao): one-off costs, never part of the latency
    "compile_s": Metric("compilation and first calls (torch.compile at build, which loads precompiled code, plus the "
                        "warm-up batch minus a timed batch)", "s", "minimize"),
    "compile_load_s": Metric("torch.compile at build (precompiled code loaded; part of compile_s)", "s", "minimize"),
    "precompile_save_s": Metric("precompile: writing what the trial traced, after generation (once)", "s",
                                "minimize"),
    "torchao_layers": Metric("UNet linears quantised by torchao", "", "maximize"),
    "torchao_s": Metric("torchao quantisation time (at build)", "s", "minimize"),
    "float_layers": Metric("layers kept in float among quantised components", "", "minimize"),
    # skipping work (workbench.knobs.feature_cache, tokens, early_stop, vae, prompt_cache)
    "unet_calls": Metric("UNet calls per pipeline call (timed batches, median)", "", "minimize"),
    "unet_full_fraction": Metric("feature caching: fraction of UNet calls run in full", "", "minimize"),
    "token_layers": Metric("self-attention layers with downsampled keys and values", "", "maximize"),
    "steps_run": Metric("early stop: steps each image ran (mean)", "", "minimize"),
    "steps_saved_frac": Metric("early stop: fraction of the steps saved (mean over images)", "", "maximize"),
    "vae_decoder_params_m": Metric("VAE decoder parameters", "M", "minimize"),
    "tiny_vae_s": Metric("tiny VAE distillation time (artifact build, once)", "s", "minimize"),
    "tiny_vae_psnr": Metric("tiny VAE decoder PSNR to the full decoder (held-out generations, at build)", "dB",
                            "maximize"),
    "prompt_cache_hit_rate": Metric("prompt-embedding cache hit rate", "fraction", "maximize"),
    "text_encoder_saved_s": Metric("text-encoder seconds saved by cache hits (whole trial)", "s", "maximize"),
}


# The headline quality metrics, in the order tables and screens show them (each has a spread below).
QUALITY = ("fid", "kid", "cmmd", "clip_score", "align_mean", "psnr", "ssim")
# Fidelity to the baseline's images at the same seeds, and its value for the baseline itself (identical images): a
# sweep tells Optuna these for its baseline trial, whose row has no fidelity (there is nothing to compare it to).
IDENTICAL = {"psnr": math.inf, "ssim": 1.0}

# The spread of every quality metric: ("interval", low column, high column) for a 95 % interval, or
# ("plusminus", column) for a standard deviation / standard error. Rows carry these columns beside the value.
SPREADS: dict[str, tuple] = {
    "fid": ("interval", "fid_lo", "fid_hi"),                      # percentile bootstrap over generated images
    "kid": ("plusminus", "kid_sd"),                               # standard deviation over subsets
    "cmmd": ("plusminus", "cmmd_sd"),                             # standard deviation over subsets
    "clip_score": ("plusminus", "clip_score_se"),                 # standard error over images
    "align_garment": ("interval", "align_garment_lo", "align_garment_hi"),      # Wilson
    "align_colour": ("interval", "align_colour_lo", "align_colour_hi"),         # Wilson
    "align_position": ("interval", "align_position_lo", "align_position_hi"),   # Wilson
    "align_mean": ("interval", "align_mean_lo", "align_mean_hi"),               # normal, per-image means
    "psnr": ("plusminus", "psnr_se"),                             # standard error over images
    "ssim": ("plusminus", "ssim_se"),                             # standard error over images
}
# Confirmation (`workbench confirm`): the speed-up from interleaved timing rounds and paired differences to the
# baseline on held-out seeds, each with its 95 % interval (docs/methodology.md).
PAIRED = ("fid", "kid", "cmmd", "clip_score", "align_mean", "align_garment", "align_colour", "align_position")
METRICS["speedup"] = Metric("speed-up vs baseline (median of interleaved rounds)", "x", "maximize")
METRICS["latency_interleaved_s"] = Metric("latency per image, interleaved with the baseline", "s", "minimize")
SPREADS["speedup"] = ("interval", "speedup_lo", "speedup_hi")     # order statistics of the per-round ratios
for _m in PAIRED:
    METRICS[f"delta_{_m}"] = Metric(f"Δ {METRICS[_m].label} vs baseline (paired)", METRICS[_m].unit,
                                    METRICS[_m].better)
    SPREADS[f"delta_{_m}"] = ("interval", f"delta_{_m}_lo", f"delta_{_m}_hi")   # paired bootstrap
SPREAD_COLUMNS = {c for spec in SPREADS.values() for c in spec[1:]}


def error_bar(row, name: str) -> tuple[float, float] | None:
    """(below, above) distances of the spread from the value, for matplotlib's asymmetric yerr/xerr."""
    spec = SPREADS.get(name)
    if spec is None or any(_missing(row, c) for c in spec[1:]) or _missing(row, name):
        return None
    value = float(row[name])
    if spec[0] == "interval":
        return max(0.0, value - float(row[spec[1]])), max(0.0, float(row[spec[2]]) - value)
    width = float(row[spec[1]])
    return width, width


def with_spread(row, name: str, digits: int = 4) -> str:
    """'47.1 [45.3, 49.0]' for an interval, '0.0123 ± 0.0021' for a standard deviation or error, as tables print."""
    if _missing(row, name):
        return ""
    fmt = f"{{:.{digits}g}}"
    value = fmt.format(float(row[name]))
    spec = SPREADS.get(name)
    if spec is None or any(_missing(row, c) for c in spec[1:]):
        return value
    if spec[0] == "interval":
        return f"{value} [{fmt.format(float(row[spec[1]]))}, {fmt.format(float(row[spec[2]]))}]"
    return f"{value} ± {fmt.format(float(row[spec[1]]))}"


def _missing(row, column: str) -> bool:
    try:
        value = row[column]
    except (KeyError, IndexError):
        return True
    return value is None or (isinstance(value, float) and value != value)


def check_metric(name: str, field: str) -> Metric:
    """The metric's schema, or one line naming the unknown metric and the closest known one."""
    if name not in METRICS:
        raise ConfigError(f"{field}: unknown metric {name!r}" + did_you_mean(name, METRICS))
    return METRICS[name]


def axis_label(name: str) -> str:
    m = METRICS[name]
    arrow = "↓ better" if m.better == "minimize" else "↑ better"
    return f"{m.label}" + (f" [{m.unit}]" if m.unit else "") + f" ({arrow})"
