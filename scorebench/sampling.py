"""Langevin samplers that turn a score model into samples.

Three samplers share one signature,
`sampler(score_fn, x_init, sigmas, *, n_steps, step_size, generator=None, snapshot_every=0,
denoise=False, clip=None, cuda_graphs="off", **opts) -> SampleResult(samples, nfe, snapshots, graphed)`,
so the sample step of the workflow never branches on the method:

- `langevin`: plain Langevin dynamics at the smallest level σ_L (σ_L = 0: the data score). It is
  the baseline that shows why annealing is needed: it cannot reweight separated modes.
- `annealed_langevin`: NCSN Algorithm 1 (Song & Ermon 2019), largest σ first.
- `pc`: predictor–corrector for the variance-exploding SDE (Song et al. 2021): reverse-diffusion
  predictor between levels plus Langevin corrector steps with the signal-to-noise step size.

The step convention (`step_convention`), i.e. what a step number ε means in every Langevin update:
- "code" (the default): x ← x + ε·s(x, σ) + √(2ε)·z, the form of the seed tutorial and of both
  authors' codebases (ermongroup/ncsn runners/anneal_runner.py and ermongroup/ncsnv2
  models/__init__.py `anneal_Langevin_dynamics`: `x + step_size * grad + noise * sqrt(step_size * 2)`;
  score_sde's `LangevinCorrector` for pc), so the authors' `step_lr` (NCSN 2e-5, NCSNv2 CIFAR-10
  6.2e-6) means here what it means there;
- "algorithm1": x ← x + (ε/2)·s(x, σ) + √ε·z, the NCSN paper's Algorithm 1 as printed (and NCSN's toy
  runner). With the same noise draws it is the code form at ε/2: the same ε takes half the step.
Annealed: ε becomes α_i = ε·σ_i²/σ_L² at level i in either form. Every sample job records the form.

All randomness comes from `generator`, device and dtype come from `x_init`, and the loops never
read values back to the host (the score-evaluation count `nfe` is a Python int), so the same code
runs unchanged on CPU and GPU, on (B, 2) toy points and (B, C, H, W) images.

The step loop allocates nothing but the score itself: the chain, the noise buffer, the (B,) σ and
the two step coefficients are device tensors made once and updated in place (`randn(out=)`,
`addcmul_`), so a step is a fixed sequence of kernels. That is also what lets one step be captured
as a CUDA graph (`cuda_graphs`) and replayed, which removes the per-kernel launch cost that
dominates small toy models on a GPU.
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import torch

from scorebench.errors import ScorebenchError
from scorebench.ncsnv2_rules import check_step_convention

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CUDA_GRAPH_MODES = ("auto", "on", "off")
GRAPH_WARMUP_STEPS = 3  # eager runs on a side stream before capture (cuBLAS/cuDNN lazy init)

log = logging.getLogger("scorebench")


class SampleResult(NamedTuple):
    """What a sampler returns.

    Attributes:
        samples: final samples, same shape, dtype and device as `x_init`.
        nfe: number of score evaluations (the cost that samplers are compared by).
        snapshots: list of (level_index, step, x on CPU) when `snapshot_every` > 0, else [].
            The first entry is the start (0, 0, x_init); `step` counts updates over all levels.
        graphed: whether the steps ran as replays of a captured CUDA graph.
    """

    samples: torch.Tensor
    nfe: int
    snapshots: list
    graphed: bool = False


# ---------------------------------------------------------------------------------------------
# shared plumbing


class _Run:
    """The state every sampler shares: the chain, its noise source, nfe and snapshots.

    Keeping this in one place means each sampler body is only its update rule, written as a step
    function over the static buffers below: x ← x + drift·s(x, σ) + diffusion·z.
    """

    def __init__(self, score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip, cuda_graphs="off"):
        if not isinstance(x_init, torch.Tensor) or not x_init.is_floating_point() or x_init.dim() < 2:
            raise ScorebenchError("sampler x_init: need a floating-point tensor of shape (B, *shape)")
        if int(n_steps) < 0:
            raise ScorebenchError(f"sampler n_steps: must be >= 0, got {n_steps}")
        if int(snapshot_every) < 0:
            raise ScorebenchError(f"sampler snapshot_every: must be >= 0 (0 = none), got {snapshot_every}")
        if cuda_graphs not in CUDA_GRAPH_MODES:
            raise ScorebenchError(
                f"sampler cuda_graphs: unknown {cuda_graphs!r}; choose one of {list(CUDA_GRAPH_MODES)}"
            )
        self.score_fn = score_fn
        self.x = x_init.detach().clone()  # the chain, updated in place from here on
        self.batch = self.x.shape[0]
        self.sigmas64 = _check_sigmas(sigmas)  # float64, on the sigmas' own device, for step-size math
        self.sigmas = self.sigmas64.to(device=self.x.device, dtype=self.x.dtype)
        self.generator = _check_generator(generator, self.x)
        self.snapshot_every = int(snapshot_every)
        self.clip = _check_clip(clip)
        like = {"device": self.x.device, "dtype": self.x.dtype}
        self.z = torch.empty_like(self.x)  # the noise buffer
        self.sigma_b = torch.empty(self.batch, **like)  # σ of the current level as the (B,) models take
        self.drift = torch.zeros((), **like)  # coefficient of the score in the current step
        self.diffusion = torch.zeros((), **like)  # coefficient of the noise
        self.use_graphs = cuda_graphs != "off" and self.x.device.type == "cuda"
        self.graph_required = cuda_graphs == "on"
        self.graphs: dict = {}  # step function -> captured graph (None: capture failed, run eagerly)
        self.nfe = 0
        self.step = 0
        self.snapshots: list = []
        if self.snapshot_every:
            self.snapshots.append((0, 0, self.x.to("cpu", copy=True)))

    def set_level(self, level: int, drift=None, diffusion=None) -> None:
        """Point the static σ (and, if given, the step coefficients) at one level: device copies only."""
        self.sigma_b.copy_(self.sigmas[level].expand(self.batch))
        for buf, value in ((self.drift, drift), (self.diffusion, diffusion)):
            if isinstance(value, torch.Tensor):
                buf.copy_(value)
            elif value is not None:
                buf.fill_(float(value))

    def score(self) -> torch.Tensor:
        return self.score_fn(self.x, self.sigma_b)

    def noise(self) -> torch.Tensor:
        """Fresh N(0, I) in the preallocated buffer (the same stream as `torch.randn(x.shape)`)."""
        return torch.randn(self.x.shape, generator=self.generator, out=self.z)

    def langevin_step(self) -> None:
        """x ← x + drift·s(x, σ) + diffusion·z, in place (score first, then noise: the stream order)."""
        self.x.addcmul_(self.score(), self.drift)
        self.x.addcmul_(self.noise(), self.diffusion)
        self.clamp()

    def clamp(self) -> None:
        if self.clip is not None:
            self.x.clamp_(*self.clip)

    def repeat(self, step_fn, n: int, level: int) -> None:
        """Run `step_fn` (one score evaluation, in place) n times, as graph replays where asked."""
        graph = self._graph(step_fn) if self.use_graphs and n > 0 else None
        for _ in range(int(n)):
            if graph is not None:
                graph.replay()
            else:
                step_fn()
            self.nfe += 1
            self.step += 1
            if self.snapshot_every and self.step % self.snapshot_every == 0:
                self.snapshots.append((level, self.step, self.x.to("cpu", copy=True)))

    def _graph(self, step_fn):
        """One step captured as a CUDA graph, or None when capture fails (`auto` falls back to eager).

        Warm-up and capture must not move the chain or the random stream: both are saved and put
        back, so a graphed run draws the same numbers as an eager one (a registered generator's
        replays advance its offset exactly as the eager calls would).
        """
        if step_fn in self.graphs:
            return self.graphs[step_fn]
        x_saved, rng_saved = self.x.clone(), self.generator.get_state()
        graph = None
        try:
            side = torch.cuda.Stream(device=self.x.device)
            side.wait_stream(torch.cuda.current_stream(self.x.device))
            with torch.cuda.stream(side):
                for _ in range(GRAPH_WARMUP_STEPS):
                    step_fn()
            torch.cuda.current_stream(self.x.device).wait_stream(side)
            self.x.copy_(x_saved)
            self.generator.set_state(rng_saved)
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(self.generator)
            with torch.cuda.graph(graph):
                step_fn()
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run this step eagerly
            if self.graph_required:
                raise ScorebenchError(
                    f"sampler cuda_graphs: 'on' but one step could not be captured ({type(exc).__name__}: {exc}); "
                    "use auto or off"
                ) from None
            log.warning("sampler: CUDA graph capture failed (%s: %s); running eagerly", type(exc).__name__, exc)
            graph = None
        torch.cuda.synchronize(self.x.device)
        self.x.copy_(x_saved)
        self.generator.set_state(rng_saved)
        self.graphs[step_fn] = graph
        return graph

    def denoise(self) -> None:
        """Tweedie's step x + σ_L² s(x, σ_L): the posterior mean E[x_0 | x] under p_{σ_L}.

        NCSNv2 (Song & Ermon 2020) and Jolicoeur-Martineau et al. 2021 add it so that the
        final samples carry no visible σ_L noise. Counted in nfe, not as a step.
        """
        last = self.sigmas.shape[0] - 1
        self.set_level(last)
        self.nfe += 1
        self.x.addcmul_(self.score(), self.sigmas[last] ** 2)
        self.clamp()

    def result(self) -> SampleResult:
        return SampleResult(self.x, self.nfe, self.snapshots, any(g is not None for g in self.graphs.values()))


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


def langevin_coefficients(step, convention: str):
    """(drift, diffusion) of x ← x + drift·s + diffusion·z for step number(s) ε in `convention`:
    code (ε, √(2ε)); algorithm1 (ε/2, √ε). `step` is a float or a tensor of steps."""
    check_step_convention(convention)
    if convention == "code":
        return step, (2 * step) ** 0.5
    return 0.5 * step, step**0.5


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
    cuda_graphs: str = "off",
    step_convention: str = "code",
) -> SampleResult:
    """Plain Langevin dynamics x ← x + ε·s(x, σ) + √(2ε)·z (code form; algorithm1:
    x ← x + (ε/2)·s(x, σ) + √ε·z) at one level σ = sigmas[-1].

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
        cuda_graphs: "off", "auto" (on CUDA, capture one step as a CUDA graph and replay it; run
            eagerly if capture fails) or "on" (as auto, but a failed capture is an error). Ignored
            on CPU. Graph replays draw the same random numbers as eager steps.
        step_convention: "code" (the authors' codebases, default) or "algorithm1" (NCSN's printed
            Algorithm 1, half the step for the same ε); see the module docstring.

    Returns:
        SampleResult(samples, nfe = n_steps (+1 with denoise), snapshots, graphed).
    """
    eps = _check_step_size(step_size)
    drift, diffusion = langevin_coefficients(eps, step_convention)
    run = _Run(score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip, cuda_graphs)
    level = run.sigmas.shape[0] - 1
    run.set_level(level, drift=drift, diffusion=diffusion)
    run.repeat(run.langevin_step, n_steps, level)
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
    cuda_graphs: str = "off",
    step_convention: str = "code",
) -> SampleResult:
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Algorithm 1; NCSNv2's Algorithm 1).

    For each level i (largest σ first), T = n_steps steps x ← x + α_i·s(x, σ_i) + √(2α_i)·z (code
    form, the authors' `anneal_Langevin_dynamics`; algorithm1: x ← x + (α_i/2)·s + √α_i·z) with
    α_i = ε·σ_i²/σ_L². Large σ first lets the chain cross between modes while they still overlap,
    so mode weights come out right; the optional final denoising step follows NCSNv2.

    Args:
        score_fn, x_init, generator, snapshot_every, clip, cuda_graphs, step_convention: as in `langevin`.
        sigmas: (L,) descending levels (σ_L = 0 allowed: then α_i = ε at every level).
        n_steps: T, steps per level.
        step_size: ε, the step at the smallest level.
        denoise: finish with x + σ_L²·s(x, σ_L).

    Returns:
        SampleResult(samples, nfe = L·T (+1 with denoise), snapshots, graphed).
    """
    alphas = annealed_step_sizes(sigmas, step_size)
    run = _Run(score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip, cuda_graphs)
    alphas = alphas.to(device=run.x.device, dtype=run.x.dtype)
    drifts, noise_scales = langevin_coefficients(alphas, step_convention)  # every level's, made once
    for level in range(run.sigmas.shape[0]):
        run.set_level(level, drift=drifts[level], diffusion=noise_scales[level])
        run.repeat(run.langevin_step, n_steps, level)
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
    cuda_graphs: str = "off",
    snr: float = 0.16,
    step_convention: str = "code",
) -> SampleResult:
    """Predictor–corrector sampling of the variance-exploding SDE (Song et al. 2021, Alg. 2 & 4).

    At each level i: `n_steps` Langevin corrector steps at σ_i, then (except after the last level)
    a reverse-diffusion predictor step to σ_{i+1}:
    x ← x + (σ_i² − σ_{i+1}²)·s(x, σ_i) + √(σ_i² − σ_{i+1}²)·z. `n_steps = 0` is predictor only.

    The corrector step is x ← x + ε·s + √(2ε)·z (code form; algorithm1: x ← x + (ε/2)·s + √ε·z) with
    ε = 2·(snr·‖z‖/‖s‖)², the norms averaged over the batch as in the authors' code (score_sde
    `LangevinCorrector`, which uses the code form). A per-sample ε would depend on
    x and bias the chain: its continuous-time limit has stationary density ∝ p(x)/ε(x) ∝ p·‖∇log p‖²,
    which vanishes at the modes; a step shared by the whole batch keeps p stationary.

    Args:
        score_fn, x_init, generator, snapshot_every, clip, cuda_graphs: as in `langevin`; start from the VE prior
            N(0, σ_1² I) (see `initial_samples(kind="gaussian")`).
        sigmas: (L,) descending levels, σ_L > 0 for the corrector (the SNR step needs a score).
        n_steps: corrector steps per level (0: none).
        step_size: unused (the corrector sets its own from `snr`); accepted for the shared signature.
        denoise: finish with x + σ_L²·s(x, σ_L) — the noise-free last predictor step to σ = 0.
        snr: target signal-to-noise ratio r of the corrector (0.16 for CIFAR-10 in Song et al. 2021).
        step_convention: the corrector's update form, as in `langevin` (the predictor is not a
            Langevin step and is the same in both).

    Returns:
        SampleResult(samples, nfe = L·n_steps + (L − 1) (+1 with denoise), snapshots, graphed); a step is
        any corrector or predictor update.
    """
    if not float(snr) > 0:
        raise ScorebenchError(f"sampler snr: must be > 0, got {snr}")
    code_form = check_step_convention(step_convention) == "code"
    run = _Run(score_fn, x_init, sigmas, n_steps, generator, snapshot_every, clip, cuda_graphs)
    s64 = run.sigmas64
    drops = (s64[:-1] ** 2 - s64[1:] ** 2).to(device=run.x.device, dtype=run.x.dtype)  # σ_i² − σ_{i+1}²
    drop_scales = drops.sqrt()
    snr2x2 = 2.0 * float(snr) ** 2
    tiny = torch.finfo(run.x.dtype).tiny

    def corrector_step():
        # ε = 2 (r ‖z‖ / ‖s‖)², norms averaged over the batch; code: drift ε, diffusion √(2ε);
        # algorithm1: drift ε/2, diffusion √ε
        grad = run.score()
        z = run.noise()
        grad_norm = torch.linalg.vector_norm(grad.reshape(run.batch, -1), dim=1).mean()
        noise_norm = torch.linalg.vector_norm(z.reshape(run.batch, -1), dim=1).mean()
        torch.div(noise_norm, grad_norm.clamp_min_(tiny), out=run.drift)
        run.drift.square_().mul_(snr2x2)
        if code_form:
            torch.mul(run.drift, 2.0, out=run.diffusion).sqrt_()
        else:
            torch.sqrt(run.drift, out=run.diffusion)
            run.drift.mul_(0.5)
        run.x.addcmul_(grad, run.drift)
        run.x.addcmul_(z, run.diffusion)
        run.clamp()

    levels = run.sigmas.shape[0]
    for level in range(levels):
        run.set_level(level)
        run.repeat(corrector_step, n_steps, level)
        if level + 1 < levels:  # predictor to the next level
            run.set_level(level, drift=drops[level], diffusion=drop_scales[level])
            run.repeat(run.langevin_step, 1, level)
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


