"""A score model and the exact score on the same grid points, at each σ: the arrays of a quiver figure.

Song & Ermon (2019, Fig. 2) compare ∇ₓ log p_data with s_θ over the plane to show that a model
trained on clean data is wrong where data is scarce; `score_field` gives the arrays for that
picture at any σ, from a 2-D toy's exact mixture density.
"""

from __future__ import annotations

from scorebench.errors import ScorebenchError


def score_field(score_fn, distribution, grid, sigmas, model_sigmas=None, *, chunk_size: int = 4096) -> dict:
    """A score model and the exact score on the same grid points, at each σ (for quiver figures).

    Song & Ermon (2019, Fig. 2) compare ∇ₓ log p_data with s_θ over the plane to show that a
    model trained on clean data is wrong where data is scarce; this gives the arrays for that
    picture at any σ.

    Args:
        score_fn: `score_fn(x, sigma_batch)` in eval mode (called under no_grad, in chunks).
        distribution: an `IsotropicGaussianMixture` (the truth: log p_σ and ∇log p_σ in closed form).
        grid: (N, *shape) float32 points.
        sigmas: σ of each true density p_σ.
        model_sigmas: σ handed to the model for each entry (None: the same σ; 0 for a noiseless model).
        chunk_size: points per model call.

    Returns:
        dict of numpy arrays: sigmas (K,), model_sigmas (K,), model_score and true_score (K, N, *shape)
        float32, log_prob (K, N) float64 (log p_σ) and log_prob0 (N,) (log p_0, the data density).
    """
    import numpy as np
    import torch

    sig = [float(s) for s in sigmas]
    msig = sig if model_sigmas is None else [float(s) for s in model_sigmas]
    if len(msig) != len(sig):
        raise ScorebenchError(f"score field model_sigmas: need {len(sig)} values (one per σ), got {len(msig)}")
    x = grid.detach().to(torch.float32)
    est, true, logp = [], [], []
    with torch.no_grad():
        for s, ms in zip(sig, msig):
            parts = []
            for chunk in x.split(int(chunk_size)):
                out = score_fn(chunk, torch.full((chunk.shape[0],), ms, dtype=torch.float32, device=chunk.device))
                if tuple(out.shape) != tuple(chunk.shape):
                    raise ScorebenchError(
                        f"score field: the model returned shape {tuple(out.shape)} for inputs {tuple(chunk.shape)}"
                    )
                parts.append(out.float().cpu())
            lp, sc = distribution.log_prob_and_score(x.to(torch.float64), s)
            est.append(torch.cat(parts).numpy())
            true.append(sc.to(torch.float32).cpu().numpy())
            logp.append(lp.cpu().numpy())
    return {
        "sigmas": np.array(sig, dtype=np.float64),
        "model_sigmas": np.array(msig, dtype=np.float64),
        "model_score": np.stack(est),
        "true_score": np.stack(true),
        "log_prob": np.stack(logp),
        "log_prob0": distribution.log_prob(x.to(torch.float64), 0.0).cpu().numpy(),
    }
