"""Samplers checked against math: exact scores of Gaussians and mixtures, closed-form moments.

For one Gaussian N(μ, s²I) every sampler is a linear recursion, x ← μ + r(x − μ) + c·z, so the
mean and variance after any number of steps are known exactly and the sample moments must match
them. For the two-mode mixture of Song & Ermon 2019 (Fig. 3), the heavy mode's share separates
plain Langevin (≈ the share of starting points, 0.5) from annealed Langevin and PC (≈ 0.8).
"""

import math

import pytest
import torch

from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.data.toys import gmm_2mode_mixture
from scorebench.errors import ScorebenchError
from scorebench.noise import geometric_sigmas
from scorebench.sampling import (
    SAMPLERS,
    annealed_langevin,
    annealed_step_sizes,
    get_sampler,
    initial_samples,
    langevin,
    pc,
)

N_MODE = 3000  # chains for the mode-weight tests: binomial std of a fraction ≈ 0.008


@pytest.fixture(autouse=True)
def one_thread():
    """The chains here are small tensors: one thread avoids OpenMP overhead that costs 10x on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def heavy_fraction(mixture, x):
    return float((mixture.nearest_component(x) == 1).double().mean())


def gaussian(mu, s):
    """N(μ, s²I) as a one-component mixture: exact score at every σ."""
    return IsotropicGaussianMixture(torch.as_tensor(mu, dtype=torch.float64)[None], s)


def assert_moments(x, mean, var, mean_tol_sd=5.0, var_rtol=0.05):
    """Per-coordinate sample mean within `mean_tol_sd` standard errors, pooled variance within `var_rtol`."""
    n = x.shape[0]
    x = x.double()
    se = math.sqrt(var / n)
    assert torch.all((x.mean(0) - torch.as_tensor(mean, dtype=torch.float64)).abs() < mean_tol_sd * se), x.mean(0)
    pooled_var = float(x.var(0).mean())
    assert abs(pooled_var / var - 1) < var_rtol, (pooled_var, var)


# ---------------------------------------------------------------------------------------------
# mode weights (Song & Ermon 2019, Fig. 3)


def test_plain_langevin_cannot_reweight_modes(gen):
    mix = gmm_2mode_mixture()
    x0 = initial_samples((2,), N_MODE, "uniform", low=-8.0, high=8.0, generator=gen)
    res = langevin(lambda x, s: mix.score(x, s), x0, [0.0], n_steps=1000, step_size=0.1, generator=gen)
    frac = heavy_fraction(mix, res.samples)
    # each chain stays in the mode on its side of the start box: about half, not the true 0.8
    assert abs(frac - 0.5) < 0.1 and frac < 0.65, frac
    # within its mode each chain has mixed: distance to the nearest mean ~ N(0, I) radius (E r² = 2)
    r2 = (res.samples.double() - mix.means[mix.nearest_component(res.samples)]).pow(2).sum(1)
    assert abs(float(r2.mean()) - 2.0) < 0.2


def test_annealed_langevin_recovers_mode_weights(gen):
    # Song & Ermon 2019, Fig. 3 settings: σ geometric 20 → 1, L = 10, T = 100, ε = 0.1
    mix = gmm_2mode_mixture()
    x0 = initial_samples((2,), N_MODE, "uniform", low=-8.0, high=8.0, generator=gen)
    sigmas = geometric_sigmas(20.0, 1.0, 10)
    res = annealed_langevin(lambda x, s: mix.score(x, s), x0, sigmas, n_steps=100, step_size=0.1, generator=gen)
    assert abs(heavy_fraction(mix, res.samples) - 0.8) < 0.05


def test_pc_recovers_mode_weights(gen):
    # VE prior N(0, σ_1² I) with σ_1 well above the data spread; one corrector step per level (Song et al. 2021)
    mix = gmm_2mode_mixture()
    x0 = initial_samples((2,), N_MODE, "gaussian", sigma=50.0, generator=gen)
    sigmas = geometric_sigmas(50.0, 0.5, 100)
    res = pc(lambda x, s: mix.score(x, s), x0, sigmas, n_steps=1, step_size=None, generator=gen)
    assert abs(heavy_fraction(mix, res.samples) - 0.8) < 0.05


# ---------------------------------------------------------------------------------------------
# exact moments on a Gaussian


MU = [2.0, -1.0, 0.5, 3.0]
S = 0.5


@pytest.mark.parametrize("convention", ["code", "algorithm1"])
@pytest.mark.parametrize("denoise", [False, True])
def test_annealed_langevin_matches_gaussian_recursion(gen, denoise, convention):
    """Mean and variance after annealed Langevin on N(μ, s²I), from the exact linear recursion.

    Per step at level i (v_i = s² + σ_i², α_i = ε σ_i²/σ_L²): m ← μ + r(m − μ), V ← r²V + q with
    code form r = 1 − α_i/v_i, q = 2α_i; Algorithm-1 form r = 1 − α_i/(2v_i), q = α_i; denoising
    maps x ↦ μ + c(x − μ), c = s²/v_L. T is short, so the answer is far from the stationary one and
    depends on every α_i.
    """
    dist = gaussian(MU, S)
    sigmas = geometric_sigmas(3.0, 0.1, 5)
    eps, T, n = (0.01 if convention == "algorithm1" else 0.005), 20, 4000  # the same move in both forms
    x0 = initial_samples((4,), n, "gaussian", sigma=2.0, generator=gen)
    res = annealed_langevin(
        lambda x, s: dist.score(x, s), x0, sigmas, n_steps=T, step_size=eps, generator=gen, denoise=denoise,
        step_convention=convention,
    )
    mu = torch.tensor(MU, dtype=torch.float64)
    m, V = torch.zeros(4, dtype=torch.float64), 4.0
    for sig in sigmas.tolist():
        alpha = eps * sig**2 / sigmas[-1].item() ** 2
        drift, q = (alpha, 2 * alpha) if convention == "code" else (alpha / 2, alpha)
        r = 1 - drift / (S**2 + sig**2)
        for _ in range(T):
            m, V = mu + r * (m - mu), r * r * V + q
    assert abs(V / (S**2 + sigmas[-1].item() ** 2) - 1) > 0.1  # not yet stationary: the test sees every step
    if denoise:
        c = S**2 / (S**2 + sigmas[-1].item() ** 2)
        m, V = mu + c * (m - mu), c * c * V
    assert_moments(res.samples, m, V)
    assert res.nfe == 5 * T + int(denoise)


def test_pc_predictor_only_matches_gaussian_recursion(gen):
    """n_steps=0 is the reverse-diffusion predictor alone: m ← μ + r(m − μ), V ← r²V + Δ_i, r = 1 − Δ_i/v_i."""
    dist = gaussian(MU, S)
    sigmas = geometric_sigmas(4.0, 0.2, 6)
    x0 = initial_samples((4,), 4000, "gaussian", sigma=4.0, generator=gen)
    res = pc(lambda x, s: dist.score(x, s), x0, sigmas, n_steps=0, step_size=None, generator=gen)
    mu = torch.tensor(MU, dtype=torch.float64)
    m, V = torch.zeros(4, dtype=torch.float64), 16.0
    s = sigmas.tolist()
    for hi, lo in zip(s[:-1], s[1:]):
        drop = hi**2 - lo**2
        r = 1 - drop / (S**2 + hi**2)
        m, V = mu + r * (m - mu), r * r * V + drop
    assert_moments(res.samples, m, V)
    assert res.nfe == len(s) - 1


def test_pc_corrector_keeps_gaussian_stationary(gen):
    """Corrector alone at one level, started from p_σ itself, must stay there (2-D, where it is hardest).

    With the batch-averaged SNR step ε ≈ 2 r² v the chain's stationary variance is v/(1 − ε/(2v)) ≈ v/(1 − r²).
    A per-sample ε ∝ ‖z‖²/‖s‖² would blow up in 2-D (it diverges: variance grows by >10x here).
    """
    snr, sigma = 0.16, 0.5
    dist = gaussian([1.0, -2.0], 1.0)
    v = 1.0 + sigma**2
    x0 = (dist.sample(4000, sigma=sigma, generator=gen)).float()
    res = pc(lambda x, s: dist.score(x, s), x0, [sigma], n_steps=300, step_size=None, generator=gen, snr=snr)
    assert_moments(res.samples, [1.0, -2.0], v / (1 - snr**2), var_rtol=0.06)
    assert res.nfe == 300


def test_denoise_is_tweedie_shrinkage(gen):
    """x ~ N(0, s² + σ²) denoised by x + σ² s(x, σ) is x·s²/(s²+σ²), variance s⁴/(s²+σ²)."""
    s, sigma = 0.7, 1.5
    dist = gaussian([0.0, 0.0], s)
    x0 = dist.sample(20000, sigma=sigma, generator=gen).float()
    res = annealed_langevin(lambda x, sg: dist.score(x, sg), x0, [sigma], n_steps=0, step_size=0.1, denoise=True)
    shrink = s**2 / (s**2 + sigma**2)
    assert torch.allclose(res.samples, x0 * shrink, rtol=1e-5, atol=1e-6)
    var = float(res.samples.double().var(0).mean())
    assert abs(var / (s**4 / (s**2 + sigma**2)) - 1) < 0.03
    assert res.nfe == 1


# ---------------------------------------------------------------------------------------------
# bookkeeping: calls, nfe, snapshots


class RecordingScore:
    """Gaussian score that records the σ of every call and checks the (B,) x-dtype contract."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype and sigma.device == x.device
        assert torch.all(sigma == sigma[0])
        self.calls.append(round(float(sigma[0]), 6))
        return -x / (1.0 + sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2)


