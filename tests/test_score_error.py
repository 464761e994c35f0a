"""Score error against exact scores: zero for the oracle, ‖c‖² for a shifted score, the Gaussian
E‖∇log p_σ‖² = D/(s² + σ²), density-ordered bins, the grid, and NCSN's low-density claim."""

import math
import tempfile

import pytest
import torch

from scorebench.data import load_dataset
from scorebench.data.base import Dataset
from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.errors import ScorebenchError
from scorebench.metrics.score_error import evaluation_grid, rank_bins, score_error, score_error_rows

METRICS = ("score_error", "score_error_rel", "score_error_norm", "true_score_norm2")


def pick(rows, **where):
    return [r for r in rows if all(r[k] == v for k, v in where.items())]


def value(rows, **where):
    (row,) = pick(rows, **where)
    return row["value"]


def oracle(distribution):
    return lambda x, sigma: distribution.score(x, sigma)


def tiny_image_dataset(gen) -> Dataset:
    """An 'image' dataset whose truth is the empirical training distribution (std 0, exact for σ > 0)."""
    train = torch.rand(40, 1, 4, 4, generator=gen)
    test = torch.rand(30, 1, 4, 4, generator=gen)
    return Dataset("tiny_images", "image", train, test, IsotropicGaussianMixture(train, 0.0), {})


def gaussian_dataset(dim: int, std: float, n_test: int, gen) -> Dataset:
    dist = IsotropicGaussianMixture(torch.zeros(1, dim), std)
    test = (std * torch.randn(n_test, dim, generator=gen)).float()
    return Dataset("gauss", "toy", test[:10], test, dist, {"family": "gaussian_mixture"})


# ----------------------------------------------------------------------------- exact answers


@pytest.mark.parametrize("name", ["gmm_2mode", "moons"])
def test_oracle_has_zero_error_everywhere(name, gen):
    ds = load_dataset(name, n_train=2000, n_test=500, n_points=300)
    rows = score_error_rows(
        oracle(ds.distribution), ds, [0.0, 0.1, 1.0, 5.0], generator=gen, n_points=400, grid_size=16
    )
    errors = pick(rows, metric="score_error")
    assert {r["region"] for r in errors} == {"all", "bin", "grid", "grid_bin"}
    assert len(errors) == 4 * (1 + 5 + 1 + 5)  # 4 σ × (all + 5 bins + grid + 5 grid bins)
    for r in errors:  # float32 rounding of the score only
        norm2 = value(rows, **{k: r[k] for k in ("sigma", "region", "bin")}, metric="true_score_norm2")
        assert r["value"] <= 1e-12 * max(norm2, 1.0), r


def test_oracle_on_images_and_sigma_zero_is_refused(gen):
    ds = tiny_image_dataset(gen)
    rows = score_error_rows(oracle(ds.distribution), ds, [0.05, 0.5], generator=gen, n_points=30, n_bins=3)
    assert all(r["bin_by"] == "nearest_distance" for r in rows)
    assert not pick(rows, region="grid")  # no grid for images
    for r in pick(rows, metric="score_error_rel"):
        assert r["value"] < 1e-10
    with pytest.raises(ScorebenchError, match="σ = 0"):
        score_error_rows(oracle(ds.distribution), ds, [0.5, 0.0], generator=gen, n_points=30)


@pytest.mark.parametrize("kind", ["toy", "image"])
def test_constant_offset_gives_error_norm_c_squared(kind, gen):
    if kind == "toy":
        ds = load_dataset("gmm_ring8", n_train=1000, n_test=300)
        c = torch.tensor([0.3, -1.2])
        sigmas = [0.0, 0.7]
    else:
        ds = tiny_image_dataset(gen)
        c = torch.linspace(-1.0, 1.0, 16).reshape(1, 4, 4)
        sigmas = [0.1, 1.0]
    shifted = lambda x, sigma: ds.distribution.score(x, sigma) + c  # noqa: E731
    rows = score_error_rows(shifted, ds, sigmas, generator=gen, n_points=200, n_bins=4, grid_size=8)
    expected = float((c.double() ** 2).sum())
    for r in pick(rows, metric="score_error"):
        assert r["value"] == pytest.approx(expected, rel=1e-5), r


