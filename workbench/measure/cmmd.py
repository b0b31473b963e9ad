"""CMMD (Jayasumana et al., 2024, "Rethinking FID"): MMD^2 with a Gaussian RBF kernel on CLIP image embeddings.

As the paper and its code (google-research/cmmd): embeddings L2-normalised, kernel exp(-|x-y|^2 / (2 sigma^2))
with sigma = 10, the result scaled by 1000. Unlike that code (the biased V-statistic), we use the unbiased
estimator (torchmetrics' maximum_mean_discrepancy, the one KID uses), and report the mean and standard deviation
over random subsets exactly as KID does. The CLIP is the trial's: the bundled one for the reference model (the
paper uses CLIP ViT-L/14@336), `clip_model` for user models; the protocol records which.
"""
from __future__ import annotations

import torch
from workbench.measure.kid import subset_size

SIGMA = 10.0
SCALE = 1000.0


def rbf_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """Gaussian kernel matrix exp(-|x_i - y_j|^2 / (2 sigma^2))."""
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T
    return torch.exp(-sq.clamp(min=0) / (2 * sigma * sigma))


def cmmd_once(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Unbiased scaled MMD^2 between two sets of (already normalised) embeddings."""
    from torchmetrics.image.kid import maximum_mean_discrepancy

    return SCALE * maximum_mean_discrepancy(rbf_kernel(real, real), rbf_kernel(real, fake), rbf_kernel(fake, fake))


def normalise(embeddings: torch.Tensor) -> torch.Tensor:
    e = embeddings.double()
    return e / e.norm(dim=-1, keepdim=True)


def cmmd(fake: torch.Tensor, real: torch.Tensor, subsets: int = 100, size: int | None = None,
         seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of CMMD over random subsets, drawn as KID draws them (torch.randperm, seeded)."""
    x, y = normalise(fake.to(real.device)), normalise(real)
    size = size or subset_size(len(x), len(y))
    if size > min(len(x), len(y)):
        raise ValueError(f"CMMD subset size {size} exceeds the smaller set ({min(len(x), len(y))})")
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        r = y[torch.randperm(len(y), generator=generator)[:size]]
        f = x[torch.randperm(len(x), generator=generator)[:size]]
        values.append(cmmd_once(f, r))
    values = torch.stack(values)
    return float(values.mean()), float(values.std(unbiased=False))
