"""NCSNv2's rules for the noise levels and the sampler's step (Song & Ermon 2020, Sec. 3-4).

- Technique 1, σ₁: as large as the largest Euclidean distance between two training points, so the
  chain can travel between any two modes at the first level. `max_pairwise_distance` computes it
  exactly over the whole training set (chunked, with a pruning bound so most pairs are never
  formed); `pairwise_distance_bounds` gives the O(N) bracket it starts from.
- Technique 2, γ = σ_{i-1}/σ_i: Gaussians of adjacent levels overlap enough (`ncsnv2_ratio`).
- Technique 4, ε: with T steps per level fixed, the ε that makes the variance ratio s_T²/σ_i² of
  annealed Langevin on a Gaussian target "maximally close to 1" (`ncsnv2_step_size`).

Technique 4's ratio, the paper's Eq. 4 (Prop. 3). Target p_σ = N(0, σ² I) (data a point mass),
so s(x, σ_i) = −x/σ_i². The chain enters level i with variance σ_{i-1}² = γ² σ_i² and takes T
steps of α_i = ε σ_i²/σ_L². In the authors' code form x ← x + α s + √(2α) z (their
`anneal_Langevin_dynamics`, models/__init__.py of ermongroup/ncsnv2), with u = ε/σ_L²:
    x ← (1 − u) x + √(2α) z,  v_T = (1 − u)^{2T} (v_0 − v*) + v*,  v*/σ_i² = 2u/(1 − (1 − u)²)
    s_T²/σ_i² = (1 − u)^{2T} (γ² − 2u/(1 − (1 − u)²)) + 2u/(1 − (1 − u)²)
which is Eq. 4 with ε/σ_L² for u. In NCSN's Algorithm-1 form x ← x + (α/2) s + √α z the same
step number ε moves the chain like ε/2 does in the code form, so there the ratio is the code
form's at ε/2 and the rule's ε is twice the code form's.

Since 2u/(1 − (1 − u)²) = 2/(2 − u) > 1 and γ > 1, the ratio exceeds 1 for every ε: Eq. 4 = 1 has
no root, and "maximally close to 1" is the minimiser. It is found by bounded Brent in log ε to a
relative tolerance of 1e-10 (STEP_RTOL). At the authors' published settings it gives their
step_lr: CIFAR-10 (σ 50 → 0.01, L 232, T 5) 6.18e-6 (configs/cifar10.yml: 6.2e-6), CelebA
(σ 90 → 0.01, L 500, T 5) 3.34e-6 (configs/celeba.yml: 3.3e-6), both in the code form.
"""

from __future__ import annotations

import math

from scorebench.errors import ScorebenchError

STEP_CONVENTIONS = ("code", "algorithm1")
STEP_RTOL = 1e-10  # relative tolerance of the ε minimiser (Brent, in log ε)


def check_step_convention(convention: str) -> str:
    if convention not in STEP_CONVENTIONS:
        raise ScorebenchError(f"step_convention: unknown {convention!r}; choose one of {list(STEP_CONVENTIONS)}")
    return convention


def _std_normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def ncsnv2_ratio(dim: int, target: float = 0.5) -> float:
    """Technique 2: the ratio γ = σ_{i-1}/σ_i for which Gaussians of adjacent levels overlap.

    Solves Φ(√(2D)(γ-1) + 3γ) - Φ(√(2D)(γ-1) - 3γ) = target by bisection (the left side falls with γ).
    """

    def overlap(g: float) -> float:
        a = math.sqrt(2.0 * dim) * (g - 1.0)
        return _std_normal_cdf(a + 3.0 * g) - _std_normal_cdf(a - 3.0 * g)

    lo, hi = 1.0 + 1e-9, 100.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if overlap(mid) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def ncsnv2_variance_ratio(step_size: float, sigma_min: float, gamma: float, steps_per_level: int,
                          convention: str = "code") -> float:  # fmt: skip
    """Eq. 4: s_T²/σ_i² after T annealed-Langevin steps of step number ε (in `convention`) on a
    Gaussian target, entering the level with variance γ²σ_i². Independent of the level i."""
    check_step_convention(convention)
    u = float(step_size) / float(sigma_min) ** 2
    if convention == "algorithm1":
        u /= 2.0
    if not 0.0 < u < 2.0:
        raise ScorebenchError(f"ncsnv2 rule: ε/σ_L² must lie in (0, 2) in the code form, got {u:g}")
    stationary = 2.0 / (2.0 - u)  # 2u/(1 − (1 − u)²)
    return (1.0 - u) ** (2 * int(steps_per_level)) * (gamma**2 - stationary) + stationary


