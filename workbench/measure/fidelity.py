"""Fidelity to the baseline: PSNR and SSIM (Wang et al., 2004) of each image against the baseline configuration's
image for the same seed and prompt, through torchmetrics."""
from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def per_image(images: torch.Tensor, baseline: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR (dB, capped at 100 for identical images) and SSIM of uint8 images against same-seed ones."""
    if images.shape != baseline.shape:
        raise ValueError(f"baseline images have shape {tuple(baseline.shape)}, these {tuple(images.shape)}; "
                         "fidelity needs the same seeds, prompts and resolution")
    x, y = images.float() / 255, baseline.float() / 255
    psnr = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    return {"psnr": psnr.clamp(max=100).double(), "ssim": ssim.double()}


def fidelity(images: torch.Tensor, baseline: torch.Tensor) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM of uint8 images against same-seed baseline images."""
    return {name: float(v.mean()) for name, v in per_image(images, baseline).items()}
