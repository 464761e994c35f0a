"""A small CNN classifier whose penultimate layer is an offline embedding for FID, KID and PRC.

FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018) are distances between feature
distributions. The usual features come from Inception-v3, which must be downloaded and was
trained on 299×299 photographs, so it says little about 8×8 digits. A classifier trained on the
dataset's own labels gives a domain-fitting embedding. It trains in seconds on a CPU, needs no
network, and is pinned by a content hash, so the features behind a cached reference are known.
This follows the "domain classifier" FID used for MNIST-like data in the score-model literature.

The network takes float images (B, C, H, W) in [0, 1] and exposes two feature layers:
"pool" (the penultimate, pooled conv features, 8·channels-D) and "logits" (one per class).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import skip_init

from scorebench.checkpoint import save_atomic
from scorebench.errors import ScorebenchError

FORMAT = "scorebench.feature_net/1"
FEATURE_LAYERS = ("pool", "logits")


class FeatureNet(nn.Module):
    """Convs down to about 4×4 px, a 2×2 average pool ("pool"), then a linear classifier ("logits").

    Shaped like Inception-v3 as FID uses it: "pool" holds pooled convolutional features and
    feeds the classifier directly, so it keeps spatial layout. A class-only bottleneck MLP was
    tried first; its features were invariant enough that FID did not rise monotonically as
    digits were blended into noise. The net is tiny (about 0.25 M multiply-adds per 8×8 image) and
    trains in seconds on a CPU. Layers are built without drawing from the global RNG
    (`skip_init`); `init_parameters` fills them from an explicit generator.

    Attributes:
        config: plain dict (shape, n_classes, channels, name) that rebuilds the net; "pool"
            has 8·channels dimensions (2·channels maps, 2×2 each).
        info: training provenance (held-out accuracy, seed, ...), saved with the weights.
    """

    def __init__(self, *, shape, n_classes: int, channels: int = 16, name: str = "images"):
        super().__init__()
        c, h, w = (int(v) for v in shape)
        self.config = {"shape": [c, h, w], "n_classes": int(n_classes), "channels": int(channels), "name": str(name)}
        self.info: dict = {}
        layers: list[nn.Module] = [skip_init(nn.Conv2d, c, channels, 3, padding=1), nn.ReLU()]
        size, width = min(h, w), channels
        while size > 4:  # 8 -> 4; 28 -> 14 -> 7 -> 4; 32 -> 16 -> 8 -> 4
            layers += [skip_init(nn.Conv2d, width, 2 * channels, 3, stride=2, padding=1), nn.ReLU()]
            size, width = (size + 1) // 2, 2 * channels
        layers += [skip_init(nn.Conv2d, width, 2 * channels, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = skip_init(nn.Linear, 2 * channels * 4, n_classes)

    def init_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's default (Kaiming-uniform) initialisation, drawn from `generator`."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Both feature layers for float images in [0, 1].

        Args:
            x: (B, C, H, W) float tensor in [0, 1].

        Returns:
            {"pool": (B, 8·channels), "logits": (B, n_classes)}.
        """
        pool = self.body(2.0 * x - 1.0)
        return {"pool": pool, "logits": self.head(pool)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)["logits"]


def weights_hash(net: FeatureNet) -> str:
    """SHA-256 of the config and every weight (keys sorted), the identity of a feature net.

    Any change of weights changes the hash, and the hash is part of the extractor name and of
    every reference-cache name, so cached features are never reused with other weights.
    """
    digest = hashlib.sha256(json.dumps(net.config, sort_keys=True).encode())
    state = net.state_dict()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _check_training_inputs(images: torch.Tensor, labels: torch.Tensor, holdout_fraction: float) -> None:
    if not torch.is_tensor(images) or images.dim() != 4 or not images.is_floating_point():
        raise ScorebenchError(
            f"feature net: images must be a float tensor (N, C, H, W) in [0, 1], got {_describe(images)}"
        )
    if not torch.is_tensor(labels) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ScorebenchError(
            f"feature net: labels must be an integer tensor (N,) matching {images.shape[0]} images, "
            f"got {_describe(labels)}"
        )
    if labels.is_floating_point() or int(labels.min()) < 0:
        raise ScorebenchError("feature net: labels must be non-negative integers (class indices)")
    if float(images.min()) < -1e-6 or float(images.max()) > 1 + 1e-6:
        low, high = float(images.min()), float(images.max())
        raise ScorebenchError(f"feature net: images must lie in [0, 1], got [{low:.3g}, {high:.3g}]")
    if not 0.0 < holdout_fraction < 1.0:
        raise ScorebenchError(f"feature net: holdout_fraction must be in (0, 1), got {holdout_fraction}")
    if images.shape[0] < 10:
        raise ScorebenchError(f"feature net: need at least 10 labelled images, got {images.shape[0]}")


