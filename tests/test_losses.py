"""Score-matching objectives checked against math: analytic values, finite differences, known optima.

The central check fits a linear score model s(x) = A x + b to samples of N(μ, Σ) with each objective;
the exact score is -Σ⁻¹(x - μ), so every objective must find A ≈ -Σ⁻¹ and b ≈ Σ⁻¹μ. On perturbed data
(σ > 0) the target is the score of p_σ = N(μ, Σ + σ²I) instead, which the σ = 0.5 cases tell apart.
"""

import pytest
import torch
from torch import nn

from scorebench.errors import ScorebenchError
from scorebench.losses import (
    LOSSES,
    OBJECTIVE_NEEDS_NOISE,
    denoising_score_matching,
    exact_score_matching,
    loss_options,
    make_loss,
    sliced_score_matching,
    sliced_score_matching_vr,
)

F64 = torch.float64


class LinearScore(nn.Module):
    """s(x) = A x + b, ignoring σ: the exact score family of a Gaussian."""

    def __init__(self, dim, A=None, b=None):
        super().__init__()
        self.A = nn.Parameter(torch.zeros(dim, dim, dtype=F64) if A is None else A.clone())
        self.b = nn.Parameter(torch.zeros(dim, dtype=F64) if b is None else b.clone())

    def forward(self, x, sigma):
        return x @ self.A.T + self.b


class TinyMLP(nn.Module):
    """A nonlinear score model on (B, D) points, whose Jacobian varies with x and is not symmetric."""

    def __init__(self, dim, seed=0):
        super().__init__()
        torch.manual_seed(seed)  # only for parameter init in tests
        self.net = nn.Sequential(nn.Linear(dim + 1, 16), nn.Tanh(), nn.Linear(16, dim)).to(F64)

    def forward(self, x, sigma):
        return self.net(torch.cat([x, sigma[:, None].to(x.dtype)], dim=1))


