"""Toy distributions (2-D ones, and the N-D mixture gmm_nd) whose perturbed densities
p_σ = p * N(0, σ²I) are known exactly.

Mixtures of Gaussians keep their closed form under Gaussian perturbation; the point-cloud toys
(swiss roll, moons) are a fixed point set smoothed by a small Gaussian bandwidth h (a KDE), so they
are mixtures too and their score is exact at every σ, including σ = 0. Built with torch alone so a
toy job imports nothing heavy.
"""

from __future__ import annotations

import math

import torch

from scorebench.data.base import Dataset
from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.data.registry import GMM_ND_DEFAULT_DIM
from scorebench.errors import ScorebenchError


def gmm_2mode_mixture() -> IsotropicGaussianMixture:
    """0.2·N((-5,-5), I) + 0.8·N((5,5), I): the mixture of Song & Ermon 2019, Fig. 3."""
    return IsotropicGaussianMixture(torch.tensor([[-5.0, -5.0], [5.0, 5.0]]), 1.0, [0.2, 0.8])


def gmm_ring8_mixture(radius: float = 5.0, std: float = 0.5) -> IsotropicGaussianMixture:
    """8 equal Gaussians evenly spaced on a circle."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return IsotropicGaussianMixture(means, std)


def gmm_grid25_mixture(spacing: float = 2.0, std: float = 0.2) -> IsotropicGaussianMixture:
    """25 equal Gaussians on a 5 x 5 grid centred on the origin."""
    ticks = (torch.arange(5, dtype=torch.float64) - 2) * spacing
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return IsotropicGaussianMixture(torch.stack([gx.flatten(), gy.flatten()], 1), std)


def swiss_roll_points(n: int, generator: torch.Generator) -> torch.Tensor:
    """The 2-D swiss roll (t cos t, t sin t), t ∈ [1.5π, 4.5π], scaled to roughly [-1.5, 1.5]·10 / 10."""
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, dtype=torch.float64, generator=generator))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)
    return pts / 2.5  # span about [-5.7, 5.3], comparable to the mixture toys


def moons_points(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two interleaving half circles (scikit-learn's `make_moons` shape), scaled by 2.5 and centred."""
    n_out = n // 2
    n_in = n - n_out
    a = math.pi * torch.rand(n_out, dtype=torch.float64, generator=generator)
    b = math.pi * torch.rand(n_in, dtype=torch.float64, generator=generator)
    outer = torch.stack([torch.cos(a), torch.sin(a)], 1)
    inner = torch.stack([1 - torch.cos(b), 1 - torch.sin(b) - 0.5], 1)
    pts = torch.cat([outer, inner]) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    return pts * 2.5


def gmm_nd_mixture(dim: int = GMM_ND_DEFAULT_DIM, n_modes: int = 4, radius: float = 4.0, std: float = 1.0) -> IsotropicGaussianMixture:
    """n_modes equal Gaussians N(±radius·e_i, std² I) on the first coordinate axes of R^dim.

    Means go +e_1, −e_1, +e_2, −e_2, … (so n_modes <= 2·dim): every pair of modes is radius·√2 or
    2·radius apart in any dimension, so a sweep over `dim` changes the ambient dimension (what the
    objectives' cost and variance depend on) and not the shape of the mixture. The other coordinates
    are N(0, std² (+ σ²)), whose score is linear.
    """
    dim, n_modes = int(dim), int(n_modes)
    if dim < 1:
        raise ScorebenchError(f"dataset gmm_nd option dim: must be >= 1, got {dim}")
    if not 1 <= n_modes <= 2 * dim:
        raise ScorebenchError(f"dataset gmm_nd option n_modes: must be between 1 and 2·dim = {2 * dim}, got {n_modes}")
    if not float(std) > 0 or not float(radius) >= 0:
        raise ScorebenchError(f"dataset gmm_nd options std/radius: need std > 0 and radius >= 0, got {std}/{radius}")
    means = torch.zeros(n_modes, dim, dtype=torch.float64)
    k = torch.arange(n_modes)
    means[k, k // 2] = float(radius) * (1.0 - 2.0 * (k % 2)).to(torch.float64)
    return IsotropicGaussianMixture(means, float(std))


MIXTURES = {"gmm_2mode": gmm_2mode_mixture, "gmm_ring8": gmm_ring8_mixture, "gmm_grid25": gmm_grid25_mixture}
POINT_CLOUDS = {"swiss_roll": swiss_roll_points, "moons": moons_points}


def load_toy(
    name: str, *, n_train: int = 10000, n_test: int = 2000, n_points: int = 2000, bandwidth: float = 0.1, seed: int = 0
) -> Dataset:
    """A toy with a seeded, fixed train/test draw (the same for every cell of a study).

    Args:
        n_train, n_test: draws from the distribution for training and held-out evaluation.
        n_points, bandwidth: point-cloud toys only: the fixed point set and the KDE bandwidth h that
            defines p (p = mean_j N(x_j, h² I)).
        seed: the data seed (independent of the training seed).
    """
    g = torch.Generator().manual_seed(int(seed))
    if name in MIXTURES:
        dist = MIXTURES[name]()
        info = {"family": "gaussian_mixture", "components": int(dist.means.shape[0])}
    else:
        points = POINT_CLOUDS[name](int(n_points), g)
        dist = IsotropicGaussianMixture(points, float(bandwidth))
        info = {"family": "point_cloud_kde", "n_points": int(n_points), "bandwidth": float(bandwidth)}
    return _draw(name, dist, info, n_train, n_test, g, seed)


def load_gmm_nd(
    *, dim: int = GMM_ND_DEFAULT_DIM, n_modes: int = 4, radius: float = 4.0, std: float = 1.0, n_train: int = 10000,
    n_test: int = 2000, seed: int = 0,
) -> Dataset:
    """The N-dimensional mixture `gmm_nd_mixture` with a seeded train/test draw (registry name gmm_nd).

    Its family is "gaussian_mixture_nd", not "gaussian_mixture": the mode-weight metrics count a
    sample within 3 component stds of a mean, a 2-D radius (in D dimensions a true sample lies about
    std·√D from its mean), so only MMD and sliced Wasserstein score its samples.
    """
    dist = gmm_nd_mixture(dim, n_modes, radius, std)
    info = {"family": "gaussian_mixture_nd", "components": int(n_modes), "dim": int(dim), "radius": float(radius),
            "std": float(std)}  # fmt: skip
    return _draw("gmm_nd", dist, info, n_train, n_test, torch.Generator().manual_seed(int(seed)), seed)


def _draw(name, dist, info, n_train, n_test, g, seed) -> Dataset:
    train = dist.sample(int(n_train), generator=g).float()
    test = dist.sample(int(n_test), generator=g).float()
    return Dataset(name, "toy", train, test, dist, {**info, "seed": int(seed)})
