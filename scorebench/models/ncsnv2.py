"""NCSNv2's score network (Song & Ermon 2020): an unconditional dilated RefineNet whose output is
divided by σ, in the three depths of the authors' code (ermongroup/ncsnv2 models/ncsnv2.py).

Written from the paper and from reading the authors' classes `NCSNv2`, `NCSNv2Deeper` and
`NCSNv2Deepest` and their layers (models/layers.py `ResidualBlock`, `RefineBlock`, `RCUBlock`,
`MSFBlock`, `CRPBlock`, `ConvMeanPool`; models/normalization.py `InstanceNorm2dPlus`), so the
parameter counts and state-dict shapes equal theirs and their released weights can be imported
(models/import_authors.py). What differs from NCSN (models/ncsn.py), and why (NCSNv2 Sec. 3-4):
- No σ conditioning inside the network: technique 3 observes that ‖s(x, σ)‖ ∝ 1/σ for an optimal
  score, so one unconditional network s(x) and the output s(x)/σ suffice. The norms are plain
  InstanceNorm++ (per-channel γ, α, β) and only the residual blocks and the output have them; the
  RefineBlocks have no normalisation at all.
- Chained residual pooling uses 5x5 *max* pooling (their `RefineBlock` default), NCSN average.
- Depth follows the resolution: `base` (the authors' `NCSNv2`, used for CIFAR-10 32x32 *and*
  CelebA 64x64 by their runner's `get_model`), `deeper` (`NCSNv2Deeper`, LSUN church 64x64,
  bedroom and tower 128x128: one more subsampling stage, widths up to 4·ngf) and `deepest`
  (`NCSNv2Deepest`, FFHQ 256x256: two more).

The stage list of a depth, shallowest first, is (width, dilation) per stage: stage 1 keeps the
resolution; every later stage's first block either halves it (dilation 1: conv then 2x2 mean pool,
in both branches) or keeps it and dilates its convolutions instead. RefineBlocks run from the
deepest stage back up: the block at stage k fuses stage k's output with the deeper block's output
and produces the width of stage k − 1 (stage 1's width at the top).

The network takes σ values, not level indices: s(x)/σ needs nothing else, so it is not tied to a
σ list (a study's schedule, a σ off the list and score error at any σ all work).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scorebench.models.mlp import ACTIVATIONS
from scorebench.models.norms import InstanceNormPP, check_channel_var
from scorebench.tensors import as_sigma_batch, per_sample

# (width multiple of ngf, dilation) per stage, shallowest first; stage 1 never resamples.
DEPTHS = {
    "base": ((1, 1), (2, 1), (2, 2), (2, 4)),
    "deeper": ((1, 1), (2, 1), (2, 1), (4, 2), (4, 4)),
    "deepest": ((1, 1), (2, 1), (2, 1), (2, 1), (4, 2), (4, 4)),
}


def conv3x3(c_in: int, c_out: int, *, dilation: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Module):
    """A convolution, then the mean of each 2x2 block (the authors' `ConvMeanPool`; even sizes)."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(x), 2)


class ResBlock(nn.Module):
    """norm-act-conv twice plus a shortcut; attribute names follow the authors' `ResidualBlock`
    (normalize1, conv1, normalize2, conv2, shortcut) so their state dicts map one to one.

    `down` marks a stage's first block: with dilation 1 it halves the resolution (conv2 and the
    shortcut are ConvMeanPool, the shortcut a 1x1); dilated, it keeps the resolution and its shortcut
    is a dilated 3x3 conv. Either way conv1 keeps the input width. Otherwise conv1 changes the width
    and the shortcut is the identity (equal widths) or a 1x1 conv.
    """

    def __init__(self, c_in: int, c_out: int, act: nn.Module, *, down: bool, dilation: int, channel_var: str):
        super().__init__()
        mid = c_in if down else c_out
        self.normalize1 = InstanceNormPP(c_in, channel_var=channel_var)
        self.conv1 = conv3x3(c_in, mid, dilation=dilation)
        self.normalize2 = InstanceNormPP(mid, channel_var=channel_var)
        if down and dilation == 1:
            self.conv2 = ConvMeanPool(mid, c_out, 3)
            self.shortcut = ConvMeanPool(c_in, c_out, 1)
        else:
            self.conv2 = conv3x3(mid, c_out, dilation=dilation)
            if down:
                self.shortcut = conv3x3(c_in, c_out, dilation=dilation)
            elif c_in != c_out:
                self.shortcut = nn.Conv2d(c_in, c_out, 1)
            else:
                self.shortcut = None
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.normalize1(x)))
        h = self.conv2(self.act(self.normalize2(h)))
        return h + (x if self.shortcut is None else self.shortcut(x))


class RCU(nn.Module):
    """Residual conv units: `blocks` × (`stages` × act then bias-free 3x3 conv, plus the input)."""

    def __init__(self, channels: int, blocks: int, act: nn.Module, stages: int = 2):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.ModuleList(conv3x3(channels, channels, bias=False) for _ in range(stages)) for _ in range(blocks)
        )
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for convs in self.convs:
            h = x
            for conv in convs:
                h = conv(self.act(h))
            x = x + h
        return x


