"""Precision knob: cast every pipeline component to fp32, fp16 or bf16 and place it on the trial's device (diffusers'
`pipe.to(device, dtype)`).

Applied after the compression knobs built their models from the fp32 weights, before the runtime knobs (memory
format, fused projections, attention kernels, torchao, compile), which act on the placed modules."""
from __future__ import annotations

from workbench.errors import ConfigError
from workbench.knobs.spec import Field

PRECISIONS = ("fp32", "fp16", "bf16")
FIELDS = (Field("precision", "fp32", "fp32 | fp16 | bf16 (weights and activations of every component)",
                choices=PRECISIONS),)


def dtype(precision: str):
    """The torch dtype of a precision name."""
    import torch  # heavy

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def check_device(cfg, device) -> None:
    """Refuse precisions the device cannot run, before any work: fp16 needs CUDA; bf16 needs CUDA with bf16 or a CPU."""
    import torch  # heavy

    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision: fp16 needs a CUDA device (CPU half-precision kernels are missing or "
                          "emulated); use fp32 or bf16 on CPU")
    if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision: this GPU has no bf16 support; use fp16 or fp32")


def apply(pipe, cfg, device) -> None:
    """Cast the whole pipeline to the configured dtype (pipelines load in fp32) and move it to the device."""
    if cfg.precision == "fp32":
        pipe.to(device)
    else:
        pipe.to(device, dtype(cfg.precision))