def test_relative_error_on_a_gaussian_matches_d_over_s2_plus_sigma2(gen):
    """For p = N(0, s²I_D), x̃ ~ p_σ: E‖∇log p_σ(x̃)‖² = E‖x̃‖²/(s² + σ²)² = D/(s² + σ²)."""
    dim, std = 3, 0.5
    ds = gaussian_dataset(dim, std, 6000, gen)
    c = torch.tensor([0.5, 0.0, -0.5])  # ‖c‖² = 0.5
    shifted = lambda x, sigma: ds.distribution.score(x, sigma) + c  # noqa: E731
    for sigma in (0.0, 0.5, 2.0):
        rows = score_error_rows(shifted, ds, [sigma], generator=gen, n_points=6000)
        truth = dim / (std**2 + sigma**2)  # MC sd of the estimate: sqrt(2/D)/sqrt(n) ≈ 1 %
        assert value(rows, region="all", metric="true_score_norm2") == pytest.approx(truth, rel=0.04)
        assert value(rows, region="all", metric="score_error_rel") == pytest.approx(0.5 / truth, rel=0.04)
        rel = value(rows, region="all", metric="score_error_rel")
        ratio = value(rows, region="all", metric="score_error") / value(rows, region="all", metric="true_score_norm2")
        assert rel == pytest.approx(ratio, rel=1e-12)


def test_model_sees_model_sigma_and_rows_record_it(gen):
    ds = load_dataset("gmm_2mode", n_train=500, n_test=200)
    seen = []

    def spy(x, sigma):
        assert x.dtype == torch.float32 and sigma.dtype == torch.float32 and sigma.shape == (x.shape[0],)
        seen.append(sigma.unique().tolist())
        return torch.zeros_like(x)

    rows = score_error_rows(spy, ds, [2.0, 1.0], model_sigmas=[0.0, 0.0], generator=gen, n_points=100, grid_size=0)
    assert seen and all(s == [0.0] for s in seen)
    assert {(r["sigma"], r["sigma_index"], r["model_sigma"]) for r in rows} == {(2.0, 0, 0.0), (1.0, 1, 0.0)}
    # a zero model's error is the true score norm: relative error exactly 1
    assert all(r["value"] == pytest.approx(1.0) for r in pick(rows, metric="score_error_rel"))


def test_normalised_error_shares_one_denominator_across_bins(gen):
    """score_error_norm = bin mean error / mean ‖∇log p_σ‖² over ALL points at that σ: with equal-count
    bins the bins' values average to the whole set's, and a constant offset c gives ‖c‖²/E‖∇log p_σ‖²
    in every bin (while score_error_rel, divided by each bin's own norm, differs from bin to bin)."""
    ds = gaussian_dataset(2, 1.0, 4000, gen)
    c = torch.tensor([0.6, 0.0])
    shifted = lambda x, sigma: ds.distribution.score(x, sigma) + c  # noqa: E731
    rows = score_error_rows(shifted, ds, [0.5], generator=gen, n_points=4000, n_bins=4, grid_size=0)
    whole = value(rows, region="all", metric="true_score_norm2")
    norms = [r["value"] for r in pick(rows, region="bin", metric="score_error_norm")]
    assert norms == pytest.approx([0.36 / whole] * 4, rel=1e-5)
    rels = [r["value"] for r in pick(rows, region="bin", metric="score_error_rel")]
    assert max(rels) / min(rels) > 5  # bins' own denominators differ: the old, misleading view
    assert sum(norms) / 4 == pytest.approx(value(rows, region="all", metric="score_error_norm"), rel=1e-9)