class TinyConv(nn.Module):
    """A two-layer conv score model on (B, 1, H, W) images; checks it is given σ as a (B,) vector."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x, sigma):
        assert sigma.shape == (x.shape[0],)
        return self.c2(torch.nn.functional.silu(self.c1(x))) / (1.0 + sigma[:, None, None, None])


def _all_losses():
    """(name, options) for every registered objective, sliced once per projection kind."""
    return [("exact", {}), ("sliced", {}), ("sliced", {"projection": "rademacher"}), ("sliced_vr", {}), ("dsm", {})]


# ---------------------------------------------------------------------------------------------
# analytic values


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_exact_loss_and_its_gradient_match_the_linear_model_formula(sigma):
    """For s = A x + b: loss = tr A + ½‖A x̃ + b‖², ∂loss/∂A = I + (A x̃ + b) x̃ᵀ (the trace term trains)."""
    g = torch.Generator().manual_seed(3)
    A = torch.randn(3, 3, generator=g, dtype=F64)
    b = torch.randn(3, generator=g, dtype=F64)
    x = torch.randn(5, 3, generator=g, dtype=F64)
    model = LinearScore(3, A, b)
    sig = torch.full((5,), sigma, dtype=F64)

    loss = exact_score_matching(model, x, sig, torch.ones(5, dtype=F64), generator=torch.Generator().manual_seed(7))
    x_tilde = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
    s = x_tilde @ A.T + b
    expected = torch.trace(A) + 0.5 * (s**2).sum(dim=1)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)

    loss.sum().backward()
    grad_A = 5 * torch.eye(3, dtype=F64) + s.T @ x_tilde
    torch.testing.assert_close(model.A.grad, grad_A, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(model.b.grad, s.sum(dim=0), rtol=1e-10, atol=1e-10)


def test_dsm_loss_matches_its_formula():
    """DSM = ½‖s(x̃) + (x̃ − x)/σ²‖² with x̃ = x + σ z, per sample and per σ."""
    g = torch.Generator().manual_seed(4)
    A = torch.randn(2, 2, generator=g, dtype=F64)
    b = torch.randn(2, generator=g, dtype=F64)
    x = torch.randn(6, 2, generator=g, dtype=F64)
    sig = torch.tensor([0.01, 0.1, 0.5, 1.0, 2.0, 5.0], dtype=F64)
    model = LinearScore(2, A, b)
    loss = denoising_score_matching(model, x, sig, torch.ones(6, dtype=F64), generator=torch.Generator().manual_seed(9))
    x_tilde = x + sig[:, None] * torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    expected = 0.5 * ((x_tilde @ A.T + b + (x_tilde - x) / sig[:, None] ** 2) ** 2).sum(dim=1)
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=1e-9)


def test_exact_trace_matches_finite_differences():
    """On a nonlinear model the exact loss is tr J + ½‖s‖², J by central differences (σ = 0: x̃ = x)."""
    model = TinyMLP(3)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    sig = torch.zeros(4, dtype=F64)
    loss = exact_score_matching(model, x, sig, torch.ones(4, dtype=F64), generator=torch.Generator().manual_seed(0))
    h = 1e-5
    with torch.no_grad():
        trace = sum(
            (model(x + h * e, sig)[:, i] - model(x - h * e, sig)[:, i]) / (2 * h)
            for i, e in enumerate(torch.eye(3, dtype=F64))
        )
        expected = trace + 0.5 * (model(x, sig) ** 2).sum(dim=1)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize(
    "loss_fn, opts",
    [
        (sliced_score_matching, {"projection": "gaussian"}),
        (sliced_score_matching, {"projection": "rademacher"}),
        (sliced_score_matching_vr, {}),
    ],
)
def test_sliced_loss_is_unbiased_for_the_exact_loss(loss_fn, opts):
    """E_v[sliced] = exact at each point: the mean over many projections is within 5 standard errors."""
    model = TinyMLP(3, seed=1)
    points = torch.randn(4, 3, generator=torch.Generator().manual_seed(6), dtype=F64) * 1.5
    copies = 5000
    x = points.repeat_interleave(copies, dim=0)  # each row draws its own projections
    sig = torch.zeros(x.shape[0], dtype=F64)
    ones = torch.ones(x.shape[0], dtype=F64)
    sliced = loss_fn(model, x, sig, ones, generator=torch.Generator().manual_seed(11), n_projections=2, **opts)
    sliced = sliced.detach().reshape(4, copies)
    exact = exact_score_matching(model, points, sig[:4], ones[:4]).detach()
    std_err = sliced.std(dim=1) / copies**0.5
    assert torch.all(std_err > 0)  # a zero spread would make the comparison meaningless
    assert torch.all((sliced.mean(dim=1) - exact).abs() < 5 * std_err), (sliced.mean(dim=1), exact, std_err)


# ---------------------------------------------------------------------------------------------
# known optimum: a Gaussian's score


MU_2 = torch.tensor([1.0, -0.5], dtype=F64)
SIGMA_2 = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=F64)
MU_3 = torch.tensor([0.5, -1.0, 0.3], dtype=F64)
SIGMA_3 = torch.tensor([[1.0, 0.3, -0.2], [0.3, 0.7, 0.1], [-0.2, 0.1, 0.5]], dtype=F64)


def _fit_linear_score(name, opts, mu, cov, sigma, n):
    """Minimise the mean loss over n fixed samples with full-batch L-BFGS; returns (A, b).

    The generator is re-seeded in every closure call, so perturbations and projections are the same
    draw each time and the objective is a fixed (sample-average) function that L-BFGS can minimise.
    """
    dim = mu.numel()
    x = mu + torch.randn(n, dim, generator=torch.Generator().manual_seed(0), dtype=F64) @ torch.linalg.cholesky(cov).T
    model = LinearScore(dim)
    loss_fn = make_loss(name, **opts)
    sig = torch.full((n,), sigma, dtype=F64)
    weight = torch.ones(n, dtype=F64)
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=500,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
    )

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, x, sig, weight, generator=torch.Generator().manual_seed(1)).mean()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # (n, ≤3) tensors gain nothing from threads, and lose a lot on a busy machine
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return model.A.detach(), model.b.detach()


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize(
    "name, opts, sigma, n, tol",
    [
        # each tolerance sits above the worst relative error seen over 10-20 data seeds at that size
        ("exact", {}, 0.0, 20_000, 0.05),
        ("sliced", {"projection": "gaussian"}, 0.0, 50_000, 0.07),
        ("sliced", {"projection": "rademacher"}, 0.0, 50_000, 0.07),
        ("sliced_vr", {}, 0.0, 50_000, 0.05),
        # DSM's target z/σ has variance 1/σ² = 400: many samples are needed at small σ
        ("dsm", {}, 0.05, 400_000, 0.1),
    ],
)
def test_objectives_recover_the_score_of_a_gaussian(name, opts, sigma, n, tol, dim):
    """The linear argmin is A ≈ -(Σ + σ²I)⁻¹, b ≈ (Σ + σ²I)⁻¹ μ (relative Frobenius error < tol)."""
    mu, cov = (MU_2, SIGMA_2) if dim == 2 else (MU_3, SIGMA_3)
    A, b = _fit_linear_score(name, opts, mu, cov, sigma, n)
    precision = torch.linalg.inv(cov + sigma**2 * torch.eye(dim, dtype=F64))
    assert _rel(A, -precision) < tol, (A, -precision)
    assert _rel(b, precision @ mu) < tol, (b, precision @ mu)


@pytest.mark.parametrize("name", ["exact", "dsm"])
def test_perturbed_objectives_learn_the_score_of_p_sigma(name):
    """At σ = 0.5 the optimum is the score of N(μ, Σ + σ²I) (error < 0.05), clearly not N(μ, Σ)'s (> 0.3)."""
    A, b = _fit_linear_score(name, {}, MU_2, SIGMA_2, 0.5, 20_000)
    noisy = torch.linalg.inv(SIGMA_2 + 0.25 * torch.eye(2, dtype=F64))
    assert _rel(A, -noisy) < 0.05 and _rel(b, noisy @ MU_2) < 0.05
    assert _rel(A, -torch.linalg.inv(SIGMA_2)) > 0.3