def ncsnv2_step_size(sigma_min: float, gamma: float, steps_per_level: int, convention: str = "code") -> float:
    """Technique 4: the ε (in `convention`) minimising Eq. 4, to a relative tolerance of STEP_RTOL."""
    from scipy.optimize import minimize_scalar

    check_step_convention(convention)
    if int(steps_per_level) < 1 or not gamma > 1 or not sigma_min > 0:
        raise ScorebenchError(
            f"ncsnv2 rule: needs T >= 1, γ > 1 and σ_L > 0, got T={steps_per_level}, γ={gamma}, σ_L={sigma_min}"
        )
    T = int(steps_per_level)

    def ratio(log_u: float) -> float:  # in the code form, u = ε/σ_L² ∈ (0, 1]
        u = math.exp(log_u)
        return (1.0 - u) ** (2 * T) * (gamma**2 - 2.0 / (2.0 - u)) + 2.0 / (2.0 - u)

    res = minimize_scalar(ratio, bounds=(math.log(1e-14), 0.0), method="bounded", options={"xatol": STEP_RTOL})
    if not res.success:
        raise ScorebenchError(f"ncsnv2 rule: the ε minimiser did not converge ({res.message})")
    u = math.exp(res.x)
    return u * float(sigma_min) ** 2 * (2.0 if convention == "algorithm1" else 1.0)


def _flat(data: torch.Tensor) -> torch.Tensor:
    import torch

    return data.reshape(data.shape[0], -1).to(torch.float64)


def pairwise_distance_bounds(data: torch.Tensor) -> tuple[float, float]:
    """A bracket lower ≤ max_{i,j} ‖x_i − x_j‖ ≤ upper in O(N): lower from two farthest-point sweeps
    (start at the point farthest from the mean, go to the point farthest from it, and once more);
    upper = the two largest distances to the mean added (triangle inequality)."""
    import torch  # here, so the config check (budgets.py) imports no torch

    x = _flat(data)
    if x.shape[0] < 2:
        return 0.0, 0.0
    to_mean = torch.linalg.vector_norm(x - x.mean(0), dim=1)
    a = int(to_mean.argmax())
    lower = 0.0
    for _ in range(2):
        d = torch.linalg.vector_norm(x - x[a], dim=1)
        a = int(d.argmax())
        lower = max(lower, float(d[a]))
    top2 = torch.topk(to_mean, 2).values
    return lower, float(top2.sum())


def max_pairwise_distance(data: torch.Tensor, chunk: int = 2048) -> float:
    """Technique 1: max_{i,j} ‖x_i − x_j‖ over the whole training set, exact (float64).

    Pruning: with m the mean, R = max_i ‖x_i − m‖ and a lower bound ℓ on the answer, a pair can beat ℓ
    only if both its points lie farther than ℓ − R from m (‖x_i − x_j‖ ≤ ‖x_i − m‖ + R). Only those
    candidates are compared, all pairs of them, in chunks of `chunk` rows (memory chunk² floats),
    by ‖a‖² + ‖b‖² − 2a·b in float64 (the largest distance is then recomputed directly).
    """
    import torch  # here, so the config check (budgets.py) imports no torch

    x = _flat(data)
    if x.shape[0] < 2:
        return 0.0
    lower, _ = pairwise_distance_bounds(x)
    to_mean = torch.linalg.vector_norm(x - x.mean(0), dim=1)
    cand = x[to_mean > lower - float(to_mean.max()) - 1e-9 * max(lower, 1.0)]
    sq = (cand * cand).sum(1)
    best, pair = -1.0, (0, 0)
    for i in range(0, cand.shape[0], chunk):
        a, sa = cand[i : i + chunk], sq[i : i + chunk]
        for j in range(i, cand.shape[0], chunk):  # the upper triangle of chunks: each pair once
            d2 = sa[:, None] + sq[None, j : j + chunk] - 2.0 * a @ cand[j : j + chunk].T
            k = int(d2.argmax())
            if float(d2.view(-1)[k]) > best:
                best, pair = float(d2.view(-1)[k]), (i + k // d2.shape[1], j + k % d2.shape[1])
    exact = float(torch.linalg.vector_norm(cand[pair[0]] - cand[pair[1]]))
    return max(exact, lower)
