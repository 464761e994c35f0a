"""InstanceNorm++ (NCSNv2) and its σ-conditional form CondInstanceNorm++ (NCSN), on torch's own
instance-norm kernel.

    z = γ ⊙ ((x − μ)/s + α ⊙ (μ − m)/v) + β

μ, s: each sample's per-channel mean and (population) std over pixels; m, v: the mean and std of
μ over channels. Plain instance norm removes each channel's mean, and with it an image's colour
shifts; the α term puts back where each channel's mean sits among the others (Song & Ermon 2019,
appendix A). NCSN conditions γ, α, β on the σ level (one embedding row per level); NCSNv2 drops
the conditioning (γ, α, β are plain per-channel parameters) and divides the output by σ instead.

Why the native kernel: the statistics were first written out by hand (mean, var, subtract, rsqrt,
multiply, then three element-wise passes for γ, α, β). `F.instance_norm` takes μ and s in one
pass and applies a per-channel scale and shift in the same kernel; viewing (B, C, H, W) as
(1, B·C, H, W) makes the scale and shift per (sample, channel), so γ and the whole additive term
γ·α·(μ − m)/v + β (computed on (B, C) only) ride along for free. `bench/norm_speed.py` measures the
two against each other.

The variance v of the channel means: the authors' code (ermongroup/ncsn
models/cond_refinenet_dilated.py and ermongroup/ncsnv2 models/normalization.py,
`ConditionalInstanceNorm2dPlus.forward` / `InstanceNorm2dPlus.forward`) takes `torch.var`, the
unbiased estimate (divisor C − 1). That is the default here ("unbiased"), so weights trained by
the authors give their outputs; "population" (divisor C) is the form this project first used and
is kept for models trained with it. With a single channel the unbiased estimate is undefined
(0/0); the α term is then exactly 0 either way, so C = 1 uses the population form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_EPS = 1e-5  # added to both variances, as in the authors' code and nn.InstanceNorm2d
CHANNEL_VARS = ("unbiased", "population")


def check_channel_var(value) -> str:
    if value not in CHANNEL_VARS:
        from scorebench.errors import ScorebenchError

        raise ScorebenchError(f"norm channel_var: unknown {value!r}; choose one of {list(CHANNEL_VARS)}")
    return value


def instance_norm_pp(x, gamma, alpha, beta, *, channel_var: str = "unbiased", eps: float = NORM_EPS):
    """γ ⊙ (instance_norm(x) + α ⊙ (μ − m)/√(v + eps)) + β for x (B, C, H, W).

    gamma, alpha, beta: (B, C) (conditional: one row per sample's level) or (C,) (unconditional).
    Statistics are taken per sample, in at least float32 (bf16 sums over H·W pixels lose digits),
    and the result has that dtype.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    x = x.to(dtype)
    b, c = x.shape[:2]
    mu = x.mean(dim=(2, 3))  # (B, C)
    correction = 1 if channel_var == "unbiased" and c > 1 else 0
    var_mu, m = torch.var_mean(mu, dim=1, keepdim=True, correction=correction)
    mu_hat = (mu - m) * torch.rsqrt(var_mu + eps)
    gamma, alpha, beta = (t.to(dtype).expand(b, c) for t in (gamma, alpha, beta))
    shift = torch.addcmul(beta, gamma * alpha, mu_hat)  # γ·α·μ̂ + β, on (B, C) only
    out = F.instance_norm(
        x.reshape(1, b * c, *x.shape[2:]), weight=gamma.reshape(-1), bias=shift.reshape(-1), eps=eps
    )
    return out.reshape(x.shape)


class CondInstanceNormPP(nn.Module):
    """CondInstanceNorm++: (γ_i, α_i, β_i) are the rows of σ level i of one embedding (NCSN).

    The embedding holds [γ | α | β] in that order, as the authors' `embed.weight` does, so their
    weights load unchanged. γ and α start at N(1, 0.02²) and β at 0, so at initialisation every
    level sees plain instance norm plus the channel-mean term.
    """

    def __init__(self, channels: int, levels: int, *, channel_var: str = "unbiased"):
        super().__init__()
        self.channels = channels
        self.channel_var = check_channel_var(channel_var)
        self.embed = nn.Embedding(levels, 3 * channels)
        with torch.no_grad():
            self.embed.weight[:, : 2 * channels].normal_(1.0, 0.02)
            self.embed.weight[:, 2 * channels :].zero_()

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        gamma, alpha, beta = self.embed(level).chunk(3, dim=1)
        return instance_norm_pp(x, gamma, alpha, beta, channel_var=self.channel_var)


class InstanceNormPP(nn.Module):
    """InstanceNorm++ without conditioning (NCSNv2): γ, α, β are per-channel parameters.

    Named `gamma`, `alpha`, `beta` like the authors' `InstanceNorm2dPlus`; γ and α start at
    N(1, 0.02²), β at 0.
    """

    def __init__(self, channels: int, *, channel_var: str = "unbiased"):
        super().__init__()
        self.channels = channels
        self.channel_var = check_channel_var(channel_var)
        self.gamma = nn.Parameter(torch.empty(channels).normal_(1.0, 0.02))
        self.alpha = nn.Parameter(torch.empty(channels).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm_pp(x, self.gamma, self.alpha, self.beta, channel_var=self.channel_var)
