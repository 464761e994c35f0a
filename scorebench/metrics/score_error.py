"""Score error ‖s_θ(x̃, σ) − ∇ₓ log p_σ(x̃)‖² against the exact score, per σ and per density region.

NCSN's motivation (Song & Ermon 2019, Sec. 3) is that a score model trained on clean data is
inaccurate where the data density is low, and that perturbing the data with several noise levels
fixes this. This module measures exactly that: the error of a model's score against the closed-form
∇log p_σ of `dataset.distribution` (the true toy density, or for images the empirical training
distribution, whose perturbed score is exact for σ > 0; Vincent 2011), split by how dense the
region is.

Rows are tidy, one per (σ, region, bin, metric), with columns
    sigma        σ of the density p_σ the points come from and the truth is the score of
    sigma_index  position of sigma in the list the caller passed
    model_sigma  σ handed to the model (its trained level; = sigma unless the caller says otherwise,
                 e.g. 0 for a model trained without noise, or σ_L of a multi-scale model evaluated
                 on clean data)
    region       "all"      every evaluation point x̃ = held-out point + σ·z, x̃ ~ p_σ
                 "bin"      those points split into equal-count quantile bins of `bin_by`
                 "grid"     2-D toys: a uniform grid over the training data's bounding box + margin
                            (covers the low-density space between and around the data)
                 "grid_bin" the grid split into equal-count quantile bins of log p_0 (a fixed
                            partition of the plane, the same at every σ)
    bin_by       what the bins rank: "log_density_0" (log p_0(x̃), the CLEAN density at the point: the
                 toy default, so a region means the same part of the data space at every σ),
                 "log_density" (log p_σ(x̃) at the row's σ), "nearest_distance" (distance from x̃
                 to the nearest training point; the image default, as log p of the empirical
                 distribution is dominated by that one point); grid rows always use log_density_0
    bin          0 … n_bins−1, bin 0 = LOWEST density (lowest log p, or FARTHEST from the data);
                 −1 for "all" and "grid"
    bin_low, bin_high  range of the bin_by value inside the bin (for distances bin 0 has the
                 largest values)
    metric       "score_error" (mean ‖s_θ − ∇log p_σ‖²), "score_error_rel" (E err / E‖∇log p_σ‖² over
                 the same points, scale-free), "score_error_norm" (the region's E err divided by
                 E‖∇log p_σ‖² over ALL points of its set at the same σ: "all" for points, "grid"
                 for the grid — the one normalisation density-split figures and tables use, so bins
                 of one σ share a denominator and keep their ratios), "true_score_norm2" (E‖∇log p_σ‖²)
    value, n     the value and the number of points behind it
    se           Monte-Carlo standard error of value: sd of the value over `bootstrap` resamples of
                 the region's points (the whole set's denominator held fixed); NaN on the grid, which
                 is a fixed quadrature, not a random draw
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from scorebench.errors import ScorebenchError
from scorebench.metrics.bootstrap import RESAMPLES, counts, generator_after, standard_error
from scorebench.tensors import flat_sum

BIN_BY = ("log_density_0", "log_density", "nearest_distance")


class ScoreError(NamedTuple):
    """Per-point results of `score_error`, all (N,) float64."""

    error: torch.Tensor  # ‖s_θ(x̃, σ_model) − ∇log p_σ(x̃)‖²
    true_norm2: torch.Tensor  # ‖∇log p_σ(x̃)‖²
    log_prob: torch.Tensor  # log p_σ(x̃)


def _check_sigma(distribution, sigma: float, field: str) -> float:
    s = float(sigma)
    if not (math.isfinite(s) and s >= 0):
        raise ScorebenchError(f"{field}: every σ must be finite and >= 0, got {sigma}")
    if s == 0 and bool(torch.any(distribution.stds <= 0)):
        raise ScorebenchError(
            f"{field}: σ = 0 has no exact score for an empirical distribution (image training set); use σ > 0"
        )
    return s


def score_error(
    model_score_fn: Callable,
    distribution,
    sigma: float,
    x_eval: torch.Tensor,
    *,
    model_sigma: float | None = None,
    chunk_size: int = 1024,
) -> ScoreError:
    """Squared error of a score model against the exact ∇log p_σ at given points.

    The model sees float32 points and a (B,) float32 σ batch (the shared convention) and is called
    under no_grad in chunks; the truth is evaluated at the very same float32 points in float64, so
    an exact model scores 0 up to float32 rounding. Everything runs on x_eval's device. Put the
    model in eval mode (and swap in EMA weights) before calling.

    Args:
        model_score_fn: `score_fn(x, sigma_batch)` giving the model's score, shape of x.
        distribution: an `IsotropicGaussianMixture` (its `log_prob_and_score` is the truth).
        sigma: σ of the density p_σ whose score is the truth.
        x_eval: (N, *shape) evaluation points.
        model_sigma: σ handed to the model; None = sigma.
        chunk_size: points per model call.

    Returns:
        ScoreError(error, true_norm2, log_prob), each (N,) float64.
    """
    s = _check_sigma(distribution, sigma, "score_error sigma")
    ms = s if model_sigma is None else float(model_sigma)
    x32 = x_eval.detach().to(torch.float32)
    errors, norms, logps = [], [], []
    with torch.no_grad():
        for chunk in x32.split(int(chunk_size)):
            sig = torch.full((chunk.shape[0],), ms, dtype=torch.float32, device=chunk.device)
            est = model_score_fn(chunk, sig)
            if tuple(est.shape) != tuple(chunk.shape):
                raise ScorebenchError(
                    f"score_error: the model returned shape {tuple(est.shape)} for inputs {tuple(chunk.shape)}"
                )
            logp, truth = distribution.log_prob_and_score(chunk.to(torch.float64), s)
            truth = truth.to(torch.float64)
            errors.append(flat_sum((est.to(torch.float64) - truth) ** 2))
            norms.append(flat_sum(truth**2))
            logps.append(logp)
    return ScoreError(torch.cat(errors), torch.cat(norms), torch.cat(logps))


def nearest_distance(x: torch.Tensor, points: torch.Tensor, chunk_size: int = 4096) -> torch.Tensor:
    """Euclidean distance from each x to its nearest neighbour in `points`, (N,) float64, streamed over chunks."""
    xf = x.reshape(x.shape[0], -1).to(torch.float64)
    x2 = (xf**2).sum(1, keepdim=True)
    best = torch.full((xf.shape[0],), math.inf, dtype=torch.float64, device=xf.device)
    for start in range(0, points.shape[0], int(chunk_size)):
        p = points[start : start + int(chunk_size)].reshape(-1, xf.shape[1]).to(xf.device, torch.float64)
        d2 = (x2 - 2.0 * xf @ p.T + (p**2).sum(1)[None, :]).clamp_min(0.0)
        best = torch.minimum(best, d2.min(1).values)
    return best.sqrt()


def evaluation_grid(dataset, grid_size: int = 64, margin: float = 0.1) -> torch.Tensor:
    """A uniform grid_size × grid_size grid over the training data's bounding box, widened by
    `margin` × its width on every side, as (grid_size², 2) float32 points."""
    if dataset.dim != 2:
        raise ScorebenchError(f"score error grid: needs 2-D data, dataset {dataset.name!r} has shape {dataset.shape}")
    if int(grid_size) < 2:
        raise ScorebenchError(f"score error grid_size: must be >= 2 (or 0 to skip the grid), got {grid_size}")
    data = dataset.train.reshape(-1, 2).to(torch.float64)
    lo, hi = data.min(0).values, data.max(0).values
    pad = float(margin) * (hi - lo)
    axes = [
        torch.linspace(float(lo[i] - pad[i]), float(hi[i] + pad[i]), int(grid_size), dtype=torch.float64)
        for i in (0, 1)
    ]
    gx, gy = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], 1).to(torch.float32)


def rank_bins(values: torch.Tensor, n_bins: int, *, descending: bool = False) -> torch.Tensor:
    """Equal-count quantile bins by rank (sizes differ by at most one; ties broken by position).

    Bin 0 holds the smallest values (the largest with `descending`)."""
    order = torch.argsort(values, descending=descending, stable=True)
    bins = torch.empty_like(order)
    bins[order] = torch.arange(values.numel(), device=values.device) * int(n_bins) // values.numel()
    return bins


def _bootstrap_se(e: torch.Tensor, t: torch.Tensor, whole_t: float, generator, n_boot: int) -> dict:
    """Bootstrap standard errors of one region's four values (resampling its points)."""
    if generator is None or n_boot < 2 or e.numel() < 2:
        return dict.fromkeys(("score_error", "score_error_rel", "score_error_norm", "true_score_norm2"), math.nan)
    c = counts(e.numel(), n_boot, generator) / e.numel()
    me, mt = c @ e.detach().cpu().to(torch.float64), c @ t.detach().cpu().to(torch.float64)
    se = standard_error
    return {"score_error": se(me), "score_error_rel": se(me / mt), "score_error_norm": se(me / whole_t),
            "true_score_norm2": se(mt)}  # fmt: skip


