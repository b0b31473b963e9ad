"""Precision knob: cast every pipeline component to fp32, fp16 or bf16 (diffusers' `pipe.to(dtype=...)`)."""
from __future__ import annotations

import torch

from workbench.errors import ConfigError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FIELDS = {"precision": {"choices": tuple(DTYPES)}}  # workbench.fields; casts the modules: a rebuild


def check_supported(precision: str, device: torch.device) -> None:
    """Refuse precisions the device cannot run, before any work: fp16 needs CUDA; bf16 needs CUDA with bf16 or a CPU."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision: fp16 needs a CUDA device (CPU half-precision kernels are missing or "
                          "emulated); use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: this GPU has no bf16 support; use fp16 or fp32")


def apply(pipe, cfg):
    """Cast the whole pipeline to the configured dtype (pipelines load in fp32: nothing to do for fp32)."""
    return pipe if cfg.precision == "fp32" else pipe.to(dtype=DTYPES[cfg.precision])
