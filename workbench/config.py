"""A trial's configuration: one flat, frozen, validated record of every knob (nanoGPT-style typed defaults).

    cfg = TrialConfig.from_dict({"scheduler": "unipc", "steps": 10})    # one ConfigError line for a bad value

`TrialConfig` is assembled from the knobs' declared fields (`workbench.knobs`, in registry order) and the fields
below that say how a trial is measured, so a new knob module adds its fields here without an edit. Each field's
default fixes its type; its help, choices and bounds are field metadata (`TrialConfig.spec(name)`), enforced by
`validate` and shown by the explorer's widgets and the trial notebook's parameters cell.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from workbench import knobs
from workbench.errors import ConfigError, did_you_mean
from workbench.knobs.spec import Field
from workbench.measure.fid_weights import has_reference_set, inception_weights_path
from workbench.prompts import prompt_path

DEVICES = ("auto", "cpu", "cuda")

# How a trial is measured: the same for a setting and the baseline it is compared with.
MEASUREMENT = (
    Field("seeds", "0-15", "EDM-style seed list like 0-3,8 with one image and one generator per seed", call_time=True),
    Field("prompt_set", "world-v1", "file under workbench/assets/prompts (or a path), image i uses prompt i mod P"),
    Field("batch_size", 8, "images per pipeline call, never changes the images", low=1, call_time=True),
    Field("resolution", 0, "square output size in pixels, 0 for the native size of the model", low=0, step=8,
          call_time=True),
    Field("device", "auto", "auto | cpu | cuda (or cuda:N)", choices=DEVICES, open=True),
    Field("timing_repeats", 3, "at least this many timed batches after warm-up (extra batches if needed)", low=1,
          call_time=True),
    Field("quality", True, "compute FID, CLIP score, alignment and fidelity (False for cost only)", call_time=True),
    Field("fid_reference", "auto", "auto (world test split for the reference model) or a folder of images",
          call_time=True),
    Field("clip_model", "reference", "CLIP for CLIP score, reference or a transformers CLIP folder", call_time=True),
    Field("per_image", False, "also keep every image's quality evidence (Inception and CLIP features, CLIP score, "
          "alignment hits) in per_image.npz beside the images, for paired comparisons (workbench confirm)",
          call_time=True),
)
FIELDS: tuple[Field, ...] = knobs.fields() + tuple(Field(**{**f.__dict__, "source": __name__}) for f in MEASUREMENT)


class _Config:
    """The methods of TrialConfig (its fields come from FIELDS)."""

    @classmethod
    def from_dict(cls, values: dict, where: str = "config"):
        """Build from a flat dict, rejecting unknown keys and values of the wrong type (one line each)."""
        known = {f.name: f for f in FIELDS}
        for key in values:
            if key not in known:
                raise ConfigError(f"{where}: unknown parameter {key!r}" + did_you_mean(key, known))
        typed = {}
        for key, value in values.items():
            want = known[key].type
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if want is str and isinstance(value, (int, float)) and key == "seeds":
                value = str(value)
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ConfigError(f"{where}.{key}: expected {want.__name__}, got {value!r} ({type(value).__name__})")
            typed[key] = value
        return validate(cls(**typed), where)

    def replace(self, **changes):
        return type(self).from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def seed_list(self) -> list[int]:
        return parse_seeds(self.seeds)

    @staticmethod
    def spec(name: str) -> Field:
        """A field's declaration: default, help, choices, bounds, call-time, declaring module."""
        return SPECS[name]


TrialConfig = dataclasses.make_dataclass(
    "TrialConfig", [(f.name, f.type, dataclasses.field(default=f.default, metadata={"spec": f})) for f in FIELDS],
    bases=(_Config,), frozen=True)
TrialConfig.__module__ = __name__  # pickles by name, as a class written out here would
TrialConfig.__doc__ = ("Every knob of one trial, then how it is measured. Defaults are the bundled reference "
                       "model's recommended setting. " + "; ".join(f"{f.name}={f.default!r}: {f.help}" for f in FIELDS))
SPECS: dict[str, Field] = {f.name: f for f in FIELDS}


def rebuild_fields() -> tuple[str, ...]:
    """Fields whose change needs a freshly built pipeline: every field not declared call-time."""
    return tuple(f.name for f in FIELDS if not f.call_time)


def build_key(cfg) -> tuple:
    """The part of a configuration that determines the built pipeline (model, precision, prune_*, quant, ...)."""
    values = cfg.to_dict()
    return tuple((name, values[name]) for name in rebuild_fields())


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


def check_field(spec: Field, value, where: str = "config") -> None:
    """A value against its field's declared choices, bounds and step: one line naming the field and what is valid."""
    name = f"{where}.{spec.name}"
    if spec.choices and not spec.open and value not in spec.choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, spec.choices))}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    low, high = spec.low, spec.high
    if (low is not None and value < low) or (high is not None and value > high) or (spec.step and value % spec.step):
        if low is not None and high is not None:
            valid = f"{low} to {high}"
        elif low == 1 and isinstance(spec.default, int):
            valid = "a positive whole number"
        elif low is not None:
            valid = f">= {low}"
        else:
            valid = f"<= {high}"
        if spec.step:
            valid += f" and a multiple of {spec.step}"
        raise ConfigError(f"{name}: must be {valid} ({spec.help}), got {value!r}")


def validate(cfg, where: str = "config"):
    """Check every field; raise one ConfigError naming the first bad field and how to fix it."""
    for spec in FIELDS:
        check_field(spec, getattr(cfg, spec.name), where)
    if cfg.device not in DEVICES and not re.fullmatch(r"cuda:\d+", cfg.device):
        raise ConfigError(f"{where}.device: {cfg.device!r} is not one of {', '.join(DEVICES)} or cuda:N")
    try:
        parse_seeds(cfg.seeds)
    except ConfigError as e:
        raise ConfigError(f"{where}.{e}") from None
    prompt_path(cfg.prompt_set, f"{where}.prompt_set")
    if cfg.fid_reference != "auto" and not Path(cfg.fid_reference).is_dir():
        raise ConfigError(f"{where}.fid_reference: folder {cfg.fid_reference!r} does not exist; use 'auto' or a "
                          "folder of images")
    if cfg.clip_model != "reference" and not Path(cfg.clip_model).is_dir():
        raise ConfigError(f"{where}.clip_model: folder {cfg.clip_model!r} does not exist; use 'reference' or a local "
                          "transformers CLIP folder")
    knobs.check(cfg, where)
    if cfg.quality and has_reference_set(cfg):  # FID is computed: its weights must be here before any image is made
        try:
            inception_weights_path()
        except ConfigError as e:
            raise ConfigError(f"{where}.quality: {e}") from None
    if cfg.device.startswith("cuda") and os.environ.get("WORKBENCH_SKIP_DEVICE_CHECK") != "1":
        import torch  # heavy: only asked when a CUDA device is named

        if not torch.cuda.is_available():
            raise ConfigError(f"{where}.device: {cfg.device!r} asked for but no CUDA device is visible; use 'auto' "
                              "or 'cpu'")
    return cfg