@pytest.mark.parametrize("denoise", [False, True])
def test_score_calls_and_nfe(gen, denoise):
    sig = [4.0, 2.0, 1.0]
    T = 3
    expected = {
        "langevin": [1.0] * T,
        "annealed_langevin": [4.0] * T + [2.0] * T + [1.0] * T,
        "pc": [4.0] * (T + 1) + [2.0] * (T + 1) + [1.0] * T,  # T corrector + 1 predictor, none after the last
    }
    for name, calls in expected.items():
        rec = RecordingScore()
        x0 = torch.randn(5, 2, generator=gen)
        res = SAMPLERS[name](rec, x0, torch.tensor(sig), n_steps=T, step_size=0.1, generator=gen, denoise=denoise)
        calls = calls + [1.0] * int(denoise)
        assert rec.calls == calls, name
        assert res.nfe == len(calls), name
        assert res.snapshots == []


def test_annealed_step_sizes_follow_ncsn_rule():
    # α_i = ε σ_i²/σ_L²; a noiseless last level (σ_L = 0) falls back to α_i = ε
    assert torch.allclose(annealed_step_sizes([4.0, 2.0, 1.0], 0.1), torch.tensor([1.6, 0.4, 0.1], dtype=torch.float64))
    assert torch.allclose(annealed_step_sizes([2.0, 1.0, 0.0], 0.1), torch.full((3,), 0.1, dtype=torch.float64))


