"""Memory-format knob: the UNet and the VAE decoder in channels-last (NHWC) layout, which cuDNN's convolutions and
Inductor's kernels prefer on NVIDIA tensor cores (PyTorch's channels-last tutorial; diffusers' speed-up guide)."""
from __future__ import annotations

from workbench.knobs.spec import Field

FIELDS = (Field("channels_last", False, "UNet and VAE decoder in channels-last (NHWC) memory format"),)


def apply(pipe, cfg, device) -> None:
    if not cfg.channels_last:
        return None
    import torch  # heavy

    for module in (pipe.unet, pipe.vae):
        module.to(memory_format=torch.channels_last)
    return None
