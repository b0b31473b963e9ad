"""KID, Kernel Inception Distance (Binkowski et al., 2018): the unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / d + 1)^3 on the same standard Inception features as FID, through torchmetrics'
KernelInceptionDistance with our feature module. Unbiased, so small N estimates it without FID's bias;
reported as the mean over random subsets with the standard deviation over those subsets.
"""
from __future__ import annotations

import warnings

import torch
from workbench.measure.fid import extractor


def subset_size(n_fake: int, n_real: int) -> int:
    """Half the smaller set (at least 2, at most 1000 as clean-fid): subsets then differ, so their spread means something."""
    return max(2, min(1000, min(n_fake, n_real) // 2))


SUBSETS = 100


def kid(fake: torch.Tensor, real: torch.Tensor, subsets: int = SUBSETS, size: int | None = None,
        seed: int = 0) -> tuple[float, float]:
    """(mean, standard deviation) of KID over `subsets` random subsets of `size` features of each set, in float64."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = size or subset_size(len(fake), len(real))
    with warnings.catch_warnings():  # its two notes do not apply: N is ours to bound, the states are set directly
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        warnings.filterwarnings("ignore", message=".*called before the ``update`` method.*")
        metric = KernelInceptionDistance(feature=extractor(torch.device("cpu")), subsets=subsets, subset_size=size,
                                         reset_real_features=False)
        metric.real_features.append(real.double())
        metric.fake_features.append(fake.to(real.device, torch.float64))
        with torch.random.fork_rng(devices=[]):  # torchmetrics draws subsets with the global generator
            torch.manual_seed(seed)
            mean, std = metric.compute()
    return float(mean), float(std)
