"""Fidelity to the baseline: PSNR and SSIM (Wang et al., 2004) of each image against the baseline configuration's
image for the same seed and prompt, through torchmetrics."""
from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def fidelity(images: torch.Tensor, baseline: torch.Tensor) -> dict[str, float]:
    """Mean per-image PSNR (dB) and SSIM of uint8 images against same-seed baseline images."""
    if images.shape != baseline.shape:
        raise ValueError(f"baseline images have shape {tuple(baseline.shape)}, these {tuple(images.shape)}; "
                         "fidelity needs the same seeds, prompts and resolution")
    x, y = images.float() / 255, baseline.float() / 255
    psnr = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(x, y, data_range=1.0, reduction="none")
    return {"psnr": float(psnr.clamp(max=100).mean()), "ssim": float(ssim.mean())}
