"""A trial's configuration: one flat, frozen, validated record of every knob (nanoGPT-style typed defaults)."""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

from workbench.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")

# The widgets' view of the fields no knob module owns (workbench.fields): bounds and choices are the ones
# validate() below enforces (tests/test_fields.py holds them equal); call_time: a new value only changes the
# pipeline call, so the explorer keeps the built pipeline. Knob modules declare their own fields the same way.
FIELDS = {
    "model": {"choices": ("reference", "tiny-random"), "open": True},   # or a diffusers folder / hub id
    "steps": {"low": 1, "call_time": True},
    "cfg_scale": {"low": 0.0, "call_time": True},
    "seeds": {"call_time": True},
    "batch_size": {"low": 1, "call_time": True},
    "resolution": {"low": 0, "step": 8, "call_time": True},
    "device": {"choices": DEVICES, "open": True},                         # or cuda:N
    "timing_repeats": {"low": 1, "call_time": True},
    "quality": {"call_time": True},
    "fid_reference": {"call_time": True},
    "clip_model": {"call_time": True},
}


@dataclass(frozen=True)
class TrialConfig:
    """Every knob of one trial. Defaults are the bundled reference model's recommended setting."""
    model: str = "reference"        # reference (bundled), tiny-random, a diffusers folder, or a hub id (online only)
    scheduler: str = "dpm++2m"      # diffusers class name or alias (workbench.knobs.scheduler.ALIASES)
    steps: int = 25                 # denoising steps
    cfg_scale: float = 7.5          # classifier-free guidance scale, 1 or less disables guidance
    cfg_cutoff: float = 1.0         # fraction of steps that use CFG, after it the UNet batch halves
    precision: str = "fp32"         # fp32 | fp16 | bf16 (weights and activations of every component)
    seeds: str = "0-15"             # EDM-style seed list like 0-3,8 with one image and one generator per seed
    prompt_set: str = "world-v1"    # file under workbench/assets/prompts (or a path), image i uses prompt i mod P
    batch_size: int = 8             # images per pipeline call, never changes the images
    resolution: int = 0             # square output size in pixels, 0 for the native size of the model
    device: str = "auto"            # auto | cpu | cuda
    timing_repeats: int = 3         # at least this many timed batches after warm-up (extra batches if needed)
    quality: bool = True            # compute FID, CLIP score, alignment and fidelity (False for cost only)
    fid_reference: str = "auto"     # auto (world test split for the reference model) or a folder of images
    clip_model: str = "reference"   # CLIP for CLIP score, reference or a transformers CLIP folder
    prune_ratio: float = 0.0        # fraction of UNet structure pruned away, 0 (off) to 0.75
    prune_method: str = "channels-taylor"  # channels-magnitude | channels-taylor | heads | blocks
    recovery_steps: int = 0         # distillation steps toward the unpruned UNet after pruning, 0 for none
    recovery_data: str = "teacher"  # teacher (its own generations, data-free) or a folder of images + .txt captions
    backend: str = "torch"          # torch | onnxruntime (text encoder, UNet and VAE decoder as ONNX Runtime sessions)
    quant: str = "none"             # none | ptq | qat: NNCF INT8 of quant_components, run as QDQ models by ONNX Runtime
    quant_keep: float = 0.0         # fraction of layers kept in float, most important first (0: full INT8)
    importance: str = "sensitivity" # actgrad | sensitivity | random: how layers are ranked for quant_keep
    quant_components: str = "unet"  # comma-separated: unet, text_encoder, vae_decoder
    quant_preset: str = "mixed"     # NNCF preset: mixed (asymmetric activations: uint8, fused by ORT) | performance
    qat_steps: int = 200            # distillation steps of quant: qat (ignored by ptq)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config") -> "TrialConfig":
        """Build from a flat dict, rejecting unknown keys and values of the wrong type (one line each)."""
        known = {f.name: f for f in fields(cls)}
        for key, value in values.items():
            if key not in known:
                close = _closest(key, known)
                raise ConfigError(f"{where}: unknown parameter {key!r}" + (f"; did you mean {close!r}?" if close else
                                  f"; known: {', '.join(known)}"))
        typed = {}
        for key, value in values.items():
            want = type(known[key].default)
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if want is str and isinstance(value, (int, float)) and key == "seeds":
                value = str(value)
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{where}.{key}: expected {want.__name__}, got {value!r} ({type(value).__name__})")
            typed[key] = value
        return validate(cls(**typed), where)

    def replace(self, **changes) -> "TrialConfig":
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def seed_list(self) -> list[int]:
        return parse_seeds(self.seeds)


