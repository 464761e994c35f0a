"""Score-matching objectives: exact (Hyvärinen), sliced (+ variance-reduced) and denoising.

Every objective has the same signature, `(model, x, sigma, weight, *, generator=None, **opts)`, and
returns a per-sample loss of shape (B,) already multiplied by λ; the trainer does the reduction and
picks σ per sample, so the training loop never branches on the method. Each objective perturbs the
batch itself, x̃ = x + σ·z with z ~ N(0, I) drawn from `generator` (σ = 0 leaves x̃ = x), and
evaluates the model at (x̃, σ). Exact and sliced score matching applied to x̃ estimate the score of
the perturbed density p_σ; denoising score matching does too, in expectation and up to a constant.

Derivatives of the model with respect to its input are taken with `create_graph=True` when gradients
are enabled, so the loss trains the model; under `torch.no_grad()` the loss is still computed (input
gradients are switched on locally) and comes back detached, which is what a validation pass wants.
"""

from __future__ import annotations

import functools
import inspect

import torch

from scorebench.errors import ScorebenchError
from scorebench.tensors import as_sigma_batch, flat_sum, per_sample

PROJECTIONS = ("gaussian", "rademacher")


# ---------------------------------------------------------------------------------------------
# shared steps


def _perturb(x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None):
    """x̃ = x + σ·z with z ~ N(0, I) from `generator`; returns (x̃ requiring grad, z)."""
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    x_tilde = (x.detach() + per_sample(sigma, x) * z).requires_grad_(True)
    return x_tilde, z


def _score(model, x_tilde: torch.Tensor, sigma: torch.Tensor, name: str) -> torch.Tensor:
    """The model's score at (x̃, σ), checked to have x̃'s shape."""
    s = model(x_tilde, sigma)
    if s.shape != x_tilde.shape:
        raise ScorebenchError(
            f"objective {name}: the model returned shape {tuple(s.shape)}, but a score must have the input's "
            f"shape {tuple(x_tilde.shape)}"
        )
    return s


