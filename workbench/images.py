"""Images on disk and on screen: lossless PNGs named by seed, contact sheets, difference images.

    save_images(images, seeds, folder)        # uint8 [B, 3, H, W] -> folder/seed000003.png, ...
    sheet = contact_sheet(images, cols=8)     # one [rows*H, cols*W, 3] array, the trial's grid.png and the explorer's
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def image_name(seed: int) -> str:
    return f"seed{seed:06d}.png"


def save_images(images: torch.Tensor, seeds: list[int], folder: Path) -> None:
    """uint8 [B, 3, H, W] -> lossless PNGs named by seed."""
    for img, seed in zip(images, seeds):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(Path(folder) / image_name(seed))


def load_images(folder: Path, seeds: list[int]) -> torch.Tensor:
    """The PNGs of these seeds back as uint8 [B, 3, H, W] (bit-identical to what was generated)."""
    arrays = [np.asarray(Image.open(Path(folder) / image_name(s)).convert("RGB")) for s in seeds]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def contact_sheet(images: torch.Tensor, cols: int = 8) -> np.ndarray:
    """uint8 [N, 3, H, W] -> one [rows*H, cols*W, 3] array, row-major, a black pad after the last image."""
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    pad = torch.zeros(rows * cols - len(images), *images.shape[1:], dtype=torch.uint8)
    sheet = torch.cat([images, pad]).view(rows, cols, *images.shape[1:]).permute(0, 3, 1, 4, 2)
    return sheet.reshape(rows * images.shape[2], cols * images.shape[3], 3).numpy()


def difference(images: torch.Tensor, baseline: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """|image - baseline| per pixel, amplified by `gain` so small changes show (black: identical)."""
    diff = (images.short() - baseline.short()).abs().float() * gain
    return diff.clamp(0, 255).to(torch.uint8)


def png(array: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of an [H, W, 3] uint8 array, enlarged `scale` times with nearest neighbours (pixels stay sharp)."""
    img = Image.fromarray(array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class ImageGrid:
    """A contact sheet of the first 64 images, 8 to a row, filled batch by batch (a trial's grid.png)."""

    LIMIT = 64

    def __init__(self, path: Path):
        self.path, self.images = path, []

    def add(self, images: torch.Tensor) -> None:
        room = self.LIMIT - sum(len(i) for i in self.images)
        if room > 0:
            self.images.append(images[:room].clone())

    def save(self) -> None:
        Image.fromarray(contact_sheet(torch.cat(self.images), cols=8)).save(self.path)
