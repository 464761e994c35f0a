"""NCSN's score network: a conditional, dilated 4-cascaded RefineNet (Song & Ermon 2019, appendix B.1).

Written from the paper's description, so a study can train the architecture its NCSN numbers came
from rather than a stand-in. The pieces, and why each is there:
- Conditional instance normalisation++ (CondInstanceNorm++, models/norms.py) in place of every
  normalisation: each σ level i has its own γ, β, α per channel, which is how the network is told
  the noise level. Plain instance norm removes each channel's mean, and with it the image's colour
  shifts; the "++" term α·(μ_k − m)/v puts back where each channel mean sits among the others.
- Four stages of two residual blocks (widths ngf, 2ngf, 2ngf, 2ngf); only stage 2 halves the
  resolution, stages 3 and 4 use dilation 2 and 4 instead, so the receptive field grows without
  losing the spatial detail a score (one value per pixel) needs.
- Four RefineBlocks run from the coarsest stage back up (U-Net-like): residual conv units (RCU) adapt
  each input, multi-resolution fusion (MSF) brings them to one size and adds them, chained residual
  pooling (CRP, average pooling as in the paper) gathers context; every norm is conditional.
- ELU activations (the paper's): unlike ReLU's, their second derivative is not zero (e^x below 0),
  so exact score matching sees curvature in x; `activation` may swap in another smooth one.

Conditioning is by σ *index*, as in the paper: the network holds one embedding row per level of
its own σ list. The list is stored in `.config` (so a checkpoint's config rebuilds it) and as a
non-persistent buffer `sigmas` (so it moves with the model; the state dict holds weights only).
A σ handed to `forward` is mapped to the level nearest in log σ (σ = 0 reads as 1e-4, as in the
σ embedding of mlp.py). Off the list it is therefore the nearest trained level's score, not an
interpolation: use it with samplers and score-error on the schedule it was trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scorebench.errors import ScorebenchError
from scorebench.models.mlp import ACTIVATIONS, SIGMA_FLOOR
from scorebench.models.norms import CondInstanceNormPP, check_channel_var
from scorebench.tensors import as_sigma_batch, per_sample

def conv3x3(c_in: int, c_out: int, *, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution that keeps the spatial size (padding = dilation)."""
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class CondResBlock(nn.Module):
    """norm-act-conv twice with conditional norms, plus a shortcut.

    `resample` marks a stage's first block. With dilation 1 it halves the resolution (conv, then
    2x2 mean pool, in both branches); in the dilated stages it keeps the resolution (the dilation
    replaces the subsampling) but, like the subsampling block it stands in for, keeps the input
    width through its first conv and has a learned shortcut (a dilated 3x3 conv).
    """

    def __init__(self, c_in: int, c_out: int, levels: int, act: nn.Module, *, resample=False, dilation=1):
        super().__init__()
        mid = c_in if resample else c_out
        self.pool = resample and dilation == 1
        self.norm1 = CondInstanceNormPP(c_in, levels)
        self.conv1 = conv3x3(c_in, mid, dilation=dilation)
        self.norm2 = CondInstanceNormPP(mid, levels)
        self.conv2 = conv3x3(mid, c_out, dilation=dilation)
        if self.pool:
            self.shortcut = nn.Conv2d(c_in, c_out, 1)
        elif resample:
            self.shortcut = conv3x3(c_in, c_out, dilation=dilation)
        elif c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1)
        else:
            self.shortcut = nn.Identity()
        self.act = act

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x, level)))
        h = self.conv2(self.act(self.norm2(h, level)))
        skip = self.shortcut(x)
        if self.pool:  # floor mode: an odd row or column is dropped; the refine path restores the size
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        return skip + h


class CondRCU(nn.Module):
    """Residual conv unit: `blocks` residual blocks of `stages` × (cond norm, act, bias-free 3x3 conv)."""

    def __init__(self, channels: int, blocks: int, stages: int, levels: int, act: nn.Module):
        super().__init__()
        self.norms = nn.ModuleList(
            nn.ModuleList(CondInstanceNormPP(channels, levels) for _ in range(stages)) for _ in range(blocks)
        )
        self.convs = nn.ModuleList(
            nn.ModuleList(conv3x3(channels, channels, bias=False) for _ in range(stages)) for _ in range(blocks)
        )
        self.act = act

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        for norms, convs in zip(self.norms, self.convs):
            h = x
            for norm, conv in zip(norms, convs):
                h = conv(self.act(norm(h, level)))
            x = x + h
        return x


