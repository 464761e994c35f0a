"""σ-conditioned MLP score network for vectors (2-D toys; any shape, flattened).

Also holds the two pieces every score network here shares: the σ embedding and the table of
smooth activations (`unet.py` imports both), so one network answers any σ the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from scorebench.tensors import as_sigma_batch, per_sample

# Smooth activations only: exact score matching (Hyvärinen 2005) differentiates the network twice
# (trace of the Jacobian, then its gradient in the weights), and ReLU's second derivative is zero.
ACTIVATIONS = {"silu": nn.SiLU, "softplus": nn.Softplus, "elu": nn.ELU}

SIGMA_FLOOR = 1e-4  # σ is clamped to this before log σ: σ = 0 (the `none` schedule) must stay finite


class SigmaEmbedding(nn.Module):
    """Fixed sinusoidal features of log σ: (B,) -> (B, dim).

    Why log σ: schedules are geometric (NCSN, Song & Ermon 2019), so adjacent levels are evenly
    spaced in log σ and fixed frequencies resolve all of them. Why fixed features rather than a
    learned table per level: the network must not depend on the schedule, so one net serves any σ
    list, a continuous σ (VE SDE predictor-corrector, Song et al. 2021) and score error at any σ.
    Why the clamp at 1e-4: log 0 = -inf; 1e-4 is below every σ a schedule uses, so σ = 0 reads
    as "almost no noise". The lowest frequency keeps the (sin, cos) pair one-to-one on
    σ ∈ [1e-4, 1e4]; the highest separates levels 1 % apart.

    Args:
        dim: number of features (rounded down to even, at least 2); half sines, half cosines.
    """

    def __init__(self, dim: int, min_freq: float = 0.2, max_freq: float = 32.0):
        super().__init__()
        half = max(1, dim // 2)
        self.out_dim = 2 * half
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), half))
        self.register_buffer("freqs", freqs, persistent=False)  # a constant: rebuilt, never saved

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = torch.log(sigma.clamp_min(SIGMA_FLOOR))
        phase = log_sigma[:, None] * self.freqs.to(log_sigma.dtype)[None, :]
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)


class ScoreMLP(nn.Module):
    """s_θ(x, σ) for vectors: x is flattened, each hidden layer adds a projection of the σ embedding.

    Additive conditioning in every layer (rather than concatenating σ to the input once) keeps σ
    visible deep in the net, as in the σ-conditioned toy models of Song & Ermon (2019).

    Args:
        shape: per-sample shape; any shape works (flattened to D = prod(shape) and restored).
        hidden: width of each hidden layer.
        layers: number of hidden layers (>= 1).
        embed_dim: size of the σ embedding.
        activation: one of ACTIVATIONS (smooth, for exact score matching).
        scale_by_sigma: return s(x, σ)/σ (NCSNv2 technique 3, Song & Ermon 2020); σ must be > 0.
    """

    # Parameter counts for shape (2,): tiny 8,706; small 58,626; medium 330,754.
    PRESETS = {
        "tiny": {"hidden": 64, "layers": 2, "embed_dim": 32, "activation": "silu", "scale_by_sigma": False},
        "small": {"hidden": 128, "layers": 3, "embed_dim": 64, "activation": "silu", "scale_by_sigma": False},
        "medium": {"hidden": 256, "layers": 4, "embed_dim": 128, "activation": "silu", "scale_by_sigma": False},
    }

    @staticmethod
    def check_shape(shape: tuple[int, ...]) -> str | None:
        """None if the network accepts this per-sample shape, else why not."""
        if len(shape) < 1:
            return "needs at least one dimension, e.g. (2,)"
        return None

    def __init__(self, shape, *, hidden, layers, embed_dim, activation, scale_by_sigma):
        super().__init__()
        self.shape = tuple(shape)
        self.scale_by_sigma = bool(scale_by_sigma)
        dim = math.prod(self.shape)
        self.embed = SigmaEmbedding(embed_dim)
        widths = [dim] + [hidden] * layers
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.conds = nn.ModuleList(nn.Linear(self.embed.out_dim, hidden) for _ in range(layers))
        self.act = ACTIVATIONS[activation]()
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Score estimate with x's shape; sigma is (B,) (a float or 0-d tensor is broadcast)."""
        sigma = as_sigma_batch(sigma, x)
        emb = self.embed(sigma)
        h = x.reshape(x.shape[0], -1)
        for linear, cond in zip(self.linears, self.conds):
            h = self.act(linear(h) + cond(emb))
        out = self.out(h).reshape(x.shape)
        if self.scale_by_sigma:
            out = out / per_sample(sigma, out)
        return out