class CRP(nn.Module):
    """Chained residual pooling: act, then each stage max-pools (5x5, stride 1) the previous stage's
    output, convolves it (bias-free 3x3) and adds it to the running sum."""

    def __init__(self, channels: int, act: nn.Module, stages: int = 2):
        super().__init__()
        self.convs = nn.ModuleList(conv3x3(channels, channels, bias=False) for _ in range(stages))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        path = x
        for conv in self.convs:
            path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """RCU (2 blocks) per input, multi-resolution fusion (a 3x3 conv per input, bilinear to the first
    input's size, summed) when there are several, CRP, output RCU (1 block; 3 at the top)."""

    def __init__(self, in_channels: list[int], channels: int, act: nn.Module, *, end: bool = False):
        super().__init__()
        self.adapt = nn.ModuleList(RCU(c, 2, act) for c in in_channels)
        self.msf = nn.ModuleList(conv3x3(c, channels) for c in in_channels) if len(in_channels) > 1 else None
        self.crp = CRP(channels, act)
        self.out = RCU(channels, 3 if end else 1, act)

    def forward(self, xs: list[torch.Tensor], size) -> torch.Tensor:
        hs = [adapt(x) for adapt, x in zip(self.adapt, xs)]
        if self.msf is None:
            h = hs[0]
        else:
            h = 0
            for conv, x in zip(self.msf, hs):
                y = conv(x)
                if tuple(y.shape[-2:]) != tuple(size):
                    y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=True)
                h = h + y
        return self.out(self.crp(h))


class ScoreNCSNv2(nn.Module):
    """s_θ(x, σ) = f_θ(x)/σ for images: the authors' NCSNv2 networks.

    Args:
        shape: (C, H, W); H and W divisible by 2^(number of subsampling stages) (base: 2, deeper: 4,
            deepest: 8).
        ngf: base width; the authors use 128 for every data set.
        depth: "base" (NCSNv2: CIFAR-10, CelebA 64), "deeper" (LSUN), "deepest" (FFHQ).
        activation: one of ACTIVATIONS; the authors' is ELU.
        channel_var: variance of the channel means in InstanceNorm++ (models/norms.py); the authors'
            is "unbiased".
        scale_by_sigma: divide the output by σ (NCSNv2 always does; false is an ablation).
        rescale_input: map [0, 1] inputs to [-1, 1] first (the authors do unless the data are
            rescaled or logit-transformed already).
    """

    # Parameter counts (3 channels, independent of the image size and of L: no σ conditioning):
    # cifar10 = celeba (NCSNv2, ngf 128) 29,694,083; church (NCSNv2Deeper, ngf 128) 83,445,379;
    # ffhq (NCSNv2Deepest, ngf 128) 94,132,611. tests/test_ncsnv2.py counts them layer by layer.
    PRESETS = {
        name: {"ngf": ngf, "depth": depth, "activation": "elu", "scale_by_sigma": True,
               "channel_var": "unbiased", "rescale_input": True}
        for name, ngf, depth in (
            ("tiny", 16, "base"), ("cifar10", 128, "base"), ("celeba", 128, "base"),
            ("church", 128, "deeper"), ("ffhq", 128, "deepest"),
        )
    }  # fmt: skip

    @staticmethod
    def check_shape(shape: tuple[int, ...]) -> str | None:
        if len(shape) != 3:
            return "needs an image shape (C, H, W), e.g. (3, 32, 32)"
        if min(shape[1:]) < 2:
            return "needs H and W >= 2"
        return None

    def __init__(self, shape, *, ngf, depth, activation, scale_by_sigma, channel_var="unbiased", rescale_input=True):
        super().__init__()
        from scorebench.errors import ScorebenchError

        if depth not in DEPTHS:
            raise ScorebenchError(f"model 'ncsnv2': unknown depth {depth!r}; choose one of {list(DEPTHS)}")
        check_channel_var(channel_var)
        self.shape = tuple(shape)
        downs = sum(1 for _, d in DEPTHS[depth][1:] if d == 1)
        if any(side % 2**downs for side in self.shape[1:]):
            raise ScorebenchError(
                f"model 'ncsnv2': depth {depth!r} halves the resolution {downs} times; shape {self.shape} "
                f"needs H and W divisible by {2**downs}"
            )
        self.scale_by_sigma = bool(scale_by_sigma)
        self.rescale_input = bool(rescale_input)
        act = ACTIVATIONS[activation]()
        c_img = self.shape[0]
        widths = [m * ngf for m, _ in DEPTHS[depth]]
        self.begin_conv = nn.Conv2d(c_img, ngf, 3, padding=1)
        stages, c_prev = [], ngf
        for k, (width, (_, dilation)) in enumerate(zip(widths, DEPTHS[depth])):
            first = ResBlock(c_prev, width, act, down=k > 0, dilation=dilation, channel_var=channel_var)
            second = ResBlock(width, width, act, down=False, dilation=dilation, channel_var=channel_var)
            stages.append(nn.ModuleList([first, second]))
            c_prev = width
        self.stages = nn.ModuleList(stages)
        # refines[j] handles stage n-1-j (deepest first) and outputs the width of the stage above it
        n = len(widths)
        self.refines = nn.ModuleList(
            RefineBlock([widths[k]] if k == n - 1 else [widths[k], widths[k]], widths[max(k - 1, 0)], act, end=k == 0)
            for k in reversed(range(n))
        )
        self.normalizer = InstanceNormPP(ngf, channel_var=channel_var)
        self.act = act
        self.end_conv = nn.Conv2d(ngf, c_img, 3, padding=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Score estimate with x's shape; sigma is (B,) (a float or 0-d tensor is broadcast), > 0."""
        sigma = as_sigma_batch(sigma, x)
        h = self.begin_conv(2 * x - 1 if self.rescale_input else x)
        skips = []
        for stage in self.stages:
            for block in stage:
                h = block(h)
            skips.append(h)
        h = None
        for refine, skip in zip(self.refines, reversed(skips)):
            h = refine([skip] if h is None else [skip, h], skip.shape[-2:])
        out = self.end_conv(self.act(self.normalizer(h)))
        if self.scale_by_sigma:
            out = out / per_sample(sigma, out)
        return out