def test_standard_error_is_the_bootstrap_of_the_mean(gen):
    """A model whose error is ‖ξ‖² with ξ ~ N(0, I_2) per point: the error's sd is 2 (χ²₂), so the
    standard error of its mean over n points is 2/√n; the bootstrap must find it (±20 %). The grid, a
    fixed quadrature, has no Monte-Carlo error (NaN)."""
    ds = load_dataset("gmm_2mode", n_train=500, n_test=3000)
    noise = torch.Generator().manual_seed(5)
    noisy = lambda x, sigma: ds.distribution.score(x, sigma) + torch.randn(x.shape, generator=noise)  # noqa: E731
    rows = score_error_rows(noisy, ds, [0.5], generator=gen, n_points=2000, n_bins=4, grid_size=8)
    (r,) = pick(rows, region="all", metric="score_error")
    assert r["se"] == pytest.approx(2 / math.sqrt(2000), rel=0.2)
    for b in pick(rows, region="bin", metric="score_error"):
        assert b["se"] == pytest.approx(2 / math.sqrt(b["n"]), rel=0.25)
    assert all(math.isnan(g["se"]) for g in rows if g["region"].startswith("grid"))
    exact = score_error_rows(oracle(ds.distribution), ds, [0.5], generator=gen, n_points=300, grid_size=0)
    assert all(r["se"] < 1e-9 for r in pick(exact, metric="score_error"))


def test_toy_regions_are_fixed_by_the_clean_density(gen):
    """Toys bin x̃ by log p_0(x̃): at σ = 2 on N(0, I_2), log p_σ never exceeds −log(2π·5) ≈ −3.45, but
    the clean density at the densest points does (up to −log 2π ≈ −1.84)."""
    ds = gaussian_dataset(2, 1.0, 2000, gen)
    rows = score_error_rows(oracle(ds.distribution), ds, [2.0], generator=gen, n_points=2000, grid_size=0)
    bins = sorted(pick(rows, region="bin", metric="score_error"), key=lambda r: r["bin"])
    assert all(r["bin_by"] == "log_density_0" for r in bins)
    assert -math.log(2 * math.pi * 5) < bins[-1]["bin_high"] <= -math.log(2 * math.pi) + 1e-9
    for lower, upper in zip(bins, bins[1:]):
        assert lower["bin_high"] <= upper["bin_low"]


def test_common_sigmas_query_the_nearest_trained_level():
    from scorebench.jobs.evaluate import score_error_sigmas

    ev = {"noiseless_sigmas": [0.0, 0.1], "common_sigmas": [0.0, 0.1, 0.5, 3.0]}
    own, common, model = score_error_sigmas([10.0, 1.0, 0.1], ev, images=False)
    assert own == [10.0, 1.0, 0.1] and common == [0.0, 0.1, 0.5, 3.0]
    # log-nearest: 0.5 is e^0.69 from 1 and e^1.61 from 0.1; 3 is e^1.10 from 1 and e^1.20 from 10
    assert model == [10.0, 1.0, 0.1, 0.1, 0.1, 1.0, 1.0]
    own, common, model = score_error_sigmas([0.0], ev, images=False)
    assert own == [0.0, 0.1] and model == [0.0] * 6
    own, common, model = score_error_sigmas([1.0, 0.1], ev, images=True)
    assert own == [1.0, 0.1] and common == [0.1, 0.5, 3.0] and model == [1.0, 0.1, 0.1, 1.0, 1.0]


# ---------------------------------------------------------------------------------- bins, grid


def test_bins_are_ordered_by_density(gen):
    """Bin 0 = lowest log p; on a Gaussian, ‖∇log p_σ‖² = −2(log p_σ + (D/2) log 2πv)/v with v = s² + σ²,
    so each bin's mean true score norm must lie inside the range its log-density bounds imply."""
    dim, std, sigma = 2, 1.0, 0.5
    ds = gaussian_dataset(dim, std, 3000, gen)
    rows = score_error_rows(oracle(ds.distribution), ds, [sigma], generator=gen, n_points=3000, grid_size=0,
                                bin_by="log_density")  # fmt: skip
    bins = sorted(pick(rows, region="bin", metric="true_score_norm2"), key=lambda r: r["bin"])
    assert [r["bin"] for r in bins] == [0, 1, 2, 3, 4] and all(r["n"] == 600 for r in bins)
    v = std**2 + sigma**2
    const = 0.5 * dim * math.log(2 * math.pi * v)
    for lower, upper in zip(bins, bins[1:]):
        assert lower["bin_high"] <= upper["bin_low"]  # log p rises with the bin index
        assert lower["value"] > upper["value"]  # so the score norm (distance from the mean) falls
    for r in bins:
        assert -2 * (r["bin_high"] + const) / v - 1e-9 <= r["value"] <= -2 * (r["bin_low"] + const) / v + 1e-9