def test_snapshots_every_k_steps(gen):
    rec = RecordingScore()
    x0 = torch.randn(7, 2, generator=gen)
    res = annealed_langevin(rec, x0, [3.0, 2.0, 1.0], n_steps=4, step_size=0.1, generator=gen, snapshot_every=5)
    # the start, then after global steps 5 (level 1: steps 5..8) and 10 (level 2: steps 9..12)
    assert [(lvl, step) for lvl, step, _ in res.snapshots] == [(0, 0), (1, 5), (2, 10)]
    assert torch.equal(res.snapshots[0][2], x0)
    assert all(t.device.type == "cpu" and t.shape == x0.shape for _, _, t in res.snapshots)
    res2 = langevin(rec, x0, [1.0], n_steps=9, step_size=0.1, generator=gen, snapshot_every=3)
    assert [step for _, step, _ in res2.snapshots] == [0, 3, 6, 9]
    assert torch.equal(res2.snapshots[-1][2], res2.samples)  # snapshot is a copy of x at that step
    assert not torch.equal(res2.snapshots[-2][2], res2.samples)


# ---------------------------------------------------------------------------------------------
# the in-place loop against the update rules written out


def reference_chain(name, score, x, sigmas, T, eps, g, snr=0.16, clip=(-4.0, 4.0), convention="code"):
    """Each sampler's update rule in plain out-of-place torch, drawing z = randn(x.shape) from `g`
    after each score evaluation (the documented stream order), then the denoising step. Code form
    x + e·s + √(2e)·z; Algorithm-1 form x + (e/2)·s + √e·z."""
    s = [float(v) for v in sigmas]
    x = x.clone()
    half = convention == "algorithm1"

    def step(x, sigma, drift, diffusion, z=None):
        grad = score(x, torch.full((x.shape[0],), sigma))
        z = torch.randn(x.shape, generator=g) if z is None else z
        return (x + drift * grad + diffusion * z).clamp(*clip)

    if name == "langevin":
        for _ in range(T):
            x = step(x, s[-1], 0.5 * eps, eps**0.5) if half else step(x, s[-1], eps, (2 * eps) ** 0.5)
    elif name == "annealed_langevin":
        for sig in s:
            alpha = eps * sig**2 / s[-1] ** 2
            for _ in range(T):
                x = step(x, sig, 0.5 * alpha, alpha**0.5) if half else step(x, sig, alpha, (2 * alpha) ** 0.5)
    else:
        for i, sig in enumerate(s):
            for _ in range(T):
                grad = score(x, torch.full((x.shape[0],), sig))
                z = torch.randn(x.shape, generator=g)
                e = 2 * (snr * z.flatten(1).norm(dim=1).mean() / grad.flatten(1).norm(dim=1).mean()) ** 2
                x = (x + e / 2 * grad + e**0.5 * z) if half else (x + e * grad + (2 * e) ** 0.5 * z)
                x = x.clamp(*clip)
            if i + 1 < len(s):
                drop = sig**2 - s[i + 1] ** 2
                x = step(x, sig, drop, drop**0.5)
    return (x + s[-1] ** 2 * score(x, torch.full((x.shape[0],), s[-1]))).clamp(*clip)


