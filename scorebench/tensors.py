"""Shape-agnostic helpers shared by losses, samplers and models.

Score-model code must work on 2-D toy points (B, D) and images (B, C, H, W) alike, so per-sample
scalars are broadcast with one helper instead of hard-coded `[:, None, None, None]`.
"""

from __future__ import annotations

import torch


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (B,) so it broadcasts against `like` of shape (B, ...)."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def flat_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the batch one: (B, ...) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def as_sigma_batch(sigma, x: torch.Tensor) -> torch.Tensor:
    """A noise level given as a float, a 0-d tensor or a (B,) tensor, as a (B,) tensor on x's device."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.dim() == 0:
        s = s.expand(x.shape[0])
    return s
