"""σ-conditioned U-Net score network for images (C, H, W).

A small DDPM/NCSN++-style U-Net (Ho et al. 2020; Song et al. 2021): residual blocks with GroupNorm
and SiLU, the σ embedding added to every block, one skip connection per resolution. Upsampling
interpolates to the skip's exact size, so odd sizes (28 -> 14 -> 7 -> 4 -> 7) work. GroupNorm is
per-sample, so a sample's score never depends on the rest of its batch (BatchNorm would).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from scorebench.models.mlp import ACTIVATIONS, SigmaEmbedding
from scorebench.tensors import as_sigma_batch, per_sample


def group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    """GroupNorm with gcd(channels, max_groups) groups: always divides the width, however odd."""
    return nn.GroupNorm(math.gcd(channels, max_groups), channels)


class ResBlock(nn.Module):
    """norm-act-conv, add the σ embedding per channel, norm-act-conv, plus a (1x1-projected) skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, activation: str):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = group_norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over pixels (used at the lowest resolution only, where it is cheap)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        attn = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(c), dim=-1)  # (B, HW, HW)
        out = (v @ attn.transpose(1, 2)).reshape(b, c, h, w)
        return x + self.proj(out)


class ScoreUNet(nn.Module):
    """s_θ(x, σ) for images.

    Args:
        shape: (C, H, W).
        channels: width at the top resolution.
        channel_mult: width multiplier per resolution; len(channel_mult) - 1 downsamplings.
        res_blocks: residual blocks per resolution on the way down (>= 1; one more on the way up).
        embed_dim: size of the sinusoidal σ embedding (then an MLP to 4 * channels).
        groups: maximum GroupNorm group count (the gcd with each width is used).
        attention: self-attention in the middle (lowest resolution) block.
        activation: one of ACTIVATIONS (smooth, for exact score matching).
        scale_by_sigma: return s(x, σ)/σ (NCSNv2 technique 3, Song & Ermon 2020); σ must be > 0.
    """

    # Parameter counts for shape (3, 32, 32): tiny 152,227; small 5,343,491; base 30,064,643
    # (one channel: 151,649; 5,341,185; 30,060,033). Independent of H and W.
    PRESETS = {
        "tiny": {
            "channels": 16, "channel_mult": [1, 2], "res_blocks": 1, "embed_dim": 32, "groups": 8,
            "attention": False, "activation": "silu", "scale_by_sigma": False,
        },
        "small": {
            "channels": 64, "channel_mult": [1, 2, 2], "res_blocks": 2, "embed_dim": 64, "groups": 16,
            "attention": False, "activation": "silu", "scale_by_sigma": False,
        },
        "base": {
            "channels": 128, "channel_mult": [1, 2, 2, 2], "res_blocks": 2, "embed_dim": 128, "groups": 32,
            "attention": True, "activation": "silu", "scale_by_sigma": False,
        },
    }  # fmt: skip

    @staticmethod
    def check_shape(shape: tuple[int, ...]) -> str | None:
        """None if the network accepts this per-sample shape, else why not."""
        if len(shape) != 3:
            return "needs an image shape (C, H, W), e.g. (1, 28, 28)"
        return None

    def __init__(
        self, shape, *, channels, channel_mult, res_blocks, embed_dim, groups, attention, activation, scale_by_sigma
    ):
        super().__init__()
        self.shape = tuple(shape)
        self.scale_by_sigma = bool(scale_by_sigma)
        c_img = self.shape[0]
        emb_dim = 4 * channels
        self.embed = SigmaEmbedding(embed_dim)
        self.embed_mlp = nn.Sequential(
            nn.Linear(self.embed.out_dim, emb_dim), ACTIVATIONS[activation](), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(c_img, channels, 3, padding=1)

        widths = [channels * m for m in channel_mult]
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        c = channels
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(res_blocks):
                blocks.append(ResBlock(c, width, emb_dim, groups, activation))
                c = width
            self.down_blocks.append(blocks)
            if level < len(widths) - 1:
                self.downsamples.append(nn.Conv2d(c, c, 3, stride=2, padding=1))

        self.mid1 = ResBlock(c, c, emb_dim, groups, activation)
        self.mid_attn = SelfAttention(c, groups) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, groups, activation)

        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            blocks = nn.ModuleList()
            blocks.append(ResBlock(c + width, width, emb_dim, groups, activation))  # h ++ skip
            for _ in range(res_blocks):
                blocks.append(ResBlock(width, width, emb_dim, groups, activation))
            c = width
            self.up_blocks.append(blocks)
            if level > 0:
                self.upsamples.append(nn.Conv2d(c, c, 3, padding=1))

        self.norm_out = group_norm(c, groups)
        self.act_out = ACTIVATIONS[activation]()
        self.conv_out = nn.Conv2d(c, c_img, 3, padding=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Score estimate with x's shape; sigma is (B,) (a float or 0-d tensor is broadcast)."""
        sigma = as_sigma_batch(sigma, x)
        emb = self.embed_mlp(self.embed(sigma))
        h = self.conv_in(x)
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, blocks in enumerate(self.up_blocks):
            skip = skips.pop()
            if i > 0:  # back to the skip's exact size (odd sizes round up on the way down)
                h = self.upsamples[i - 1](F.interpolate(h, size=skip.shape[-2:], mode="nearest"))
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
        out = self.conv_out(self.act_out(self.norm_out(h)))
        if self.scale_by_sigma:
            out = out / per_sample(sigma, out)
        return out