class CondMSF(nn.Module):
    """Multi-resolution fusion: cond norm and 3x3 conv per input, bilinear upsampling to one size, sum."""

    def __init__(self, in_channels: list[int], channels: int, levels: int):
        super().__init__()
        self.norms = nn.ModuleList(CondInstanceNormPP(c, levels) for c in in_channels)
        self.convs = nn.ModuleList(conv3x3(c, channels) for c in in_channels)

    def forward(self, xs: list[torch.Tensor], level: torch.Tensor, size) -> torch.Tensor:
        out = 0
        for x, norm, conv in zip(xs, self.norms, self.convs):
            h = conv(norm(x, level))
            if tuple(h.shape[-2:]) != tuple(size):
                h = F.interpolate(h, size=tuple(size), mode="bilinear", align_corners=True)
            out = out + h
        return out


class CondCRP(nn.Module):
    """Chained residual pooling: each stage pools the previous stage's output (cond norm, 5x5 average
    pool, bias-free 3x3 conv) and adds it to the running sum, so context from ever wider windows joins."""

    def __init__(self, channels: int, stages: int, levels: int, act: nn.Module):
        super().__init__()
        self.norms = nn.ModuleList(CondInstanceNormPP(channels, levels) for _ in range(stages))
        self.convs = nn.ModuleList(conv3x3(channels, channels, bias=False) for _ in range(stages))
        self.act = act

    def forward(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        path = x
        for norm, conv in zip(self.norms, self.convs):
            path = conv(F.avg_pool2d(norm(path, level), 5, stride=1, padding=2))
            x = x + path
        return x


class CondRefineBlock(nn.Module):
    """RCU per input (2 blocks), MSF when there are several inputs, CRP (2 stages), output RCU
    (1 block; 3 for the last RefineBlock, which feeds the output layer)."""

    def __init__(self, in_channels: list[int], channels: int, levels: int, act: nn.Module, *, end=False):
        super().__init__()
        self.adapt = nn.ModuleList(CondRCU(c, 2, 2, levels, act) for c in in_channels)
        self.msf = CondMSF(in_channels, channels, levels) if len(in_channels) > 1 else None
        self.crp = CondCRP(channels, 2, levels, act)
        self.out = CondRCU(channels, 3 if end else 1, 2, levels, act)

    def forward(self, xs: list[torch.Tensor], level: torch.Tensor, size) -> torch.Tensor:
        hs = [adapt(x, level) for adapt, x in zip(self.adapt, xs)]
        h = hs[0] if self.msf is None else self.msf(hs, level, size)
        return self.out(self.crp(h, level), level)


class ScoreNCSN(nn.Module):
    """s_θ(x, σ_i) for images: NCSN's CondRefineNetDilated (30.1 M parameters on CIFAR-10).

    Args:
        shape: (C, H, W), H and W >= 2 (stage 2 halves them).
        sigmas: the schedule's σ levels; the network learns one conditioning row per level and maps
            any σ to the nearest level (in log σ).
        ngf: base width (ngf, then 2·ngf after stage 1); the paper uses 128 for CIFAR-10 and CelebA,
            64 for MNIST.
        activation: one of ACTIVATIONS; the paper's is ELU.
        channel_var: "unbiased" (the authors' torch.var) or "population": the variance of the channel
            means in CondInstanceNorm++ (models/norms.py).
        rescale_input: map inputs from [0, 1] to [-1, 1] first (the authors' networks do unless the
            data are rescaled or logit-transformed already).
        scale_by_sigma: return s(x, σ)/σ (NCSNv2 technique 3, Song & Ermon 2020; the original NCSN
            does not scale); σ must be > 0.
    """

    # Parameter counts with 10 σ levels, shape (3, H, W): tiny 519,395; mnist 7,640,963; cifar10 30,117,635
    # (the reference code's CondRefineNetDilated); shape (1, H, W): mnist 7,638,657. Independent of H and W.
    # celeba = cifar10: NCSN trains CelebA at 32x32 (centre crop 140, resized), with ngf 128.
    # channel_var "unbiased" and rescale_input true are the authors' (see norms.py and `forward`).
    PRESETS = {
        name: {"ngf": ngf, "activation": "elu", "scale_by_sigma": False, "channel_var": "unbiased", "rescale_input": True}
        for name, ngf in (("tiny", 16), ("mnist", 64), ("cifar10", 128), ("celeba", 128))
    }
    # What a stored config that predates a key meant: model.pt files written before channel_var existed
    # were trained with the population variance of the channel means.
    LEGACY_DEFAULTS = {"channel_var": "population", "rescale_input": True}
    NEEDS_SIGMAS = True  # build_model passes the schedule's σ list and stores it in .config

    @staticmethod
    def check_shape(shape: tuple[int, ...]) -> str | None:
        """None if the network accepts this per-sample shape, else why not."""
        if len(shape) != 3:
            return "needs an image shape (C, H, W), e.g. (1, 28, 28)"
        if min(shape[1:]) < 2:
            return "needs H and W >= 2 (one 2x subsampling)"
        return None

    def __init__(self, shape, *, sigmas, ngf, activation, scale_by_sigma, channel_var="unbiased", rescale_input=True):
        super().__init__()
        self.shape = tuple(shape)
        self.scale_by_sigma = bool(scale_by_sigma)
        self.rescale_input = bool(rescale_input)
        levels = len(sigmas)
        # Not persistent: `.config["sigmas"]` rebuilds it, so the state dict holds weights only
        # (packed training restores members from their parameters alone).
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float32), persistent=False)
        act = ACTIVATIONS[activation]()
        c_img, a, b = self.shape[0], ngf, 2 * ngf

        self.conv_in = nn.Conv2d(c_img, a, 3, padding=1)
        self.res1 = nn.ModuleList([CondResBlock(a, a, levels, act), CondResBlock(a, a, levels, act)])
        self.res2 = nn.ModuleList([CondResBlock(a, b, levels, act, resample=True), CondResBlock(b, b, levels, act)])
        self.res3 = nn.ModuleList(
            [CondResBlock(b, b, levels, act, resample=True, dilation=2), CondResBlock(b, b, levels, act, dilation=2)]
        )
        self.res4 = nn.ModuleList(
            [CondResBlock(b, b, levels, act, resample=True, dilation=4), CondResBlock(b, b, levels, act, dilation=4)]
        )
        self.refine1 = CondRefineBlock([b], b, levels, act)
        self.refine2 = CondRefineBlock([b, b], b, levels, act)
        self.refine3 = CondRefineBlock([b, b], a, levels, act)
        self.refine4 = CondRefineBlock([a, a], a, levels, act, end=True)
        self.norm_out = CondInstanceNormPP(a, levels)
        self.act = act
        self.conv_out = nn.Conv2d(a, c_img, 3, padding=1)
        check_channel_var(channel_var)
        for m in self.modules():
            if isinstance(m, CondInstanceNormPP):
                m.channel_var = channel_var

    def level_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """(B,) σ -> (B,) index of the nearest level of `self.sigmas` in log σ (σ = 0 reads as 1e-4)."""
        log_s = torch.log(sigma.float().clamp_min(SIGMA_FLOOR))
        log_levels = torch.log(self.sigmas.float().clamp_min(SIGMA_FLOOR))
        return (log_s[:, None] - log_levels[None, :]).abs().argmin(dim=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Score estimate with x's shape; sigma is (B,) (a float or 0-d tensor is broadcast)."""
        sigma = as_sigma_batch(sigma, x)
        level = self.level_index(sigma)
        # data in [0, 1] are seen in [-1, 1], as by the authors' networks; data already rescaled or
        # logit-transformed (dataset options) go in as they are, as theirs do
        h = self.conv_in(2 * x - 1 if self.rescale_input else x)
        skips = []
        for stage in (self.res1, self.res2, self.res3, self.res4):
            for block in stage:
                h = block(h, level)
            skips.append(h)
        l1, l2, l3, l4 = skips
        h = self.refine1([l4], level, l4.shape[-2:])
        h = self.refine2([l3, h], level, l3.shape[-2:])
        h = self.refine3([l2, h], level, l2.shape[-2:])
        h = self.refine4([l1, h], level, l1.shape[-2:])
        out = self.conv_out(self.act(self.norm_out(h, level)))
        if self.scale_by_sigma:
            out = out / per_sample(sigma, out)
        return out


def check_sigmas(sigmas) -> list[float]:
    """The σ list an index-conditioned network is built for: non-empty, 1-D, finite, >= 0, distinct."""
    if sigmas is None:
        raise ScorebenchError("model 'ncsn': needs the schedule's σ list (it conditions on the σ level index)")
    s = torch.as_tensor(sigmas, dtype=torch.float64, device="cpu")  # cpu: also under a meta-device build
    if s.dim() != 1 or s.numel() == 0 or not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ScorebenchError(f"model 'ncsn': sigmas must be a non-empty list of finite σ >= 0, got {s.tolist()}")
    if s.unique().numel() != s.numel():
        raise ScorebenchError(f"model 'ncsn': sigmas must be distinct levels, got {s.tolist()}")
    return [float(v) for v in s.tolist()]