# ---------------------------------------------------------------------------------------------
# contract: shapes, weights, seeds, refusals, registry


@pytest.mark.parametrize("name, opts", _all_losses())
def test_losses_on_images_are_per_sample_and_train(name, opts, gen):
    """(B, 1, 8, 8) images give a finite (B,) loss whose backward reaches every parameter."""
    model = TinyConv()
    x = torch.randn(3, 1, 8, 8, generator=gen)
    loss = make_loss(name, **opts)(model, x, torch.full((3,), 0.2), torch.ones(3), generator=gen)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name, opts", _all_losses())
def test_weight_scales_the_loss_linearly_and_seed_fixes_it(name, opts):
    """loss(λ) = λ · loss(1) per sample under the same seed; the same seed repeats, another one differs."""
    model = TinyMLP(2, seed=2)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(8), dtype=F64)
    sig = torch.tensor([1.0, 0.5, 0.1, 0.05], dtype=F64)
    weight = torch.tensor([0.0, 0.5, 2.0, 100.0], dtype=F64)
    loss_fn = make_loss(name, **opts)

    def run(w, seed):
        return loss_fn(model, x, sig, w, generator=torch.Generator().manual_seed(seed)).detach()

    unit = run(torch.ones(4, dtype=F64), 0)
    torch.testing.assert_close(run(weight, 0), weight * unit, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(run(torch.ones(4, dtype=F64), 0), unit, rtol=0, atol=0)
    assert not torch.allclose(run(torch.ones(4, dtype=F64), 1), unit)


@pytest.mark.parametrize("name, opts", _all_losses())
def test_loss_under_no_grad_matches_and_is_detached(name, opts):
    """A validation pass under torch.no_grad() gets the same value, with no graph attached."""
    model = TinyMLP(2, seed=3)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    sig, w = torch.full((4,), 0.3, dtype=F64), torch.ones(4, dtype=F64)
    loss_fn = make_loss(name, **opts)
    with_grad = loss_fn(model, x, sig, w, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        without = loss_fn(model, x, sig, w, generator=torch.Generator().manual_seed(5))
    assert with_grad.requires_grad and not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach(), rtol=1e-12, atol=1e-12)


def test_exact_refuses_large_dimensions():
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ScorebenchError, match=r"objective exact: data dimension D=64 exceeds max_dim=32.*`sliced`"):
        exact_score_matching(TinyConv(), x, torch.ones(2), torch.ones(2), max_dim=32)
    with pytest.raises(ScorebenchError, match=r"D=192 exceeds max_dim=128"):  # the default
        make_loss("exact")(TinyConv(), torch.zeros(2, 3, 8, 8), torch.ones(2), torch.ones(2))


def test_dsm_refuses_zero_sigma():
    x = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ScorebenchError, match=r"objective dsm needs σ > 0.*schedule `none`"):
        denoising_score_matching(LinearScore(2), x, torch.tensor([0.1, 0.0, 0.1], dtype=F64), torch.ones(3, dtype=F64))
    assert "dsm" in OBJECTIVE_NEEDS_NOISE and OBJECTIVE_NEEDS_NOISE <= set(LOSSES)


def test_make_loss_checks_names_and_options():
    assert set(LOSSES) == {"exact", "sliced", "sliced_vr", "dsm"}
    assert loss_options("sliced") == ("n_projections", "projection") and loss_options("dsm") == ()
    with pytest.raises(ScorebenchError, match=r"unknown 'ssm'.*'sliced'"):
        make_loss("ssm")
    with pytest.raises(ScorebenchError, match=r"objective dsm: unknown option\(s\) \['n_projections'\]"):
        make_loss("dsm", n_projections=2)
    with pytest.raises(ScorebenchError, match=r"objective.projection: unknown 'sphere'"):
        make_loss("sliced", projection="sphere")
    with pytest.raises(ScorebenchError, match=r"objective.n_projections: must be an integer >= 1"):
        make_loss("sliced_vr", n_projections=0)
    # the options are really fixed: three projections differ from one under the same seed
    model, x = TinyMLP(2), torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    sig, w = torch.zeros(4, dtype=F64), torch.ones(4, dtype=F64)
    three = make_loss("sliced", n_projections=3)(model, x, sig, w, generator=torch.Generator().manual_seed(0))
    direct = sliced_score_matching(model, x, sig, w, generator=torch.Generator().manual_seed(0), n_projections=3)
    one = sliced_score_matching(model, x, sig, w, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(three, direct, rtol=0, atol=0)
    assert not torch.allclose(three, one)