@pytest.mark.parametrize("convention", ["code", "algorithm1"])
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_in_place_loop_matches_the_update_rule(name, convention):
    """Same generator, same numbers: the preallocated, in-place loop is the textbook recursion (up to
    float32 rounding: addcmul fuses a multiply-add), on the same random stream."""
    mix = gmm_2mode_mixture()
    score = lambda x, s: mix.score(x, s)  # noqa: E731
    sigmas = [6.0, 2.0, 0.7]
    x0 = initial_samples((2,), 500, "uniform", low=-8.0, high=8.0, generator=torch.Generator().manual_seed(3))
    got = SAMPLERS[name](
        score, x0, sigmas, n_steps=15, step_size=0.05, generator=torch.Generator().manual_seed(7),
        denoise=True, clip=(-4.0, 4.0), cuda_graphs="auto",  # graphs fall back silently on a CPU
        step_convention=convention,
    )  # fmt: skip
    want = reference_chain(name, score, x0, sigmas, 15, 0.05, torch.Generator().manual_seed(7), convention=convention)
    assert not got.graphed
    assert torch.allclose(got.samples, want, rtol=0, atol=1e-4), (got.samples - want).abs().max()
    assert not torch.allclose(got.samples, x0, atol=0.1)  # the chains moved


def test_bad_cuda_graph_mode(gen):
    with pytest.raises(ScorebenchError, match="cuda_graphs"):
        langevin(lambda x, s: -x, torch.zeros(4, 2), [1.0], n_steps=1, step_size=0.1, generator=gen, cuda_graphs="yes")


# ---------------------------------------------------------------------------------------------
# shapes, determinism, inputs


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_image_shaped_inputs_and_clip(gen, name):
    means = torch.stack([torch.full((1, 8, 8), 0.2), torch.full((1, 8, 8), 0.8)])
    mix = IsotropicGaussianMixture(means, 0.1)
    x0 = initial_samples((1, 8, 8), 16, "uniform", generator=gen)
    x0_before = x0.clone()
    sigmas = geometric_sigmas(1.0, 0.05, 4)
    res = get_sampler(name)(
        lambda x, s: mix.score(x, s),
        x0,
        sigmas,
        n_steps=5,
        step_size=1e-4,
        generator=gen,
        clip=(0.0, 1.0),
        denoise=True,
    )
    assert res.samples.shape == (16, 1, 8, 8) and res.samples.dtype == torch.float32
    assert torch.isfinite(res.samples).all()
    assert res.samples.min() >= 0.0 and res.samples.max() <= 1.0
    assert torch.equal(x0, x0_before)  # the start is not updated in place


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_seeded_generator_is_reproducible(name):
    mix = gmm_2mode_mixture()
    x0 = torch.zeros(50, 2)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return SAMPLERS[name](lambda x, s: mix.score(x, s), x0, [2.0, 1.0], n_steps=3, step_size=0.1, generator=g)

    assert torch.equal(run(0).samples, run(0).samples)
    assert not torch.equal(run(0).samples, run(1).samples)


def test_initial_samples():
    g = torch.Generator().manual_seed(0)
    u = initial_samples((2,), 20000, "uniform", low=-8.0, high=8.0, generator=g)
    assert u.shape == (20000, 2) and u.min() >= -8.0 and u.max() <= 8.0
    assert abs(float(u.var()) - 16.0**2 / 12) < 0.5  # U[a, b] variance (b − a)²/12
    z = initial_samples((3, 4, 4), 5000, "gaussian", sigma=20.0, generator=g)
    assert z.shape == (5000, 3, 4, 4) and abs(float(z.std()) / 20.0 - 1) < 0.02


def test_bad_inputs_raise_one_line_errors(gen):
    with pytest.raises(ScorebenchError, match="annealed_langevin"):
        get_sampler("ald")
    score = lambda x, s: -x  # noqa: E731
    x0 = torch.zeros(4, 2)
    with pytest.raises(ScorebenchError, match="decreasing"):
        annealed_langevin(score, x0, [1.0, 2.0], n_steps=1, step_size=0.1, generator=gen)
    with pytest.raises(ScorebenchError, match="step_size"):
        langevin(score, x0, [1.0], n_steps=1, step_size=0.0, generator=gen)
    with pytest.raises(ScorebenchError, match="clip"):
        langevin(score, x0, [1.0], n_steps=1, step_size=0.1, generator=gen, clip=(1.0, 0.0))
    with pytest.raises(ScorebenchError, match="kind"):
        initial_samples((2,), 4, "laplace", generator=gen)