def test_nearest_distance_bins_put_the_farthest_points_first(gen):
    ds = tiny_image_dataset(gen)
    rows = score_error_rows(oracle(ds.distribution), ds, [0.3], generator=gen, n_points=60, n_bins=3)
    bins = sorted(pick(rows, region="bin", metric="score_error"), key=lambda r: r["bin"])
    assert [r["n"] for r in bins] == [20, 20, 20]
    assert bins[0]["bin_low"] >= bins[1]["bin_high"] and bins[1]["bin_low"] >= bins[2]["bin_high"]


def test_rank_bins_are_equal_count_quantiles():
    values = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 9.0])
    assert rank_bins(values, 3).tolist() == [2, 0, 1, 0, 1, 0, 2]  # ranks 5,1,3,2,4,0,6 → ⌊3·rank/7⌋
    assert rank_bins(values, 3, descending=True).tolist() == [0, 2, 1, 1, 0, 2, 0]


def test_grid_covers_the_bounding_box_and_its_bins(gen):
    ds = load_dataset("gmm_2mode", n_train=2000, n_test=300)
    grid = evaluation_grid(ds, grid_size=16, margin=0.1).double()
    lo, hi = ds.train.double().min(0).values, ds.train.double().max(0).values
    pad = 0.1 * (hi - lo)
    assert grid.shape == (256, 2)
    assert torch.allclose(grid.min(0).values, lo - pad, atol=1e-5) and torch.allclose(
        grid.max(0).values, hi + pad, atol=1e-5
    )
    for axis in (0, 1):
        ticks = grid[:, axis].unique()
        assert len(ticks) == 16 and torch.allclose(ticks.diff(), ticks.diff()[0].expand(15), atol=1e-5)
    rows = score_error_rows(oracle(ds.distribution), ds, [0.0], generator=gen, n_points=100, grid_size=16)
    assert value(rows, region="grid", metric="score_error") >= 0 and pick(rows, region="grid")[0]["n"] == 256
    gbins = sorted(pick(rows, region="grid_bin", metric="score_error"), key=lambda r: r["bin"])
    assert sum(r["n"] for r in gbins) == 256 and all(r["bin_by"] == "log_density_0" for r in gbins)
    assert all(a["bin_high"] <= b["bin_low"] for a, b in zip(gbins, gbins[1:]))
    # the grid reaches far lower densities than held-out points do: it covers the empty space
    assert gbins[0]["bin_low"] < pick(rows, region="all", metric="score_error")[0]["bin_low"] - 10


def test_same_seed_same_rows_and_refusals(gen):
    ds = load_dataset("gmm_2mode", n_train=500, n_test=300)
    wrong = lambda x, sigma: -x  # noqa: E731
    a = score_error_rows(wrong, ds, [0.0, 1.0], generator=torch.Generator().manual_seed(7), n_points=200, grid_size=8)
    b = score_error_rows(wrong, ds, [0.0, 1.0], generator=torch.Generator().manual_seed(7), n_points=200, grid_size=8)
    c = score_error_rows(wrong, ds, [0.0, 1.0], generator=torch.Generator().manual_seed(8), n_points=200, grid_size=8)
    assert a == b and a != c
    with pytest.raises(ScorebenchError, match="bin_by"):
        score_error_rows(wrong, ds, [0.0], generator=gen, bin_by="density")
    with pytest.raises(ScorebenchError, match="model_sigmas"):
        score_error_rows(wrong, ds, [0.0, 1.0], generator=gen, model_sigmas=[0.0])
    with pytest.raises(ScorebenchError, match="σ"):
        score_error_rows(wrong, ds, [-1.0], generator=gen)
    with pytest.raises(ScorebenchError, match="shape"):
        score_error(lambda x, s: x[:, :1], ds.distribution, 0.0, ds.test[:4])


