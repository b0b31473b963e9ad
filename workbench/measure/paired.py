"""Paired quality differences of two trials on the same seeds and prompts, with bootstrap intervals.

    deltas = compare(candidate, baseline, real_inception, real_clip)   # per_image.npz contents of each trial

Image i of both trials has the same seed and prompt, so the difference is resampled by image index: one draw picks
n indices with replacement and evaluates both trials on them (Efron & Tibshirani, 1993, ch. 6, the paired
bootstrap). Per-image metrics (CLIP score, alignment) pair directly; set metrics (FID, KID, CMMD) are recomputed on
the drawn index set of each trial against the fixed reference set. Shared prompts and seeds cancel out of the
difference, so its interval is far narrower than the two trials' own intervals side by side.
"""
from __future__ import annotations

import numpy as np
import torch

from workbench.measure import cmmd as cmmd_mod
from workbench.measure import fid as fid_mod
from workbench.measure.alignment import REPORTED
from workbench.measure.spread import bootstrap_indices, percentile_interval
from workbench.metrics import PAIRED
from workbench.world.render import ATTRIBUTES

RESAMPLES = 500  # draws per interval: a 95 % percentile interval from the 13th and 488th of 500
SET = ("fid", "kid", "cmmd")  # recomputed on each draw's index set; the other PAIRED metrics are per-image means
PER_IMAGE = tuple(m for m in PAIRED if m not in SET)


def per_image_values(evidence: dict, metric: str) -> np.ndarray | None:
    """One value per image of a per-image metric (None where the trial has no such evidence)."""
    if metric == "clip_score":
        return np.asarray(evidence["clip_score"], dtype=np.float64)
    if "align_hits" not in evidence:
        return None
    hits = np.asarray(evidence["align_hits"], dtype=np.float64)
    if metric == "align_mean":
        return hits[:, [ATTRIBUTES.index(a) for a in REPORTED]].mean(1)
    return hits[:, ATTRIBUTES.index(metric.removeprefix("align_"))]


def _mmd_draws(fake: torch.Tensor, real: torch.Tensor, kernel, indices: list[np.ndarray], scale: float = 1.0):
    """Unbiased MMD^2 of the whole set and of each index draw; a draw's duplicated images never pair with
    themselves (pairs of equal original index are left out, as the U-statistic leaves out i = j)."""
    k_ff, k_fr = kernel(fake, fake).double(), kernel(fake, real).double()
    k_rr = kernel(real, real).double()
    n, m = len(fake), len(real)
    rr = float((k_rr.sum() - k_rr.diagonal().sum()) / (m * (m - 1)))
    point = float((k_ff.sum() - k_ff.diagonal().sum()) / (n * (n - 1))) + rr - 2 * float(k_fr.mean())
    row_cross = k_fr.mean(1)
    draws = []
    for idx in indices:
        i = torch.as_tensor(idx)
        keep = i[:, None] != i[None, :]
        within = float(k_ff[i][:, i][keep].mean()) if keep.any() else float("nan")
        draws.append(within + rr - 2 * float(row_cross[i].mean()))
    return scale * point, scale * np.array(draws)


def _poly(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's cubic polynomial kernel (x.y / d + 1)^3 (Binkowski et al., 2018), as torchmetrics computes it."""
    return (x.double() @ y.double().T / x.shape[1] + 1) ** 3


def compare(candidate: dict, baseline: dict, real_inception: torch.Tensor, real_clip: torch.Tensor,
            resamples: int = RESAMPLES, seed: int = 0, level: float = 0.95) -> dict[str, dict]:
    """metric -> {candidate, baseline, delta, lo, hi}: delta = candidate - baseline on the full sets, [lo, hi] its
    paired bootstrap interval (percentile, shifted by the draws' bias as FID's own interval is).

    KID and CMMD here are the unbiased MMD^2 of the whole set (the row's values average random half-size
    subsets: the same quantity, estimated with more noise)."""
    seeds_c, seeds_b = np.asarray(candidate["seeds"]), np.asarray(baseline["seeds"])
    if not np.array_equal(seeds_c, seeds_b):
        raise ValueError("paired comparison needs the same seeds in the same order in both trials")
    n = len(seeds_c)
    indices = list(bootstrap_indices(n, resamples, seed))
    out: dict[str, dict] = {}

    def record(metric: str, c: float, b: float, draws: np.ndarray) -> None:
        draws = draws[np.isfinite(draws)]  # a draw of one distinct image has no pair for KID's or CMMD's U-statistic
        lo, hi = percentile_interval(draws, level, point=c - b)
        out[metric] = {"candidate": c, "baseline": b, "delta": c - b, "lo": lo, "hi": hi}

    real = real_inception.double()
    fake_c, fake_b = (torch.as_tensor(e["inception"]).double() for e in (candidate, baseline))
    draws = (fid_mod.fid_bootstrap_draws(fake_c, real, resamples, seed)
             - fid_mod.fid_bootstrap_draws(fake_b, real, resamples, seed))  # same (n, resamples, seed): paired
    record("fid", fid_mod.fid(fake_c, real), fid_mod.fid(fake_b, real), draws)
    (kc, kc_draws), (kb, kb_draws) = (_mmd_draws(f, real, _poly, indices) for f in (fake_c, fake_b))
    record("kid", kc, kb, kc_draws - kb_draws)
    clip_real = cmmd_mod.normalise(torch.as_tensor(real_clip))
    clip_c, clip_b = (cmmd_mod.normalise(torch.as_tensor(e["clip_embedding"])) for e in (candidate, baseline))
    (cc, cc_draws), (cb, cb_draws) = (_mmd_draws(f, clip_real, cmmd_mod.rbf_kernel, indices, cmmd_mod.SCALE)
                                      for f in (clip_c, clip_b))
    record("cmmd", cc, cb, cc_draws - cb_draws)
    for metric in PER_IMAGE:
        c, b = per_image_values(candidate, metric), per_image_values(baseline, metric)
        if c is None or b is None:
            continue
        diff = c - b
        record(metric, float(c.mean()), float(b.mean()), np.array([diff[idx].mean() for idx in indices]))
    return out
