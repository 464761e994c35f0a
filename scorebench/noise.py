"""Noise schedules (the σ levels) and weightings λ(σ).

A `Schedule` is what every loss, sampler and score-error metric needs to know about noise: the
levels σ_1 > ... > σ_L (largest first, the order annealed Langevin visits them), the weight λ(σ_i)
of each level in the training loss, and a suggested Langevin step size ε. Kinds and weightings are
registries by name, so ablating λ or L is a config edit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from scorebench.errors import ScorebenchError
from scorebench.ncsnv2_rules import max_pairwise_distance, ncsnv2_ratio, ncsnv2_step_size


@dataclass(frozen=True)
class Schedule:
    """σ levels (descending) with their loss weights.

    Attributes:
        sigmas: (L,) float64 tensor, strictly decreasing; `[0.0]` for the noiseless (`none`) schedule.
        weights: (L,) λ(σ_i) for the training loss.
        step_size: the annealed-Langevin ε this schedule suggests (NCSNv2's rule for `ncsnv2`), or None.
        kind, weighting: the registry names that built it, kept for provenance.
    """

    sigmas: torch.Tensor
    weights: torch.Tensor
    kind: str
    weighting: str
    step_size: float | None = None
    info: dict = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return int(self.sigmas.numel())

    @property
    def noiseless(self) -> bool:
        return bool(self.sigmas[-1] == 0)


# ---------------------------------------------------------------------------------------------
# weightings λ(σ)


def weighting_values(name: str, sigmas: torch.Tensor, exponent: float = 2.0) -> torch.Tensor:
    """λ(σ_i) for a weighting name: sigma2 (σ², NCSN's choice), sigma, uniform, power (σ^exponent)."""
    if name not in WEIGHTINGS:
        raise ScorebenchError(f"weighting: unknown {name!r}; choose one of {sorted(WEIGHTINGS)}")
    return WEIGHTINGS[name](sigmas, exponent)


WEIGHTINGS = {
    "sigma2": lambda s, p: s**2,
    "sigma": lambda s, p: s.clone(),
    "uniform": lambda s, p: torch.ones_like(s),
    "power": lambda s, p: s**p,
}


# ---------------------------------------------------------------------------------------------
# schedule kinds: each returns the σ list (descending)


def _check_range(sigma_max: float, sigma_min: float, levels: int) -> None:
    if not (sigma_min > 0):
        raise ScorebenchError(f"schedule.sigma_min: must be > 0, got {sigma_min}")
    if not (sigma_max > sigma_min):
        raise ScorebenchError(f"schedule.sigma_max: must be larger than sigma_min ({sigma_min}), got {sigma_max}")
    if int(levels) < 1:
        raise ScorebenchError(f"schedule.levels: must be >= 1, got {levels}")


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """L levels with a constant ratio from σ_max down to σ_min (NCSN); L=1 gives [σ_max]."""
    _check_range(sigma_max, sigma_min, levels)
    if levels == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), int(levels), dtype=torch.float64))


def linear_sigmas(sigma_max: float, sigma_min: float, levels: int) -> torch.Tensor:
    """L evenly spaced levels from σ_max down to σ_min; L=1 gives [σ_max]."""
    _check_range(sigma_max, sigma_min, levels)
    if levels == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    return torch.linspace(float(sigma_max), float(sigma_min), int(levels), dtype=torch.float64)


def explicit_sigmas(sigmas) -> torch.Tensor:
    """A user-given σ list; it must be positive and strictly decreasing (largest first)."""
    s = torch.as_tensor(list(sigmas), dtype=torch.float64)
    if s.numel() < 1:
        raise ScorebenchError("schedule.sigmas: the list is empty")
    if not torch.all(s > 0):
        raise ScorebenchError(f"schedule.sigmas: every σ must be > 0, got {s.tolist()}")
    if s.numel() > 1 and not torch.all(s[1:] < s[:-1]):
        raise ScorebenchError(f"schedule.sigmas: must be strictly decreasing (largest first), got {s.tolist()}")
    return s


# ---------------------------------------------------------------------------------------------


SCHEDULE_KINDS = ("none", "single", "geometric", "linear", "explicit", "ncsnv2")


def make_schedule(
    kind: str,
    *,
    weighting: str = "sigma2",
    exponent: float = 2.0,
    sigma: float | None = None,
    sigma_max: float | None = None,
    sigma_min: float | None = None,
    levels: int | None = None,
    sigmas=None,
    data: torch.Tensor | None = None,
    steps_per_level: int | Callable[[int], int] = 100,
    step_convention: str = "code",
) -> Schedule:
    """Build a schedule from its registry name and parameters.

    Args:
        kind: none | single | geometric | linear | explicit | ncsnv2.
        weighting: λ(σ) name (ignored for `none`, whose only level has weight 1).
        sigma: the level of `single`.
        sigma_max, sigma_min, levels: the range of `geometric` and `linear` (`ncsnv2` takes sigma_min);
            sigma_max may be "auto": the largest pairwise distance of `data`, exact over all of it (NCSNv2's σ_1 rule).
        sigmas: the list of `explicit`.
        data: training data, needed by `ncsnv2` (σ_1 = largest pairwise distance, γ from its dimension).
        steps_per_level: T of annealed Langevin, used by `ncsnv2`'s step-size rule; or a function of
            L giving T (a sampler's nfe_budget fixes T only once the data have fixed L).
        step_convention: the sampler's Langevin update form ("code" or "algorithm1", see
            scorebench/sampling.py); `ncsnv2`'s ε is the rule's minimiser in that form.
    """
    info: dict = {}
    step_size = None
    if kind == "none":
        return Schedule(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64), kind, "uniform")
    if kind == "single":
        if sigma is None or not sigma > 0:
            raise ScorebenchError(f"schedule.sigma: `single` needs a σ > 0, got {sigma}")
        s = torch.tensor([float(sigma)], dtype=torch.float64)
    elif kind in ("geometric", "linear"):
        if sigma_max == "auto":  # NCSNv2 technique 1: σ_1 = the largest distance between training points
            if data is None:
                raise ScorebenchError("schedule.sigma_max: `auto` needs the training data")
            sigma_max = max_pairwise_distance(data)
            info = {"derived_sigma_max": sigma_max}
        s = (geometric_sigmas if kind == "geometric" else linear_sigmas)(sigma_max, sigma_min, levels)
    elif kind == "explicit":
        s = explicit_sigmas(sigmas if sigmas is not None else [])
    elif kind == "ncsnv2":
        if data is None:
            raise ScorebenchError("schedule: `ncsnv2` needs the training data to set σ_1")
        s_min = float(sigma_min if sigma_min is not None else 0.01)
        s_max = max_pairwise_distance(data)
        dim = int(data[0].numel())
        gamma = ncsnv2_ratio(dim)
        n = max(1, int(math.ceil(math.log(s_max / s_min) / math.log(gamma))) + 1)
        s = geometric_sigmas(s_max, s_min, n) if n > 1 else torch.tensor([s_max], dtype=torch.float64)
        steps = steps_per_level(n) if callable(steps_per_level) else steps_per_level
        step_size = ncsnv2_step_size(s_min, gamma, int(steps), step_convention)
        info = {"gamma": gamma, "derived_levels": n, "derived_sigma_max": s_max}
    else:
        raise ScorebenchError(f"schedule.kind: unknown {kind!r}; choose one of {list(SCHEDULE_KINDS)}")
    return Schedule(s, weighting_values(weighting, s, exponent), kind, weighting, step_size, info)
