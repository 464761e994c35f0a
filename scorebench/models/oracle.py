"""The exact score of a known distribution, dressed as a score model.

Samplers and metrics take a model; handing them the true ∇ₓ log p_σ separates sampler error from
score-estimation error (the "oracle" baseline of Song & Ermon 2019, Sec. 3).
"""

from __future__ import annotations

import torch
from torch import nn

from scorebench.data.mixture import IsotropicGaussianMixture


class OracleScore(nn.Module):
    """forward(x, sigma) = distribution.score(x, sigma), in x's dtype and device; no parameters.

    The mixture computes in float64 and moves its means to x's device chunk by chunk, so the module
    only needs a device anchor: a zero-size, non-persistent buffer that `.to(device)` moves and
    checkpoints never store.

    Args:
        distribution: an `IsotropicGaussianMixture` (a dataset's `.distribution`). For an empirical
            distribution (component std 0) the score exists only for σ > 0.
    """

    def __init__(self, distribution: IsotropicGaussianMixture):
        super().__init__()
        self.distribution = distribution
        self.register_buffer("anchor", torch.zeros(0), persistent=False)
        self.config = {"arch": "oracle"}

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.distribution.score(x, sigma).to(dtype=x.dtype, device=x.device)
