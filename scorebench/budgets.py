"""A sampler's cost and step, written once for the config check and the sample job.

Three facts of a sampler preset on a schedule, each needed both when a config is read
(scorebench/checks.py, before any job) and when the chains run (scorebench/components.py, in the
sample job), so they live here, below both, in plain Python (no torch at import):

- `nfe_per_chain`: the network evaluations one chain takes (scorebench.sampling's counts);
- `steps_per_level`: the T a preset runs per level, either its `n_steps` or derived from its
  `nfe_budget` (matched NFE across schedules with different L);
- `resolve_step_size`: ε and the rule that gave it ("explicit", "ncsnv2", "ratio", "noiseless");
- `relaxation`: R, how far a chain can relax over the data's scale (the convergence check).

Step numbers are in the sampler's `step_convention` (scorebench/sampling.py): code
x ← x + ε·s + √(2ε)·z, or algorithm1 x ← x + (ε/2)·s + √ε·z, half the step for the same ε.
"""

from __future__ import annotations

import math

STEP_RULES = ("explicit", "ncsnv2", "ratio", "noiseless")  # what `resolve_step_size` may answer


def predictor_evals(kind: str, levels: int) -> int:
    """Network evaluations of a chain besides its Langevin steps and the final denoising: pc's
    predictor steps between levels (L − 1); none for langevin and annealed_langevin."""
    return levels - 1 if kind == "pc" else 0


def nfe_per_chain(kind: str, levels: int, n_steps: int, denoise: bool) -> int:
    """Score-network evaluations of one chain of a sampler (scorebench.sampling's counts): langevin
    runs T steps at σ_L; annealed Langevin T per level; pc one predictor step per level after the
    first plus T corrector steps per level; denoising adds one."""
    steps = {"langevin": n_steps, "annealed_langevin": levels * n_steps, "pc": levels * n_steps}[kind]
    return steps + predictor_evals(kind, levels) + int(denoise)


def steps_per_level(kind: str, levels: int, n_steps: int, nfe_budget: int | None, denoise: bool) -> int:
    """T, the Langevin (pc: corrector) steps per level a sampler preset runs on a schedule of L levels.

    With `nfe_budget` null, T is the preset's `n_steps`. With a budget B, T is the largest T whose
    chain takes at most B evaluations (`nfe_per_chain`), d = 1 with denoising:
    langevin T = B − d; annealed_langevin T = ⌊(B − d)/L⌋; pc T = ⌊(B − (L − 1) − d)/L⌋.
    The result may be < 1 (a budget too small for the schedule): the callers refuse it.
    """
    if nfe_budget is None:
        return int(n_steps)
    spare = int(nfe_budget) - predictor_evals(kind, levels) - int(denoise)
    return spare if kind == "langevin" else spare // int(levels)


def geometric_mean_ratio(sigmas) -> float:
    """γ = (σ_1/σ_L)^(1/(L−1)), the geometric mean ratio of consecutive levels (L ≥ 2, σ_L > 0)."""
    return (float(sigmas[0]) / float(sigmas[-1])) ** (1.0 / (len(sigmas) - 1))


def resolve_step_size(sampler: dict, sigmas, steps: int, schedule_step_size: float | None = None) -> tuple[float, str]:
    """(ε, rule) of a sampler preset on a schedule's σ list (largest first) with T = `steps` per level.

    In this order: `step_size` set: ("explicit"); σ_L = 0 (a model trained without noise):
    `noiseless_step_size` ("noiseless"); a schedule with its own rule (kind ncsnv2 hands its ε as
    `schedule_step_size`): ("ncsnv2"); `step_rule: ncsnv2` for annealed_langevin and pc with L ≥ 2
    and T ≥ 1: NCSNv2's Eq. 4 minimiser for σ_L, γ = geometric_mean_ratio(sigmas) and T, in the
    sampler's step_convention ("ncsnv2"); else `step_ratio`·σ_L² ("ratio"), which is also what plain
    langevin and every one-level schedule get.
    """
    if sampler["step_size"] is not None:
        return float(sampler["step_size"]), "explicit"
    sigma_min = float(sigmas[-1])
    if sigma_min == 0:
        return float(sampler["noiseless_step_size"]), "noiseless"
    if schedule_step_size is not None:
        return float(schedule_step_size), "ncsnv2"
    if (sampler["step_rule"] == "ncsnv2" and sampler["kind"] in ("annealed_langevin", "pc") and len(sigmas) >= 2
            and int(steps) >= 1):  # fmt: skip
        from scorebench.ncsnv2_rules import ncsnv2_step_size

        gamma = geometric_mean_ratio(sigmas)
        return ncsnv2_step_size(sigma_min, gamma, int(steps), sampler["step_convention"]), "ncsnv2"
    return float(sampler["step_ratio"]) * sigma_min**2, "ratio"


