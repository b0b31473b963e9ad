"""Spreads of quality numbers, in one place: Wilson intervals, standard errors, bootstrap percentile intervals.

Every quality metric of a row carries one of these (metrics.SPREADS says which), so a table can print
`value ± spread` and a figure can draw error bars.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (Wilson, 1927); (0, 1) when n is 0. `successes` may be
    fractional (a mean of several binary attributes times n)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_se(values) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n)); s.e. 0 for a single value."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        raise ValueError("mean_se of no values")
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0
    return float(x.mean()), se


def bootstrap_indices(n: int, resamples: int, seed: int = 0):
    """`resamples` draws of n indices with replacement (Efron, 1979); equal (n, resamples, seed) give equal draws,
    which is what pairs two samples of the same seeds and prompts (`workbench.measure.paired`)."""
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield rng.integers(0, n, n)


def bootstrap_draws(statistic: Callable[[np.ndarray], float], n: int, resamples: int, seed: int = 0) -> np.ndarray:
    """`statistic(indices)` over `resamples` bootstrap draws of n indices with replacement (Efron, 1979)."""
    return np.array([statistic(idx) for idx in bootstrap_indices(n, resamples, seed)])


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, resamples: int, seed: int = 0,
                       level: float = 0.95, point: float | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval; with `point`, shifted by the bootstrap's bias (mean of draws - point).

    The shift matters for biased statistics such as FID, whose resamples (with duplicate images) score worse
    than the sample itself: the plain percentile interval would then lie entirely above the reported value.
    """
    return percentile_interval(bootstrap_draws(statistic, n, resamples, seed), level, point)


def percentile_interval(draws: np.ndarray, level: float = 0.95, point: float | None = None) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    shift = 0.0 if point is None else point - float(np.mean(draws))
    return float(np.percentile(draws, tail)) + shift, float(np.percentile(draws, 100 - tail)) + shift


def median_interval(values, level: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of a median from order statistics (Conover, 1999, 3.2): [x_(k), x_(n-k+1)] with
    the largest k whose binomial(n, 1/2) tail P(X <= k-1) stays within (1 - level) / 2. Coverage is at least
    `level` whatever the distribution (a load spike in one timing round moves it by one rank at most); it needs
    n >= 6 values for 95 %."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n, alpha = len(x), (1 - level) / 2
    tail, k = 0.0, 0
    while True:  # tail = P(X <= k) for X ~ binomial(n, 1/2)
        tail += math.comb(n, k) / 2 ** n
        if tail > alpha:
            break
        k += 1
    if k == 0:
        raise ValueError(f"a {level:.0%} interval of a median needs more than {n} values")
    return float(x[k - 1]), float(x[n - k])


def median_rounds_needed(level: float = 0.95) -> int:
    """The fewest values for which `median_interval` exists at this level (6 for 95 %)."""
    n = 1
    while 2 / 2 ** n > 1 - level:
        n += 1
    return n
