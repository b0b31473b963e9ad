"""KID, CMMD and FID against independent numpy/scipy computations on the same features; the spreads' formulas."""
import numpy as np
import pytest
import scipy.linalg
import torch

from workbench.measure import cmmd, fid, kid
from workbench.measure.spread import bootstrap_interval, mean_se, wilson


def _features(seed, n, d, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) + shift).abs()


def _mmd_unbiased(kxx, kxy, kyy):
    m = len(kxx)
    return ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / m**2


def _numpy_kid(x, y):
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731 - the paper's cubic kernel
    return _mmd_unbiased(k(x, x), k(x, y), k(y, y))


def _numpy_cmmd(x, y, sigma=10.0, scale=1000.0):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)

    def k(a, b):
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-sq / (2 * sigma**2))
    return scale * _mmd_unbiased(k(x, x), k(x, y), k(y, y))


def test_kid_on_the_full_sets_matches_numpy_to_1e_6():
    fake, real = _features(0, 40, 2048, 0.1), _features(1, 40, 2048)
    mean, sd = kid.kid(fake, real, subsets=1, size=40)
    expected = _numpy_kid(real.numpy(), fake.numpy())
    assert sd == 0.0 and abs(mean - expected) <= 1e-6 * abs(expected)


def test_kid_over_subsets_matches_numpy_on_the_same_subsets():
    fake, real = _features(2, 30, 2048, 0.2), _features(3, 30, 2048)
    mean, sd = kid.kid(fake, real, subsets=7, size=12, seed=5)
    torch.manual_seed(5)  # torchmetrics draws a real then a fake permutation per subset
    values = []
    for _ in range(7):
        r, f = torch.randperm(30)[:12], torch.randperm(30)[:12]
        values.append(_numpy_kid(real.numpy()[r.numpy()], fake.numpy()[f.numpy()]))
    assert abs(mean - np.mean(values)) <= 1e-6 * abs(np.mean(values))
    assert abs(sd - np.std(values)) <= 1e-6 * np.std(values)


def test_cmmd_matches_numpy_on_the_same_subsets():
    fake, real = _features(4, 50, 64, 0.3), _features(5, 50, 64)
    full, sd = cmmd.cmmd(fake, real, subsets=1, size=50)
    expected = _numpy_cmmd(fake.numpy(), real.numpy())
    assert sd == 0.0 and abs(full - expected) <= 1e-6 * abs(expected)
    mean, sd = cmmd.cmmd(fake, real, subsets=5, size=20, seed=3)
    g = torch.Generator().manual_seed(3)
    values = []
    for _ in range(5):
        r = torch.randperm(50, generator=g)[:20].numpy()
        f = torch.randperm(50, generator=g)[:20].numpy()
        values.append(_numpy_cmmd(fake.numpy()[f], real.numpy()[r]))
    assert abs(mean - np.mean(values)) <= 1e-6 * abs(np.mean(values))
    assert abs(sd - np.std(values)) <= 1e-6 * np.std(values)


def test_cmmd_is_near_zero_for_one_distribution_and_grows_with_the_shift():
    a, b, c = (torch.randn(200, 32, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in (6, 7, 8))
    c[:, 0] += 2.0  # another direction: normalised embeddings differ
    same, other = cmmd.cmmd(a, b)[0], cmmd.cmmd(a, c)[0]
    assert abs(same) < 0.1 * other


def _scipy_fid(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_fid_from_features_matches_scipy_and_the_bootstrap_statistic_is_fid_of_the_resample():
    fake, real = _features(9, 60, 48, 0.2), _features(10, 80, 48)
    from torchmetrics.image.fid import _compute_fid

    point = fid.fid(fake, real)
    assert abs(point - _scipy_fid(fake.numpy(), real.numpy())) <= 1e-6 * point
    (mu_f, cov_f), (mu_r, cov_r) = fid._moments(fake), fid._moments(real)
    assert abs(point - float(_compute_fid(mu_r, cov_r, mu_f, cov_f))) <= 1e-6 * point
    many = _features(12, 100, 48, 0.2)  # more images than feature dimensions: the d x d path
    assert abs(fid.fid(many, real) - _scipy_fid(many.numpy(), real.numpy())) <= 1e-6 * fid.fid(many, real)
    # one bootstrap draw is the FID of that resample (the nuclear-norm shortcut is exact)
    draws = fid.fid_bootstrap_draws(fake, real, resamples=2, seed=11)
    rng = np.random.default_rng(11)
    for draw in draws:
        direct = _scipy_fid(fake.numpy()[rng.integers(0, 60, 60)], real.numpy())
        assert abs(draw - direct) <= 1e-6 * direct
    # resamples hold duplicate images and score worse than the sample: the interval is shifted back onto it
    assert fid.fid_bootstrap_draws(fake, real, resamples=50).min() > point
    lo, hi = fid.fid_interval(fake, real, resamples=200)
    assert lo < point < hi


def test_wilson_interval_and_standard_error():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
    mean, se = mean_se([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    lo, hi = bootstrap_interval(lambda idx: float(np.arange(100)[idx].mean()), 100, 500)
    assert lo < 49.5 < hi