def chain_starts(dataset, n: int, *, kind: str, sigma_max: float, generator, device) -> torch.Tensor:
    """Where a sample job's chains start: N(0, σ_1²) for pc (the VE SDE prior); else uniform over
    [0, 1] for images (NCSN; mapped into the data set's model space when it is rescaled or
    logit-transformed) and over the training data's bounding box (+20 % margin) for toys."""
    if kind == "pc" and sigma_max > 0:
        return initial_samples(dataset.shape, n, "gaussian", sigma=sigma_max, generator=generator, device=device)
    u = initial_samples(dataset.shape, n, "uniform", generator=generator, device=device)
    if dataset.kind == "image":  # U[0, 1] images, in the data set's model space (data/transforms.py)
        return dataset.to_model(u) if hasattr(dataset, "to_model") else u
    lo = dataset.train.min(0).values.to(device)
    hi = dataset.train.max(0).values.to(device)
    pad = 0.2 * (hi - lo)
    return (lo - pad) + (hi - lo + 2 * pad) * u


__all__ = [
    "SAMPLERS",
    "SampleResult",
    "annealed_langevin",
    "annealed_step_sizes",
    "chain_starts",
    "get_sampler",
    "initial_samples",
    "langevin",
    "langevin_coefficients",
    "pc",
]