def _projections(like: torch.Tensor, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    """A random vector v per sample with E[v vᵀ] = I (Gaussian or Rademacher ±1)."""
    if kind == "gaussian":
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.randint(0, 2, like.shape, generator=generator, device=like.device).to(like.dtype) * 2 - 1


def _input_grad(out: torch.Tensor, x_tilde: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """∇ₓ̃ of a scalar; zeros (not an autograd error) when it does not depend on x̃, e.g. a constant model."""
    if not out.requires_grad:
        return torch.zeros_like(x_tilde)
    (g,) = torch.autograd.grad(out, x_tilde, create_graph=create_graph, retain_graph=True, allow_unused=True)
    return torch.zeros_like(x_tilde) if g is None else g


def _check_options(n_projections=1, projection="gaussian", max_dim=128) -> None:
    """Refuse option values no objective can use, naming the option and what is valid."""
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ScorebenchError(f"objective.n_projections: must be an integer >= 1, got {n_projections!r}")
    if projection not in PROJECTIONS:
        raise ScorebenchError(f"objective.projection: unknown {projection!r}; choose one of {list(PROJECTIONS)}")
    if isinstance(max_dim, bool) or not isinstance(max_dim, int) or max_dim < 1:
        raise ScorebenchError(f"objective.max_dim: must be an integer >= 1, got {max_dim!r}")


def _finish(loss: torch.Tensor, weight, x: torch.Tensor, grad_was_enabled: bool) -> torch.Tensor:
    """Multiply by λ per sample; detach when the caller had gradients off."""
    loss = loss * as_sigma_batch(weight, x)
    return loss if grad_was_enabled else loss.detach()


# ---------------------------------------------------------------------------------------------
# objectives


def exact_score_matching(model, x, sigma, weight, *, generator=None, max_dim: int = 128) -> torch.Tensor:
    """Hyvärinen's score matching: tr(∇ₓ̃ s(x̃, σ)) + ½‖s(x̃, σ)‖², with the full Jacobian trace.

    The trace costs one backward pass per data dimension D, so it is refused above `max_dim`
    (Hyvärinen 2005, JMLR 6; the cost is why Song et al. 2019 introduced sliced score matching).

    Args:
        model: score model called as `model(x̃, σ)`.
        x: (B, *shape) clean batch.
        sigma: (B,) noise level per sample (0 allowed: then x̃ = x).
        weight: (B,) λ(σ) per sample.
        generator: source of the perturbation noise.
        max_dim: largest D = prod(shape) accepted.

    Returns:
        (B,) per-sample weighted loss.
    """
    _check_options(max_dim=max_dim)
    dim = x[0].numel()
    if dim > max_dim:
        raise ScorebenchError(
            f"objective exact: data dimension D={dim} exceeds max_dim={max_dim} (one backward pass per "
            f"dimension); use `sliced` or `sliced_vr`"
        )
    grad_was_enabled = torch.is_grad_enabled()
    sigma = as_sigma_batch(sigma, x)
    with torch.enable_grad():
        x_tilde, _ = _perturb(x, sigma, generator)
        s = _score(model, x_tilde, sigma, "exact")
        s_flat = s.reshape(s.shape[0], -1)
        trace = torch.zeros(x.shape[0], dtype=s.dtype, device=s.device)
        for i in range(dim):
            g = _input_grad(s_flat[:, i].sum(), x_tilde, grad_was_enabled)
            trace = trace + g.reshape(g.shape[0], -1)[:, i]
        loss = trace + 0.5 * flat_sum(s**2)
    return _finish(loss, weight, x, grad_was_enabled)


def _sliced(model, x, sigma, weight, generator, n_projections, projection, variance_reduced, name):
    """Shared body of the two sliced objectives: average over M projections of vᵀ(∇s)v + a norm term."""
    _check_options(n_projections=n_projections, projection=projection)
    grad_was_enabled = torch.is_grad_enabled()
    sigma = as_sigma_batch(sigma, x)
    with torch.enable_grad():
        x_tilde, _ = _perturb(x, sigma, generator)
        s = _score(model, x_tilde, sigma, name)
        total = torch.zeros(x.shape[0], dtype=s.dtype, device=s.device)
        for _ in range(n_projections):
            v = _projections(s, projection, generator)
            v_dot_s = flat_sum(v * s)
            # one vector-Jacobian product: ∇ₓ̃ (v·s) = (∇s)ᵀ v, so v·(∇s)ᵀv = vᵀ(∇s)v
            jtv = _input_grad(v_dot_s.sum(), x_tilde, grad_was_enabled)
            total = total + flat_sum(jtv * v)
            if not variance_reduced:
                total = total + 0.5 * v_dot_s**2
        loss = total / n_projections
        if variance_reduced:
            loss = loss + 0.5 * flat_sum(s**2)
    return _finish(loss, weight, x, grad_was_enabled)


def sliced_score_matching(
    model, x, sigma, weight, *, generator=None, n_projections: int = 1, projection: str = "gaussian"
) -> torch.Tensor:
    """Sliced score matching: vᵀ(∇ₓ̃ s)v + ½(vᵀs)², averaged over M random projections v.

    Unbiased for the exact objective whenever E[v vᵀ] = I, at the cost of one vector-Jacobian product
    per projection instead of D backward passes (Song, Garg, Shi & Ermon 2019, UAI, eq. 7).

    Args:
        model: score model called as `model(x̃, σ)`.
        x: (B, *shape) clean batch.
        sigma: (B,) noise level per sample (0 allowed: then x̃ = x).
        weight: (B,) λ(σ) per sample.
        generator: source of the perturbation noise and of the projections.
        n_projections: M, projections per sample.
        projection: `gaussian` or `rademacher` (±1 entries).

    Returns:
        (B,) per-sample weighted loss.
    """
    return _sliced(model, x, sigma, weight, generator, n_projections, projection, False, "sliced")


def sliced_score_matching_vr(model, x, sigma, weight, *, generator=None, n_projections: int = 1) -> torch.Tensor:
    """Variance-reduced sliced score matching: vᵀ(∇ₓ̃ s)v + ½‖s‖², v Gaussian.

    Replaces ½(vᵀs)² by its expectation ½‖s‖² over Gaussian v, which lowers the variance
    (Song, Garg, Shi & Ermon 2019, UAI, "SSM-VR", eq. 8).

    Args:
        model: score model called as `model(x̃, σ)`.
        x: (B, *shape) clean batch.
        sigma: (B,) noise level per sample (0 allowed: then x̃ = x).
        weight: (B,) λ(σ) per sample.
        generator: source of the perturbation noise and of the projections.
        n_projections: M, projections per sample.

    Returns:
        (B,) per-sample weighted loss.
    """
    return _sliced(model, x, sigma, weight, generator, n_projections, "gaussian", True, "sliced_vr")


def denoising_score_matching(model, x, sigma, weight, *, generator=None) -> torch.Tensor:
    """Denoising score matching: ½‖s(x̃, σ) + (x̃ − x)/σ²‖², the target being ∇ log q_σ(x̃ | x).

    Its minimiser is the score of the perturbed density p_σ = p ∗ N(0, σ²I), so σ must be > 0
    (Vincent 2011, Neural Computation 23(7); Song & Ermon 2019, NCSN eq. 5).

    Args:
        model: score model called as `model(x̃, σ)`.
        x: (B, *shape) clean batch.
        sigma: (B,) noise level per sample, every entry > 0.
        weight: (B,) λ(σ) per sample.
        generator: source of the perturbation noise.

    Returns:
        (B,) per-sample weighted loss.
    """
    sigma = as_sigma_batch(sigma, x)
    # checked where it costs nothing: on a GPU it would be a host sync every step (the study
    # refuses dsm with schedule `none` before any job, and a σ = 0 loss is non-finite, which the
    # trainer reports at its next log step)
    if sigma.device.type == "cpu" and not bool(torch.all(sigma > 0)):
        raise ScorebenchError("objective dsm needs σ > 0: it cannot be used with schedule `none`")
    x_tilde, z = _perturb(x, sigma, generator)
    s = _score(model, x_tilde.detach(), sigma, "dsm")
    # (x̃ − x)/σ² = z/σ, computed without the cancellation of x̃ − x
    return _finish(0.5 * flat_sum((s + z / per_sample(sigma, z)) ** 2), weight, x, True)


# ---------------------------------------------------------------------------------------------
# registry


LOSSES = {
    "exact": exact_score_matching,
    "sliced": sliced_score_matching,
    "sliced_vr": sliced_score_matching_vr,
    "dsm": denoising_score_matching,
}

# objectives whose target only exists for σ > 0: config checking refuses them with schedule `none`
OBJECTIVE_NEEDS_NOISE = frozenset({"dsm"})


def loss_options(name: str) -> tuple[str, ...]:
    """The options an objective accepts (its keyword-only parameters other than `generator`)."""
    if name not in LOSSES:
        raise ScorebenchError(f"objective: unknown {name!r}; choose one of {list(LOSSES)}")
    params = inspect.signature(LOSSES[name]).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "generator")


def make_loss(name: str, **opts):
    """The objective `name` with its options fixed, called as `loss(model, x, sigma, weight, generator=...)`.

    Args:
        name: a key of `LOSSES`.
        **opts: that objective's options (see `loss_options(name)`), checked here so a config typo fails early.

    Returns:
        A functools.partial of the objective.
    """
    allowed = loss_options(name)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ScorebenchError(
            f"objective {name}: unknown option(s) {unknown}; valid options are {list(allowed) or 'none'}"
        )
    _check_options(**opts)
    return functools.partial(LOSSES[name], **opts)


__all__ = [
    "LOSSES",
    "OBJECTIVE_NEEDS_NOISE",
    "PROJECTIONS",
    "denoising_score_matching",
    "exact_score_matching",
    "loss_options",
    "make_loss",
    "sliced_score_matching",
    "sliced_score_matching_vr",
]