def _metric_rows(err: ScoreError, mask: torch.Tensor, key: dict, bin_values: torch.Tensor, whole_t: float,
                 generator, n_boot: int) -> list[dict]:  # fmt: skip
    e, t = err.error[mask], err.true_norm2[mask]
    n = int(mask.sum())
    mean_e, mean_t = float(e.mean()), float(t.mean())
    rel = mean_e / mean_t if mean_t > 0 else math.nan
    norm = mean_e / whole_t if whole_t > 0 else math.nan
    se = _bootstrap_se(e, t, whole_t, generator, n_boot)
    v = bin_values[mask]
    base = {**key, "bin_low": float(v.min()), "bin_high": float(v.max()), "n": n}
    values = {"score_error": mean_e, "score_error_rel": rel, "score_error_norm": norm, "true_score_norm2": mean_t}
    return [{**base, "metric": m, "value": val, "se": se[m]} for m, val in values.items()]


def _region_rows(err: ScoreError, bin_values, n_bins, descending, key, regions: tuple[str, str],
                 generator=None, n_boot: int = 0) -> list[dict]:  # fmt: skip
    """Rows for the whole set (regions[0], bin −1) and for each quantile bin of bin_values (regions[1]);
    every region's score_error_norm is divided by the whole set's mean ‖∇log p_σ‖²."""
    everything = torch.ones_like(err.error, dtype=torch.bool)
    whole_t = float(err.true_norm2.mean())
    rows = _metric_rows(err, everything, {**key, "region": regions[0], "bin": -1}, bin_values, whole_t, generator, n_boot)
    bins = rank_bins(bin_values, n_bins, descending=descending)
    for b in range(int(n_bins)):
        rows += _metric_rows(err, bins == b, {**key, "region": regions[1], "bin": b}, bin_values, whole_t,
                             generator, n_boot)  # fmt: skip
    return rows


