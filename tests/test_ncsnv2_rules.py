"""NCSNv2's rules (scorebench/ncsnv2_rules.py): the ε of technique 4 as a minimiser of Eq. 4, checked
against the authors' published step sizes and by Monte Carlo with the sampler; σ₁ of technique 1
exact over the whole training set."""

import math

import pytest
import torch

from scorebench.data import load_dataset
from scorebench.errors import ScorebenchError
from scorebench.ncsnv2_rules import (
    STEP_RTOL,
    max_pairwise_distance,
    ncsnv2_step_size,
    ncsnv2_variance_ratio,
    pairwise_distance_bounds,
)
from scorebench.sampling import annealed_langevin


def eq4(eps, sigma_min, gamma, T):
    """NCSNv2 Eq. 4 as printed, in the authors' code form x ← x + α s + √(2α) z."""
    r = 1 - eps / sigma_min**2
    stat = 2 * eps / (sigma_min**2 - sigma_min**2 * r**2)
    return r ** (2 * T) * (gamma**2 - stat) + stat


def geometric_gamma(sigma_max, sigma_min, levels):
    return (sigma_max / sigma_min) ** (1 / (levels - 1))


@pytest.mark.parametrize(
    "sigma_max, levels, T, published",
    [(50, 232, 5, 6.2e-6), (90, 500, 5, 3.3e-6)],  # ermongroup/ncsnv2 configs/cifar10.yml, celeba.yml: step_lr
    ids=["cifar10", "celeba"],
)
def test_code_form_rule_gives_the_authors_step_lr(sigma_max, levels, T, published):
    eps = ncsnv2_step_size(0.01, geometric_gamma(sigma_max, 0.01, levels), T, "code")
    assert f"{eps:.1e}" == f"{published:.1e}"  # they publish two significant digits
    assert ncsnv2_step_size(0.01, geometric_gamma(sigma_max, 0.01, levels), T, "algorithm1") == pytest.approx(2 * eps)


def test_rule_is_the_minimiser_of_eq4_to_its_tolerance():
    gamma, T, s = geometric_gamma(50, 0.01, 232), 5, 0.01
    eps = ncsnv2_step_size(s, gamma, T, "code")
    best = eq4(eps, s, gamma, T)
    assert best == pytest.approx(ncsnv2_variance_ratio(eps, s, gamma, T, "code"), rel=1e-14)
    assert best > 1  # Eq. 4 = 1 has no root: the ratio exceeds 1 for every ε
    # no point of a fine independent scan (0.1 % steps over six decades) is lower
    scan = [s**2 * 10 ** (k / 2300) for k in range(-6 * 2300, 0)]
    assert min(eq4(e, s, gamma, T) for e in scan) >= best - 1e-15
    # and ε moved by 1e-6 relative (10⁴ times the tolerance) either way is not lower: a minimum
    assert eq4(eps * (1 + 1e-6), s, gamma, T) >= best and eq4(eps * (1 - 1e-6), s, gamma, T) >= best
    assert STEP_RTOL <= 1e-10


def test_rule_refuses_what_it_cannot_solve():
    with pytest.raises(ScorebenchError, match="γ > 1"):
        ncsnv2_step_size(0.01, 1.0, 5)
    with pytest.raises(ScorebenchError, match="step_convention"):
        ncsnv2_step_size(0.01, 1.1, 5, "half")


def measured_ratio(eps, gamma, T, sigma, convention, gen, n=64, shape=(3, 32, 32)):
    """Annealed Langevin at the last level on N(0, σ² I), entering with variance γ²σ²: s_T²/σ²."""
    x0 = gamma * sigma * torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    out = annealed_langevin(lambda x, s: -x / s[:, None, None, None] ** 2, x0, [sigma], n_steps=T,
                            step_size=eps, generator=gen, **convention)  # fmt: skip
    v = out.samples.double().pow(2).mean() / sigma**2
    return float(v), x0.numel()


@pytest.mark.parametrize("convention", ["code", "algorithm1"])
def test_measured_variance_ratio_matches_the_rule_for_the_convention_in_effect(convention, gen):
    """Monte Carlo over 64 × 3072 coordinates: standard error of the variance ratio √(2/n)·ratio ≈ 0.34 %."""
    sigma, T = 0.01, 5
    gamma = geometric_gamma(50, sigma, 232)
    kwargs = {"step_convention": convention}
    other = "code" if convention == "algorithm1" else "algorithm1"
    rule = ncsnv2_step_size(sigma, gamma, T, convention)
    for eps in (rule, 0.2 * sigma**2 * (2 if convention == "algorithm1" else 1)):
        got, n = measured_ratio(eps, gamma, T, sigma, kwargs, gen)
        predicted = ncsnv2_variance_ratio(eps, sigma, gamma, T, convention)
        se = predicted * math.sqrt(2 / n)
        assert abs(got - predicted) < 4 * se, (eps, got, predicted, se)
    # at the larger step the two forms predict ratios 13 standard errors apart: the check can tell them apart
    assert abs(ncsnv2_variance_ratio(eps, sigma, gamma, T, other) - predicted) > 10 * se


def test_max_pairwise_distance_is_exact_over_the_whole_set(gen):
    mixture = load_dataset("gmm_2mode").train  # the 0.2/0.8 pair: 10,000 points
    brute = float(torch.cdist(mixture.double(), mixture.double()).max())
    assert max_pairwise_distance(mixture) == pytest.approx(brute, rel=1e-12)
    assert brute == pytest.approx(21.43, abs=0.005)
    # image-like data with two outliers planted in the middle: pruning must not lose them
    x = torch.rand(3000, 1, 8, 8, generator=gen)
    x[1234] = 0.0
    x[2345] = 1.0
    flat = x.reshape(3000, -1).double()
    brute = float(torch.cdist(flat, flat).max())
    assert max_pairwise_distance(x, chunk=257) == pytest.approx(brute, rel=1e-12) == 8.0
    lower, upper = pairwise_distance_bounds(x)
    assert lower <= brute <= upper