def _describe(x) -> str:
    return f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__


@torch.no_grad()
def _accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        logits = net(images[start : start + batch_size])
        correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / images.shape[0]


def train_feature_net(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    name: str = "images",
    n_classes: int | None = None,
    channels: int = 16,
    epochs: int = 15,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> FeatureNet:
    """Train the classifier with Adam and cross-entropy; measure accuracy on a held-out split.

    Deterministic for a given seed: the split, the initialisation and the batch order all come
    from one `torch.Generator`; no dropout or augmentation. Runs on the images' device.

    Args:
        images: (N, C, H, W) float in [0, 1].
        labels: (N,) integer class indices (for sklearn digits: `load_digits().target`).
        name: short dataset tag, part of the extractor name (e.g. "digits").
        n_classes: number of classes; `labels.max() + 1` when None.
        channels: width of the convs; "pool" has 8·channels dimensions.
        epochs, batch_size, lr: optimisation settings.
        steps: optimiser steps (the config's `evaluation.fid.feature_net_steps`); overrides epochs.
        holdout_fraction: share of images kept out of training to measure accuracy.
        seed: seeds the generator behind split, initialisation and batch order.

    Returns:
        The trained `FeatureNet` in eval mode; `net.info["heldout_accuracy"]` holds the accuracy.
    """
    _check_training_inputs(images, labels, holdout_fraction)
    device = images.device
    labels = labels.to(device=device, dtype=torch.long)
    n_classes = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    generator = torch.Generator().manual_seed(int(seed))

    order = torch.randperm(images.shape[0], generator=generator).to(device)
    n_heldout = max(1, int(round(holdout_fraction * images.shape[0])))
    heldout, train = order[:n_heldout], order[n_heldout:]
    x_train, y_train = images[train], labels[train]

    net = FeatureNet(shape=images.shape[1:], n_classes=n_classes, channels=channels, name=name)
    net.init_parameters(generator)
    net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    steps_per_epoch = math.ceil(x_train.shape[0] / batch_size)
    total_steps = int(steps) if steps is not None else int(epochs) * steps_per_epoch
    if total_steps < 1:
        raise ScorebenchError(f"feature net: steps/epochs must be positive, got steps={steps}, epochs={epochs}")
    net.train()
    for step in range(total_steps):
        if step % steps_per_epoch == 0:  # a fresh shuffle each epoch
            perm = torch.randperm(x_train.shape[0], generator=generator).to(device)
        start = (step % steps_per_epoch) * batch_size
        idx = perm[start : start + batch_size]
        loss = nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval()
    net.requires_grad_(False)
    net.info = {
        "heldout_accuracy": _accuracy(net, images[heldout], labels[heldout], 4 * batch_size),
        "n_train": int(train.numel()),
        "n_heldout": int(n_heldout),
        "steps": int(total_steps),
        "lr": float(lr),
        "seed": int(seed),
    }
    return net


def save_feature_net(net: FeatureNet, path: str | os.PathLike) -> str:
    """Write config, weights, training info and their SHA-256 atomically (temp file + os.replace).

    Args:
        net: a trained `FeatureNet`.
        path: destination file (its folder is created).

    Returns:
        The weights hash (hex), also stored in the file and checked by `load_feature_net`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = weights_hash(net)
    payload = {
        "format": FORMAT,
        "config": net.config,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "info": dict(net.info),
        "sha256": digest,
    }
    save_atomic(payload, path)
    return digest


def load_feature_net(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> FeatureNet:
    """Rebuild a saved feature net and verify its content hash.

    Args:
        path: a file written by `save_feature_net`.
        map_location: device for the weights.

    Returns:
        The `FeatureNet` in eval mode, with `.weights_hash` (hex) and `.info` set.

    Raises:
        ScorebenchError: missing, unreadable or tampered file (hash mismatch).
    """
    path = Path(path)
    if not path.is_file():
        raise ScorebenchError(
            f"feature net file {str(path)!r} does not exist; train one first (train_feature_net + save_feature_net)"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign file
        reason = type(exc).__name__
        raise ScorebenchError(f"feature net file {str(path)!r} is unreadable ({reason}); re-create it") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ScorebenchError(f"feature net file {str(path)!r} is not a {FORMAT} file")
    config = payload["config"]
    net = FeatureNet(**config)
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise ScorebenchError(
            f"feature net file {str(path)!r}: weights do not match its config; re-create it"
        ) from None
    net.to(map_location)
    net.eval()
    net.requires_grad_(False)
    net.info = dict(payload.get("info", {}))
    net.weights_hash = weights_hash(net)
    if net.weights_hash != payload.get("sha256"):
        raise ScorebenchError(
            f"feature net file {str(path)!r}: content hash mismatch (corrupt or edited); re-create it"
        )
    return net
