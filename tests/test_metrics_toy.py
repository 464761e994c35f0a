"""Toy sample metrics checked against closed forms: Gaussian MMD², the sliced W₂ of a shift, and
mixture weights/off-mode mass of exact samples."""

import math

import pytest
import torch

from scorebench.data import load_dataset
from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.errors import ScorebenchError
from scorebench.metrics.toy import (
    ModeWeights,
    mmd_rbf,
    mode_coverage,
    mode_weight_error,
    mode_weights,
    sliced_wasserstein,
    toy_sample_metrics,
)


def gaussian_mmd2(shift: float, bandwidths, dim: int = 2, std: float = 1.0) -> float:
    """Population MMD² between N(0, s²I) and N(m, s²I) for k = Σ_h exp(−‖a−b‖²/2h²).

    With u = x − x' ~ N(μ, 2s²I):
    E exp(−‖u‖²/2h²) = (h²/(h² + 2s²))^{D/2} exp(−‖μ‖²/(2(h² + 2s²))),
    so MMD² = Σ_h 2 (h²/(h² + 2s²))^{D/2} (1 − exp(−m²/(2(h² + 2s²)))).
    """
    total = 0.0
    for h in bandwidths:
        v = h * h + 2 * std * std
        total += 2 * (h * h / v) ** (dim / 2) * (1 - math.exp(-shift * shift / (2 * v)))
    return total


# --------------------------------------------------------------------------------------------- MMD