def score_error_rows(
    model_score_fn: Callable,
    dataset,
    sigmas,
    *,
    generator: torch.Generator,
    n_points: int = 2000,
    n_bins: int = 5,
    grid_size: int = 64,
    grid_margin: float = 0.1,
    bin_by: str | None = None,
    model_sigmas=None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
    bootstrap: int = RESAMPLES,
) -> list[dict]:
    """Score error per σ, overall, per density bin and (2-D toys) on a grid; tidy rows (module docstring).

    Evaluation points x̃ = x + σ·z use held-out points x (dataset.test; a random subset, or drawn with
    replacement when n_points exceeds it) and one standard-normal z per point, both drawn once and
    shared by all σ (common random numbers, so σ-to-σ differences are not sampling noise).

    Args:
        model_score_fn: `score_fn(x, sigma_batch)`; in eval mode, on `device`.
        dataset: a `Dataset` with a `distribution` (the exact p_σ).
        sigmas: density σ values (any order; each >= 0, and > 0 for image datasets).
        generator: draws the held-out subset and z (CPU generator).
        n_points: evaluation points per σ (>= n_bins).
        n_bins: equal-count quantile bins for "bin" and "grid_bin" rows.
        grid_size: grid points per axis for 2-D toys; 0 skips the grid.
        grid_margin: grid padding around the training data's bounding box, as a fraction of its width.
        bin_by: "log_density_0", "log_density" or "nearest_distance"; None = "log_density_0" for
            toys (regions fixed by the clean density, the same at every σ), "nearest_distance" for images.
        model_sigmas: σ handed to the model for each entry of sigmas; None = sigmas. For a model
            trained without noise pass zeros; for a multi-scale model on clean data pass its σ_L.
        chunk_size: points per model call.
        device: where points, model calls and the truth run; None = dataset.test's device.
        bootstrap: resamples behind each row's `se` (0: NaN); drawn from a generator seeded by
            `generator` after the points, so the points do not depend on it.

    Returns:
        A list of row dicts (see the module docstring for the columns).
    """
    if dataset.distribution is None:
        raise ScorebenchError(f"score error: dataset {dataset.name!r} has no exact distribution to compare against")
    if bin_by is None:
        bin_by = "log_density_0" if dataset.kind == "toy" else "nearest_distance"
    if bin_by not in BIN_BY:
        raise ScorebenchError(f"score error bin_by: unknown {bin_by!r}; choose one of {list(BIN_BY)}")
    sig_list = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1).tolist()]
    if not sig_list:
        raise ScorebenchError("score error sigmas: the list is empty")
    model_list = (
        sig_list if model_sigmas is None else [float(s) for s in torch.as_tensor(model_sigmas).reshape(-1).tolist()]
    )
    if len(model_list) != len(sig_list):
        raise ScorebenchError(
            f"score error model_sigmas: need {len(sig_list)} values (one per σ), got {len(model_list)}"
        )
    for s in sig_list:
        _check_sigma(dataset.distribution, s, "score error sigmas")
    if int(n_bins) < 1 or int(n_points) < int(n_bins):
        raise ScorebenchError(
            f"score error n_points/n_bins: need n_bins >= 1 and n_points >= n_bins, got {n_points}/{n_bins}"
        )
    dev = torch.device(device) if device is not None else dataset.test.device

    n_test = dataset.test.shape[0]
    if int(n_points) <= n_test:
        idx = torch.randperm(n_test, generator=generator)[: int(n_points)]
    else:
        idx = torch.randint(n_test, (int(n_points),), generator=generator)
    clean = dataset.test[idx].to(dev, torch.float32)
    z = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(dev)
    boot = generator_after(generator)
    use_grid = int(grid_size) > 0 and dataset.kind == "toy" and dataset.dim == 2
    if use_grid and int(grid_size) ** 2 < int(n_bins):
        raise ScorebenchError(f"score error grid_size: {grid_size}² grid points cannot fill {n_bins} bins")
    if use_grid:
        grid = evaluation_grid(dataset, grid_size, grid_margin).to(dev)
        grid_logp0 = dataset.distribution.log_prob(grid, 0.0)

    rows: list[dict] = []
    for i, (s, ms) in enumerate(zip(sig_list, model_list)):
        key = {"sigma": s, "sigma_index": i, "model_sigma": ms}
        x = clean + s * z
        err = score_error(model_score_fn, dataset.distribution, s, x, model_sigma=ms, chunk_size=chunk_size)
        if bin_by == "log_density":
            values, descending = err.log_prob, False
        elif bin_by == "log_density_0":
            values, descending = dataset.distribution.log_prob(x.to(torch.float64), 0.0), False
        else:
            values, descending = nearest_distance(x, dataset.train), True  # farthest = lowest density first
        rows += _region_rows(err, values, n_bins, descending, {**key, "bin_by": bin_by}, ("all", "bin"), boot,
                             int(bootstrap))  # fmt: skip
        if use_grid:
            gerr = score_error(model_score_fn, dataset.distribution, s, grid, model_sigma=ms, chunk_size=chunk_size)
            rows += _region_rows(
                gerr, grid_logp0, n_bins, False, {**key, "bin_by": "log_density_0"}, ("grid", "grid_bin")
            )
    return rows