def relaxation(sampler: dict, sigmas, steps: int, step_size: float, variance: float) -> float:
    """R = Σ_i T·α_i/(σ_i² + s²): the e-folds by which a chain's mean displacement relaxes over the data's scale.

    For a Gaussian target of variance v = σ_i² + s² (the data's per-coordinate variance s² seen at
    level σ_i), one code-form Langevin step of α contracts the mean by (1 − α/v) ≈ e^(−α/v), so R
    counts e-folds over the whole chain; R ≪ 1 means the samples stay where the chains started.
    α_i in the code form: annealed_langevin ε·σ_i²/σ_L² (ε if σ_L = 0); langevin ε at σ_L only;
    algorithm1 halves every α. pc's corrector sets its own step 2·(snr·‖z‖/‖s‖)², which on that
    target is 2·snr²·v, so each corrector step adds 2·snr² (snr² in algorithm1); each predictor step
    from σ_i to σ_{i+1} adds (σ_i² − σ_{i+1}²)/(σ_i² + s²). The denoising step is not counted.
    """
    s = [float(v) for v in sigmas]
    T, half = int(steps), 0.5 if sampler["step_convention"] == "algorithm1" else 1.0
    kind, var = sampler["kind"], float(variance)
    if kind == "langevin":
        return T * half * float(step_size) / (s[-1] ** 2 + var)
    if kind == "annealed_langevin":
        scale = [(x / s[-1]) ** 2 if s[-1] > 0 else 1.0 for x in s]
        return sum(T * half * float(step_size) * a / (x**2 + var) for a, x in zip(scale, s))
    corrector = len(s) * T * 2.0 * half * float(sampler["snr"]) ** 2
    return corrector + sum((a**2 - b**2) / (a**2 + var) for a, b in zip(s, s[1:]))


def schedule_sigmas(schedule: dict) -> list[float] | None:
    """The σ list (largest first) of a schedule preset where the preset alone fixes it (as
    scorebench.noise makes it), else None: kind ncsnv2 and `sigma_max: auto` need the data."""
    kind = schedule["kind"]
    if kind == "none":
        return [0.0]
    if kind == "single":
        return [float(schedule["sigma"])]
    if kind == "explicit":
        return [float(v) for v in schedule["sigmas"]]
    if kind in ("geometric", "linear") and schedule["sigma_max"] != "auto":
        hi, lo, n = float(schedule["sigma_max"]), float(schedule["sigma_min"]), int(schedule["levels"])
        if n == 1:
            return [hi]
        if kind == "geometric":
            return [math.exp(math.log(hi) + (math.log(lo) - math.log(hi)) * i / (n - 1)) for i in range(n)]
        return [hi + (lo - hi) * i / (n - 1) for i in range(n)]
    return None


def schedule_sigma_min(schedule: dict) -> float | None:
    """σ_L of a schedule preset where the preset fixes it (also with `sigma_max: auto` and L ≥ 2,
    where σ_L = sigma_min), else None."""
    sigmas = schedule_sigmas(schedule)
    if sigmas is not None:
        return sigmas[-1]
    if schedule["kind"] in ("geometric", "linear") and int(schedule["levels"]) >= 2:
        return float(schedule["sigma_min"])
    return None
