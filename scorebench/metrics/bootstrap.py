"""The bootstrap behind every per-cell Monte-Carlo standard error (`se` columns), written once.

Toy sample metrics (metrics/toy.py) and score errors (metrics/score_error.py) both resample their
points with replacement; a resample is a row of multiplicities c (Σc = n), so a resampled mean is
cᵀv/n and kernel sums reuse one pairwise pass. The bootstrap draws from its own generator, seeded
by one draw of the caller's after the metric's own draws, so adding it changes no metric value.
"""

from __future__ import annotations

import math

import torch

RESAMPLES = 200  # resamples behind each `se`, the default of every caller


def generator_after(generator: torch.Generator) -> torch.Generator:
    """A CPU generator for the bootstrap, seeded by one draw of `generator`."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def counts(n: int, resamples: int, generator: torch.Generator) -> torch.Tensor:
    """(resamples, n) float64 multiplicities of n indices drawn with replacement, one row per resample."""
    idx = torch.randint(0, n, (int(resamples), n), generator=generator)
    ones = torch.ones(idx.shape, dtype=torch.float64)
    return torch.zeros(int(resamples), n, dtype=torch.float64).scatter_add_(1, idx, ones)


def standard_error(values: torch.Tensor) -> float:
    """Standard deviation over resamples (dim 0), the bootstrap standard error; NaN if there are
    fewer than two or any is not finite."""
    return float(values.std(0)) if values.numel() > 1 and bool(torch.isfinite(values).all()) else math.nan