def test_mmd_matches_gaussian_closed_form(gen):
    bw = (0.5, 1.0, 2.0)
    x = torch.randn(3000, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(3000, 2, generator=gen, dtype=torch.float64) + torch.tensor([1.0, 0.0], dtype=torch.float64)
    expected = gaussian_mmd2(1.0, bw)  # ≈ 0.253; the estimate's sd at n = 3000 is ≈ 5 % (measured over seeds)
    assert mmd_rbf(x, y, bw, scale=1.0) == pytest.approx(expected, rel=0.12)


def test_mmd_same_distribution_is_near_zero_and_far_below_a_shift(gen):
    x = torch.randn(2000, 2, generator=gen)
    y = torch.randn(2000, 2, generator=gen)
    same = mmd_rbf(x, y)
    shifted = mmd_rbf(x + torch.tensor([1.0, 0.0]), y)
    assert abs(same) < 5e-3  # unbiased: ≈ 0, may be slightly negative
    assert shifted > 30 * abs(same) and shifted > 0.05


def test_mmd_grows_monotonically_with_shift(gen):
    x = torch.randn(800, 2, generator=gen)
    y = torch.randn(800, 2, generator=gen)
    values = [mmd_rbf(x + torch.tensor([t, 0.0]), y) for t in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_mmd_chunking_and_symmetry_do_not_change_the_value(gen):
    """The blocked, upper-triangle sums equal the plain O(n²) definition of the unbiased estimator."""
    x = torch.randn(300, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(250, 2, generator=gen, dtype=torch.float64) * 1.5
    bw = (0.3, 1.0)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bw)

    kxx, kyy = k(x, x), k(y, y)
    n, m = len(x), len(y)
    brute = (kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * k(x, y).mean()
    assert mmd_rbf(x, y, bw, scale=1.0, chunk_size=37) == pytest.approx(float(brute), abs=1e-12)


def test_mmd_is_nan_for_nonfinite_samples_and_refuses_tiny_inputs(gen):
    x = torch.randn(10, 2, generator=gen)
    x[3, 0] = math.inf
    assert math.isnan(mmd_rbf(x, torch.randn(10, 2, generator=gen)))
    with pytest.raises(ScorebenchError, match="at least 2"):
        mmd_rbf(x[:1], x)


# ---------------------------------------------------------------------------- sliced Wasserstein


def test_sliced_wasserstein_1d_is_the_shift(gen):
    x = torch.randn(4000, 1, generator=gen, dtype=torch.float64)
    assert sliced_wasserstein(x, x + 1.5, 8, generator=gen) == pytest.approx(1.5, abs=1e-9)
    y = torch.randn(5000, 1, generator=gen, dtype=torch.float64) + 1.5  # independent, unequal size
    assert sliced_wasserstein(x[:3000], y, 8, generator=gen) == pytest.approx(1.5, abs=0.06)


def test_sliced_wasserstein_2d_shift_is_norm_squared_over_two(gen):
    """SW₂² of a shift m in 2-D = E_θ (θᵀm)² = ‖m‖²/2."""
    m = torch.tensor([2.0, 1.0], dtype=torch.float64)  # ‖m‖² = 5
    x = torch.randn(1000, 2, generator=gen, dtype=torch.float64)
    # pure shift: only the directions are random (sd of the mean of cos² over 2000 of them: 1.6 %)
    assert sliced_wasserstein(x, x + m, 2000, generator=gen, squared=True) == pytest.approx(2.5, rel=0.06)
    x = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    y = torch.randn(3000, 2, generator=gen, dtype=torch.float64) + m  # independent, unequal sizes
    assert sliced_wasserstein(x, y, 1000, generator=gen, squared=True) == pytest.approx(2.5, rel=0.08)


def test_sliced_wasserstein_unequal_sizes_of_one_distribution(gen):
    """A sample and the same sample twice are one empirical distribution: quantile matching gives ≈ 0."""
    x = torch.randn(2000, 2, generator=gen)
    assert sliced_wasserstein(x, x[torch.randperm(2000, generator=gen)], 64, generator=gen) == 0.0
    assert sliced_wasserstein(x, torch.cat([x, x]), 64, generator=gen) < 0.02


def test_sliced_wasserstein_is_deterministic_given_the_generator():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    y = x * 2
    a = sliced_wasserstein(x, y, 32, generator=torch.Generator().manual_seed(5))
    b = sliced_wasserstein(x, y, 32, generator=torch.Generator().manual_seed(5))
    c = sliced_wasserstein(x, y, 32, generator=torch.Generator().manual_seed(6))
    assert a == b and a != c


# ------------------------------------------------------------------------------------- modes


def test_mode_weights_of_exact_gmm_2mode_samples(gen):
    mix = load_dataset("gmm_2mode").distribution
    x = mix.sample(20000, generator=gen)
    est = mode_weights(x, mix)
    assert est.weights.tolist() == pytest.approx([0.2, 0.8], abs=0.02)
    assert est.off_mode == pytest.approx(0.0, abs=1e-12)
    assert mode_weight_error(est, mix.weights) < 0.02
    # within 3 stds in 2-D: P(r > 3s) = exp(−9/2) for a Rayleigh radius
    est3 = mode_weights(x, mix, max_distance=3.0)
    assert est3.off_mode == pytest.approx(math.exp(-4.5), abs=0.003)
    assert float(est3.weights.sum()) + est3.off_mode == pytest.approx(1.0)


def test_mode_weight_error_is_total_variation(gen):
    mix = load_dataset("gmm_2mode").distribution
    one_mode = torch.randn(5000, 2, generator=gen, dtype=torch.float64) + 5.0  # only the 0.8 mode
    assert mode_weight_error(mode_weights(one_mode, mix), mix.weights) == pytest.approx(0.2, abs=1e-12)
    # off-mode mass is its own category: ½(0.2 + |(1−off) − 0.8| + off) = 0.2 still
    assert mode_weight_error(mode_weights(one_mode, mix, 3.0), mix.weights) == pytest.approx(0.2, abs=1e-12)
    far = torch.full((10, 2), 100.0)
    assert mode_weight_error(mode_weights(far, mix, 3.0), mix.weights) == pytest.approx(1.0)


def test_mode_coverage_counts_dropped_modes(gen):
    mix = load_dataset("gmm_grid25").distribution
    kept = torch.arange(20)  # drop components 20..24
    k = kept[torch.randint(20, (10000,), generator=gen)]
    x = mix.means[k] + 0.2 * torch.randn(10000, 2, generator=gen, dtype=torch.float64)
    count, frac = mode_coverage(mode_weights(x, mix, 3.0), mix.weights)
    assert (count, frac) == (20, 0.8)
    # the threshold is relative to the true weight: 0.019 < 0.1 × 0.2 is not covered, 0.021 is
    w = torch.tensor([0.2, 0.8], dtype=torch.float64)
    assert mode_coverage(ModeWeights(torch.tensor([0.019, 0.981], dtype=torch.float64), 0.0), w) == (1, 0.5)
    assert mode_coverage(ModeWeights(torch.tensor([0.021, 0.979], dtype=torch.float64), 0.0), w) == (2, 1.0)


def test_mode_weights_counts_nonfinite_as_off_mode_and_checks_inputs():
    mix = load_dataset("gmm_2mode").distribution
    x = torch.tensor([[5.0, 5.0], [math.nan, 0.0], [-5.0, -5.0], [math.inf, 1.0]])
    est = mode_weights(x, mix)
    assert est.weights.tolist() == [0.25, 0.25] and est.off_mode == pytest.approx(0.5)
    with pytest.raises(ScorebenchError, match="max_distance"):
        mode_weights(x, IsotropicGaussianMixture(torch.zeros(2, 2), 0.0), 3.0)
    with pytest.raises(ScorebenchError, match="mode_weights"):
        mode_weights(torch.zeros(4, 3), mix)


# ------------------------------------------------------------------------------ tidy rows


def test_toy_sample_metrics_rows(gen):
    ds = load_dataset("gmm_2mode", n_train=500, n_test=1000)
    good = ds.distribution.sample(1000, generator=gen).float()
    rows = {r["metric"]: r["value"] for r in toy_sample_metrics(good, ds, torch.Generator().manual_seed(0))}
    expected = {
        "nonfinite_fraction",
        "mmd_rbf",
        "sliced_wasserstein",
        "mode_weight_error",
        "mode_off_fraction",
        "mode_coverage",
        "mode_coverage_frac",
        "mode_weight_0",
        "mode_weight_1",
    }
    assert set(rows) == expected
    assert rows["mode_coverage"] == 2 and rows["mode_weight_error"] < 0.05 and rows["nonfinite_fraction"] == 0
    collapsed = ds.distribution.means[1].expand(1000, 2).float() + 0.1 * torch.randn(1000, 2, generator=gen)
    bad = {r["metric"]: r["value"] for r in toy_sample_metrics(collapsed, ds, torch.Generator().manual_seed(0))}
    assert bad["mmd_rbf"] > 10 * abs(rows["mmd_rbf"]) and bad["mode_coverage"] == 1

    moons = load_dataset("moons", n_train=200, n_test=300, n_points=200)
    x = moons.test.clone()
    x[:30] = math.nan
    mrows = {r["metric"]: r["value"] for r in toy_sample_metrics(x, moons, torch.Generator().manual_seed(0))}
    assert set(mrows) == {"nonfinite_fraction", "mmd_rbf", "sliced_wasserstein"}  # no modes for a point cloud
    assert mrows["nonfinite_fraction"] == pytest.approx(0.1) and math.isnan(mrows["mmd_rbf"])


def test_toy_sample_metrics_is_deterministic_and_checks_shape(gen):
    ds = load_dataset("gmm_ring8", n_train=200, n_test=500)
    x = ds.distribution.sample(600, generator=gen).float()
    a = toy_sample_metrics(x, ds, torch.Generator().manual_seed(3))
    b = toy_sample_metrics(x, ds, torch.Generator().manual_seed(3))
    assert a == b
    with pytest.raises(ScorebenchError, match="shape"):
        toy_sample_metrics(torch.zeros(10, 3), ds, gen)
