"""Isotropic Gaussian mixtures: the one exact score that every dataset shares.

Perturbing a mixture Σ_k w_k N(μ_k, s_k² I) with N(0, σ² I) gives Σ_k w_k N(μ_k, (s_k² + σ²) I), so
log p_σ and ∇ₓ log p_σ stay in closed form at every σ. The same class serves
- Gaussian-mixture toys (a few components with s_k > 0),
- point-cloud toys (every point a component with a small bandwidth s_k = h, a Gaussian KDE), and
- the empirical distribution of an image training set (s_k = 0: exact for σ > 0), the "true" score
  that image score error is measured against (NCSN Sec. 3; Vincent 2011).
Components are processed in chunks with a streaming log-sum-exp, so 60,000 MNIST means fit in memory.
"""

from __future__ import annotations

import math

import torch

from scorebench.errors import ScorebenchError
from scorebench.tensors import as_sigma_batch


class IsotropicGaussianMixture:
    """Σ_k w_k N(μ_k, s_k² I) in any shape, with exact perturbed log-density and score.

    Args:
        means: (K, *shape) component means.
        stds: (K,) component standard deviations s_k (a float broadcasts; 0 gives an empirical
            distribution whose score exists only for σ > 0).
        weights: (K,) mixture weights (normalised here); None means equal weights.
        chunk_size: components handled at once.
    """

    def __init__(self, means: torch.Tensor, stds=0.0, weights=None, chunk_size: int = 4096):
        self.means = means.detach().to(torch.float64)
        k = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=torch.float64).expand(k).clone()
        w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or not torch.all(w > 0):
            raise ScorebenchError(f"mixture weights: need {k} positive weights, got {w.tolist()[:8]}")
        self.log_weights = torch.log(w / w.sum())
        self.chunk_size = int(chunk_size)
        self.shape = tuple(self.means.shape[1:])
        self.dim = int(math.prod(self.shape))

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def _variances(self, sigma: torch.Tensor) -> torch.Tensor:
        """(B, K) per-sample, per-component variance s_k² + σ²."""
        v = self.stds.to(sigma.device)[None, :] ** 2 + sigma[:, None] ** 2
        if torch.any(v <= 0):
            raise ScorebenchError("mixture: σ must be > 0 for an empirical distribution (component std 0)")
        return v

    def _stream(self, x: torch.Tensor, sigma, want_score: bool):
        """Streaming log-sum-exp over component chunks; returns log p_σ(x) (B,) and optionally the score."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        s = as_sigma_batch(sigma, xf).to(torch.float64)
        var_all = self._variances(s)  # (B, K)
        b = xf.shape[0]
        run_max = torch.full((b,), -math.inf, dtype=torch.float64, device=xf.device)
        run_sum = torch.zeros(b, dtype=torch.float64, device=xf.device)
        num = torch.zeros_like(xf) if want_score else None  # Σ r̃_k μ_k / v_k
        den = torch.zeros(b, dtype=torch.float64, device=xf.device) if want_score else None  # Σ r̃_k / v_k
        x2 = (xf**2).sum(1, keepdim=True)
        for start in range(0, self.means.shape[0], self.chunk_size):
            mu = self.means[start : start + self.chunk_size].reshape(-1, self.dim).to(xf.device)
            var = var_all[:, start : start + mu.shape[0]]
            d2 = (x2 - 2.0 * xf @ mu.T + (mu**2).sum(1)[None, :]).clamp_min(0.0)
            logits = (
                self.log_weights[start : start + mu.shape[0]].to(xf.device)[None, :]
                - 0.5 * d2 / var
                - 0.5 * self.dim * torch.log(2.0 * math.pi * var)
            )
            new_max = torch.maximum(run_max, logits.max(1).values)
            scale = torch.exp(run_max - new_max)
            e = torch.exp(logits - new_max[:, None])
            run_sum = run_sum * scale + e.sum(1)
            if want_score:
                num = num * scale[:, None] + (e / var) @ mu
                den = den * scale + (e / var).sum(1)
            run_max = new_max
        logp = run_max + torch.log(run_sum)
        if not want_score:
            return logp, None
        score = (num - xf * den[:, None]) / run_sum[:, None]
        return logp, score.reshape(x.shape)

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p_σ(x), shape (B,), float64."""
        return self._stream(x, sigma, want_score=False)[0]

    def score(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """∇ₓ log p_σ(x), same shape as x, in x's dtype."""
        return self._stream(x, sigma, want_score=True)[1].to(x.dtype)

    def log_prob_and_score(self, x: torch.Tensor, sigma=0.0):
        logp, score = self._stream(x, sigma, want_score=True)
        return logp, score.to(x.dtype)

    def sample(self, n: int, sigma: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from p_σ (float64), reproducible with `generator`."""
        k = torch.multinomial(self.weights, int(n), replacement=True, generator=generator)
        std = torch.sqrt(self.stds[k] ** 2 + float(sigma) ** 2)
        noise = torch.randn((int(n), *self.shape), dtype=torch.float64, generator=generator)
        return self.means[k] + std.reshape(-1, *([1] * len(self.shape))) * noise

    def nearest_component(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the closest mean for each point (for mode-weight metrics)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        return torch.cdist(xf, self.means.reshape(-1, self.dim).to(xf.device)).argmin(1)