# ------------------------------------------------------------------ must-show: NCSN's argument


@pytest.fixture
def one_thread():
    """A tiny MLP at batch 128 runs fastest on one thread (and much faster on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_noiseless_model_is_wrong_in_low_density_and_noise_levels_fix_it(one_thread):
    """Song & Ermon 2019, Sec. 3.2 and 4: a score model trained on clean data is accurate only where
    the data are; perturbing the data with a geometric σ schedule makes the score accurate in the
    low-density regions, at the noise levels that cover them.

    Both models: tiny σ-conditioned MLP, 1500 Adam steps on gmm_2mode.
    - noiseless: exact score matching (Hyvärinen 2005), schedule `none`, evaluated on clean data
      (σ = 0, model σ = 0): its error in the lowest-density bins is far above the highest.
    - multi-scale: DSM over geometric σ 10 → 0.1 (10 levels), evaluated at σ_1 = 10 (the level where
      annealed Langevin starts, which covers the empty space between the modes), model σ = σ_1.
    The comparison is the relative error E err / E‖∇log p_σ‖² (scale-free: the true score at σ_1 is
    ~100× smaller) in the lowest-density grid bin (low p_0, far from both modes).
    Not claimed: at the SMALLEST level (or on clean data) this multi-scale model is NOT more accurate
    with the same step budget; DSM at σ = 0.1 is noisy and sees 1/10 of the steps (measured relative
    error on clean data, model σ = σ_L: ≈ 0.5-0.6 overall and ≈ 0.85 in the lowest grid bin, vs
    ≈ 0.015 and ≈ 0.3 for the noiseless model).
    """
    from scorebench.losses import make_loss
    from scorebench.models import build_model
    from scorebench.noise import make_schedule
    from scorebench.train import TrainSettings, train

    ds = load_dataset("gmm_2mode")
    settings = TrainSettings(
        steps=1500,
        batch_size=128,
        lr=1e-3,
        ema_decay=0.0,
        device="cpu",
        amp="off",
        progress=False,
        log_every=500,
        checkpoint_every=1500,
        seed=0,
    )

    def fit(schedule, objective):
        model = build_model(
            "mlp", shape=(2,), sigmas=schedule.sigmas, preset="tiny", generator=torch.Generator().manual_seed(0)
        )
        with tempfile.TemporaryDirectory() as out:
            train(model, make_loss(objective), ds, schedule, settings, out)
        return model.eval()

    noiseless = fit(make_schedule("none"), "exact")
    schedule = make_schedule("geometric", sigma_max=10.0, sigma_min=0.1, levels=10)
    multi = fit(schedule, "dsm")

    common = dict(generator=torch.Generator().manual_seed(1), n_points=2000, grid_size=32)
    clean_rows = score_error_rows(noiseless, ds, [0.0], model_sigmas=[0.0], **common)
    # measured over training seeds 0-4: held-out bins ×1.5-27, grid bins ×220-330
    for region, factor in (("bin", 1.2), ("grid_bin", 20.0)):
        low = value(clean_rows, region=region, bin=0, metric="score_error")
        high = value(clean_rows, region=region, bin=4, metric="score_error")
        assert low > factor * high, (region, low, high)

    sigma_1 = float(schedule.sigmas[0])
    multi_rows = score_error_rows(multi, ds, [sigma_1], **common)
    multi_low = value(multi_rows, region="grid_bin", bin=0, metric="score_error_rel")
    noiseless_low = value(clean_rows, region="grid_bin", bin=0, metric="score_error_rel")
    assert multi_low < noiseless_low, (multi_low, noiseless_low)  # measured ratio 0.1-0.44 over seeds 0-4
