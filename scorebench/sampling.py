"""Langevin samplers that turn a score model into samples.

Three samplers share one signature,
`sampler(score_fn, x_init, sigmas, *, n_steps, step_size, generator=None, snapshot_every=0,
denoise=False, **opts) -> SampleResult(samples, nfe, snapshots)`, so the sample step of the
workflow never branches on the method:

- `langevin`: plain Langevin dynamics at the smallest level σ_L (σ_L = 0: the data score). It is
  the baseline that shows why annealing is needed: it cannot reweight separated modes.
- `annealed_langevin`: NCSN Algorithm 1 (Song & Ermon 2019), largest σ first.
- `pc`: predictor–corrector for the variance-exploding SDE (Song et al. 2021): reverse-diffusion
  predictor between levels plus Langevin corrector steps with the signal-to-noise step size.

All randomness comes from `generator`, device and dtype come from `x_init`, and the loops never
read values back to the host (the score-evaluation count `nfe` is a Python int), so the same code
runs unchanged on CPU and GPU, on (B, 2) toy points and (B, C, H, W) images.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from scorebench.errors import ScorebenchError
from scorebench.tensors import flat_sum

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SampleResult(NamedTuple):
    """What a sampler returns.

    Attributes:
        samples: final samples, same shape, dtype and device as `x_init`.
        nfe: number of score evaluations (the cost that samplers are compared by).
        snapshots: list of (level_index, step, x on CPU) when `snapshot_every` > 0, else [].
            The first entry is the start (0, 0, x_init); `step` counts updates over all levels.
    """

    samples: torch.Tensor
    nfe: int
    snapshots: list


# ---------------------------------------------------------------------------------------------
# shared plumbing


class _Run:
    """The state every sampler shares: the chain, its noise source, nfe and snapshots.

    Keeping this in one place means each sampler body is only its update rule.
    """

    def __init__(self, score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip):
        if not isinstance(x_init, torch.Tensor) or not x_init.is_floating_point() or x_init.dim() < 2:
            raise ScorebenchError("sampler x_init: need a floating-point tensor of shape (B, *shape)")
        if int(n_steps) < 0:
            raise ScorebenchError(f"sampler n_steps: must be >= 0, got {n_steps}")
        if int(snapshot_every) < 0:
            raise ScorebenchError(f"sampler snapshot_every: must be >= 0 (0 = none), got {snapshot_every}")
        self.score_fn = score_fn
        self.x = x_init.detach().clone()
        self.batch = self.x.shape[0]
        self.sigmas64 = _check_sigmas(sigmas)  # float64, on the sigmas' own device, for step-size math
        self.sigmas = self.sigmas64.to(device=self.x.device, dtype=self.x.dtype)
        self.generator = _check_generator(generator, self.x)
        self.snapshot_every = int(snapshot_every)
        self.clip = _check_clip(clip)
        self.nfe = 0
        self.step = 0
        self.snapshots: list = []
        if self.snapshot_every:
            self.snapshots.append((0, 0, self.x.to("cpu", copy=True)))

    def sigma_batch(self, level: int) -> torch.Tensor:
        """σ of one level as the (B,) tensor in x's dtype that score models take."""
        return self.sigmas[level].expand(self.batch).contiguous()

    def score(self, sigma_b: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.score_fn(self.x, sigma_b)

    def noise(self) -> torch.Tensor:
        return torch.randn(self.x.shape, generator=self.generator, device=self.x.device, dtype=self.x.dtype)

    def update(self, x_new: torch.Tensor, level: int) -> None:
        """Accept one update: clip if asked, count the step, keep a snapshot when due."""
        self.x = x_new.clamp(*self.clip) if self.clip is not None else x_new
        self.step += 1
        if self.snapshot_every and self.step % self.snapshot_every == 0:
            self.snapshots.append((level, self.step, self.x.to("cpu", copy=True)))

    def denoise(self) -> None:
        """Tweedie's step x + σ_L² s(x, σ_L): the posterior mean E[x_0 | x] under p_{σ_L}.

        NCSNv2 (Song & Ermon 2020) and Jolicoeur-Martineau et al. 2021 add it so that the
        final samples carry no visible σ_L noise. Counted in nfe, not as a step.
        """
        last = self.sigmas.shape[0] - 1
        x_new = self.x + self.sigmas[last] ** 2 * self.score(self.sigma_batch(last))
        self.x = x_new.clamp(*self.clip) if self.clip is not None else x_new

    def result(self) -> SampleResult:
        return SampleResult(self.x, self.nfe, self.snapshots)


def _check_sigmas(sigmas) -> torch.Tensor:
    s = torch.as_tensor(sigmas, dtype=torch.float64)
    if s.dim() != 1 or s.numel() < 1:
        raise ScorebenchError(f"sampler sigmas: need a non-empty 1-D list of levels, got shape {tuple(s.shape)}")
    # one check before the loop (a single host read), never inside it
    if not bool(torch.all(s >= 0)) or (s.numel() > 1 and not bool(torch.all(s[1:] < s[:-1]))):
        raise ScorebenchError(f"sampler sigmas: must be >= 0 and strictly decreasing (largest first), got {s.tolist()}")
    return s


def _check_generator(generator, x: torch.Tensor) -> torch.Generator:
    """The noise source; None gets a fresh generator with a fixed seed, never the global RNG."""
    if generator is None:
        return torch.Generator(device=x.device).manual_seed(0)
    if generator.device.type != x.device.type:
        raise ScorebenchError(
            f"sampler generator: lives on {generator.device.type} but x_init on {x.device.type}; "
            "create it with torch.Generator(device=x_init.device)"
        )
    return generator


def _check_clip(clip):
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ScorebenchError(f"sampler clip: need None or a pair (low, high), got {clip!r}") from None
    if not lo < hi:
        raise ScorebenchError(f"sampler clip: need low < high, got {clip!r}")
    return lo, hi


def _check_step_size(step_size) -> float:
    if step_size is None or not float(step_size) > 0:
        raise ScorebenchError(f"sampler step_size: must be > 0, got {step_size}")
    return float(step_size)


# ---------------------------------------------------------------------------------------------
# samplers


@torch.no_grad()
def langevin(
    score_fn: ScoreFn,
    x_init: torch.Tensor,
    sigmas,
    *,
    n_steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
    snapshot_every: int = 0,
    denoise: bool = False,
    clip=None,
) -> SampleResult:
    """Plain Langevin dynamics x ← x + (ε/2)·s(x, σ) + √ε·z at one level σ = sigmas[-1].

    With the exact data score it samples p correctly only within a mode: separated modes are
    never reweighted in finite time, the failure that motivates annealing (Song & Ermon 2019, Fig. 3).

    Args:
        score_fn: `score_fn(x, sigma_batch)` -> estimate of ∇ₓ log p_σ(x), x's shape.
        x_init: (B, *shape) start; sets device and dtype.
        sigmas: (L,) descending levels; only the last (smallest, may be 0) is used.
        n_steps: number of Langevin steps.
        step_size: ε.
        generator: torch.Generator on x_init's device (None: a fresh one seeded 0).
        snapshot_every: keep x every this many steps (0: none).
        denoise: finish with x + σ_L²·s(x, σ_L) (a no-op when σ_L = 0, still one evaluation).
        clip: None or (low, high) to clamp x after every update (e.g. (0, 1) for images).

    Returns:
        SampleResult(samples, nfe = n_steps (+1 with denoise), snapshots).
    """
    eps = _check_step_size(step_size)
    run = _Run(score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip)
    level = run.sigmas.shape[0] - 1
    sigma_b = run.sigma_batch(level)
    for _ in range(int(n_steps)):
        run.update(run.x + 0.5 * eps * run.score(sigma_b) + eps**0.5 * run.noise(), level)
    if denoise:
        run.denoise()
    return run.result()


def annealed_step_sizes(sigmas, step_size: float) -> torch.Tensor:
    """NCSN's α_i = ε·σ_i²/σ_L² (equal signal-to-noise at every level); α_i = ε if σ_L = 0.

    Returns:
        (L,) float64 tensor on the sigmas' device.
    """
    s = _check_sigmas(sigmas)
    eps = _check_step_size(step_size)
    s_last = s[-1]
    return torch.where(s_last > 0, eps * s**2 / torch.where(s_last > 0, s_last, 1.0) ** 2, torch.full_like(s, eps))


@torch.no_grad()
def annealed_langevin(
    score_fn: ScoreFn,
    x_init: torch.Tensor,
    sigmas,
    *,
    n_steps: int,
    step_size: float,
    generator: torch.Generator | None = None,
    snapshot_every: int = 0,
    denoise: bool = False,
    clip=None,
) -> SampleResult:
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1).

    For each level i (largest σ first), T = n_steps steps x ← x + (α_i/2)·s(x, σ_i) + √α_i·z with
    α_i = ε·σ_i²/σ_L². Large σ first lets the chain cross between modes while they still overlap,
    so mode weights come out right; the optional final denoising step follows NCSNv2.

    Args:
        score_fn, x_init, generator, snapshot_every, clip: as in `langevin`.
        sigmas: (L,) descending levels (σ_L = 0 allowed: then α_i = ε at every level).
        n_steps: T, steps per level.
        step_size: ε, the step at the smallest level.
        denoise: finish with x + σ_L²·s(x, σ_L).

    Returns:
        SampleResult(samples, nfe = L·T (+1 with denoise), snapshots).
    """
    alphas = annealed_step_sizes(sigmas, step_size)
    run = _Run(score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip)
    alphas = alphas.to(device=run.x.device, dtype=run.x.dtype)
    noise_scales = alphas.sqrt()
    for level in range(run.sigmas.shape[0]):
        sigma_b = run.sigma_batch(level)
        half_alpha, noise_scale = 0.5 * alphas[level], noise_scales[level]
        for _ in range(int(n_steps)):
            run.update(run.x + half_alpha * run.score(sigma_b) + noise_scale * run.noise(), level)
    if denoise:
        run.denoise()
    return run.result()


@torch.no_grad()
def pc(
    score_fn: ScoreFn,
    x_init: torch.Tensor,
    sigmas,
    *,
    n_steps: int,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    snapshot_every: int = 0,
    denoise: bool = False,
    clip=None,
    snr: float = 0.16,
) -> SampleResult:
    """Predictor–corrector sampling of the variance-exploding SDE (Song et al. 2021, Alg. 2 & 4).

    At each level i: `n_steps` Langevin corrector steps at σ_i, then (except after the last level)
    a reverse-diffusion predictor step to σ_{i+1}:
    x ← x + (σ_i² − σ_{i+1}²)·s(x, σ_i) + √(σ_i² − σ_{i+1}²)·z. `n_steps = 0` is predictor only.

    The corrector step is x ← x + ε·s + √(2ε)·z with ε = 2·(snr·‖z‖/‖s‖)², the norms averaged over
    the batch as in the authors' code (score_sde `LangevinCorrector`). A per-sample ε would depend on
    x and bias the chain: its continuous-time limit has stationary density ∝ p(x)/ε(x) ∝ p·‖∇log p‖²,
    which vanishes at the modes; a step shared by the whole batch keeps p stationary.

    Args:
        score_fn, x_init, generator, snapshot_every, clip: as in `langevin`; start from the VE prior
            N(0, σ_1² I) (see `initial_samples(kind="gaussian")`).
        sigmas: (L,) descending levels, σ_L > 0 for the corrector (the SNR step needs a score).
        n_steps: corrector steps per level (0: none).
        step_size: unused (the corrector sets its own from `snr`); accepted for the shared signature.
        denoise: finish with x + σ_L²·s(x, σ_L) — the noise-free last predictor step to σ = 0.
        snr: target signal-to-noise ratio r of the corrector (0.16 for CIFAR-10 in Song et al. 2021).

    Returns:
        SampleResult(samples, nfe = L·n_steps + (L − 1) (+1 with denoise), snapshots); a step is
        any corrector or predictor update.
    """
    if not float(snr) > 0:
        raise ScorebenchError(f"sampler snr: must be > 0, got {snr}")
    run = _Run(score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip)
    s64 = run.sigmas64
    drops = (s64[:-1] ** 2 - s64[1:] ** 2).to(device=run.x.device, dtype=run.x.dtype)  # σ_i² − σ_{i+1}²
    drop_scales = drops.sqrt()
    snr2x2 = 2.0 * float(snr) ** 2
    levels = run.sigmas.shape[0]
    for level in range(levels):
        sigma_b = run.sigma_batch(level)
        for _ in range(int(n_steps)):  # corrector
            grad = run.score(sigma_b)
            z = run.noise()
            grad_norm = flat_sum(grad**2).sqrt().mean()
            noise_norm = flat_sum(z**2).sqrt().mean()
            eps = snr2x2 * (noise_norm / grad_norm.clamp_min(torch.finfo(grad.dtype).tiny)) ** 2
            run.update(run.x + eps * grad + (2.0 * eps).sqrt() * z, level)
        if level + 1 < levels:  # predictor to the next level
            grad = run.score(sigma_b)
            run.update(run.x + drops[level] * grad + drop_scales[level] * run.noise(), level)
    if denoise:
        run.denoise()
    return run.result()


SAMPLERS = {"langevin": langevin, "annealed_langevin": annealed_langevin, "pc": pc}


def get_sampler(name: str):
    """The sampler function registered under `name`; unknown names fail listing the choices."""
    if name not in SAMPLERS:
        raise ScorebenchError(f"sampler: unknown {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


# ---------------------------------------------------------------------------------------------
# starting points


INITIAL_KINDS = ("uniform", "gaussian")


def initial_samples(
    shape,
    n: int,
    kind: str = "uniform",
    *,
    low: float = 0.0,
    high: float = 1.0,
    sigma: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Starting points x_init for a sampler, shape (n, *shape).

    Args:
        shape: per-sample shape, e.g. (2,) or (1, 28, 28).
        n: number of chains.
        kind: "uniform" in the box [low, high] (NCSN starts images from U[0, 1]) or "gaussian"
            N(0, σ² I) (the VE SDE prior with σ = σ_1, Song et al. 2021).
        generator: noise source on `device` (None: a fresh one seeded 0, never the global RNG).
        dtype, device: of the result (device defaults to the generator's).

    Returns:
        (n, *shape) tensor.
    """
    if kind not in INITIAL_KINDS:
        raise ScorebenchError(f"sampler init: unknown kind {kind!r}; choose one of {list(INITIAL_KINDS)}")
    if int(n) < 1:
        raise ScorebenchError(f"sampler init: need n >= 1 samples, got {n}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(0)
    size = (int(n), *tuple(int(d) for d in shape))
    if kind == "uniform":
        if not float(low) < float(high):
            raise ScorebenchError(f"sampler init: need low < high for a uniform start, got [{low}, {high}]")
        u = torch.rand(size, generator=generator, device=device, dtype=dtype)
        return float(low) + (float(high) - float(low)) * u
    if not float(sigma) > 0:
        raise ScorebenchError(f"sampler init: need sigma > 0 for a Gaussian start, got {sigma}")
    return float(sigma) * torch.randn(size, generator=generator, device=device, dtype=dtype)


__all__ = [
    "SAMPLERS",
    "SampleResult",
    "annealed_langevin",
    "annealed_step_sizes",
    "get_sampler",
    "initial_samples",
    "langevin",
    "pc",
]