def _closest(name: str, options) -> str | None:
    import difflib
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return match[0] if match else None


def parse_seeds(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11] (EDM's --seeds syntax)."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m[2] is not None and int(m[2]) < int(m[1])):
            raise ConfigError(f"seeds: {text!r} is not a seed list; write e.g. '0-63' or '0-3,8,10-11'")
        seeds.extend(range(int(m[1]), int(m[2] or m[1]) + 1))
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds: {text!r} repeats a seed; each seed gives one image")
    return seeds


def validate(cfg: TrialConfig, where: str = "config") -> TrialConfig:
    """Check every field; raise one ConfigError naming the first bad field and how to fix it."""
    from workbench.knobs import scheduler as scheduler_knob
    from workbench.models import check_model_source

    def bad(field: str, message: str) -> ConfigError:
        return ConfigError(f"{where}.{field}: {message}")

    if cfg.steps <= 0:
        raise bad("steps", f"must be a positive number of denoising steps, got {cfg.steps}")
    if cfg.cfg_scale < 0:
        raise bad("cfg_scale", f"must be >= 0 (1 or less disables guidance), got {cfg.cfg_scale}")
    if not 0.0 <= cfg.cfg_cutoff <= 1.0:
        raise bad("cfg_cutoff", f"is the fraction of steps that use guidance: 0.0 to 1.0, got {cfg.cfg_cutoff}")
    if cfg.precision not in PRECISIONS:
        raise bad("precision", f"{cfg.precision!r} is not one of {', '.join(PRECISIONS)}")
    if cfg.device not in DEVICES and not re.fullmatch(r"cuda:\d+", cfg.device):
        raise bad("device", f"{cfg.device!r} is not one of {', '.join(DEVICES)} or cuda:N")
    if cfg.batch_size <= 0:
        raise bad("batch_size", f"must be positive, got {cfg.batch_size}")
    if cfg.resolution < 0 or cfg.resolution % 8:
        raise bad("resolution", f"must be 0 (native) or a positive multiple of 8, got {cfg.resolution}")
    if cfg.timing_repeats < 1:
        raise bad("timing_repeats", f"must be at least 1, got {cfg.timing_repeats}")
    parse_seeds(cfg.seeds)
    try:
        scheduler_knob.resolve(cfg.scheduler)
    except ConfigError as e:
        raise bad("scheduler", str(e)) from None
    check_model_source(cfg.model, f"{where}.model")
    from workbench.knobs import prune as prune_knob
    prune_knob.check(cfg, where)
    from workbench.knobs import backend as backend_knob, quant as quant_knob
    backend_knob.check(cfg, where)
    quant_knob.check(cfg, where)
    from workbench.prompts import prompt_path
    prompt_path(cfg.prompt_set, f"{where}.prompt_set")
    if cfg.fid_reference not in ("auto",) and not Path(cfg.fid_reference).is_dir():
        raise bad("fid_reference", f"folder {cfg.fid_reference!r} does not exist; use 'auto' or a folder of images")
    if cfg.clip_model != "reference" and not Path(cfg.clip_model).is_dir():
        raise bad("clip_model", f"folder {cfg.clip_model!r} does not exist; use 'reference' or a local "
                                "transformers CLIP folder")
    if cfg.device.startswith("cuda") and os.environ.get("WORKBENCH_SKIP_DEVICE_CHECK") != "1":
        import torch
        if not torch.cuda.is_available():
            raise bad("device", f"{cfg.device!r} asked for but no CUDA device is visible; use 'auto' or 'cpu'")
    return cfg
