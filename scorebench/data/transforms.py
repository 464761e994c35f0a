"""The authors' image pipeline options: uniform dequantisation, random horizontal flip, logit
transform and [−1, 1] rescaling, as a dataset's `ImageTransform`.

As the authors define them (ermongroup/ncsnv2 datasets/__init__.py `data_transform`,
`inverse_data_transform`, `logit_transform`, and the torchvision transforms of `get_dataset`;
ermongroup/ncsn runners/anneal_runner.py `train`, which always dequantises):
- random_flip: each training image is mirrored left-right with probability 1/2 (torchvision's
  RandomHorizontalFlip, applied to training images only).
- uniform_dequantization: x ← x/256·255 + u/256 with u ~ U[0, 1) per pixel, i.e. pixel level
  k ∈ {0..255} becomes uniform on [k/256, (k+1)/256): a continuous density instead of 256 spikes.
  Drawn anew for every training batch.
- rescaled: the model sees 2x − 1 ∈ [−1, 1] (inverse (y + 1)/2).
- logit_transform: the model sees logit(λ + (1 − 2λ)x), λ = 1e-6 (inverse: sigmoid, then the λ map
  undone; the authors' inverse is the plain sigmoid, which differs by at most λ = 1e-6).
  If both rescaled and logit_transform are set, the authors' code rescales; here it is refused.

Where each happens here: the deterministic map (rescaled, logit) is applied once when the data set
is loaded, so `Dataset.train`/`test` are in *model space*, the space the network, the losses, the
σ levels, σ₁ auto, the exact (empirical) score and score error all live in. The random ones (flip,
dequantisation) are redrawn per training minibatch (`augment`, applied by the training loss, see
components.py), from the loop's own generator, so resumed runs stay exact. Sampler chains start
from U[0, 1] mapped into model space (the authors' torch.rand then data_transform, without its
dequantisation, which only blurs the start by 1/256), and samples go back to [0, 1] (`to_unit`,
clamped as the authors' inverse does) before they are written, so FID/KID/PR and the figures see
images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from scorebench.errors import ScorebenchError

LOGIT_LAMBDA = 1e-6
DEQUANT_LEVELS = 256.0


@dataclass(frozen=True)
class ImageTransform:
    uniform_dequantization: bool = False
    random_flip: bool = False
    logit_transform: bool = False
    rescaled: bool = False

    def __post_init__(self):
        for key, value in asdict(self).items():
            if not isinstance(value, bool):
                raise ScorebenchError(f"dataset.{key}: need true or false, got {value!r}")
        if self.logit_transform and self.rescaled:
            raise ScorebenchError("dataset: logit_transform and rescaled exclude each other (pick one model space)")

    @property
    def space(self) -> str:
        """Where the model's data live: unit ([0, 1]), rescaled ([−1, 1]) or logit."""
        return "rescaled" if self.rescaled else "logit" if self.logit_transform else "unit"

    @property
    def augments(self) -> bool:
        return self.uniform_dequantization or self.random_flip

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> model space."""
        if self.rescaled:
            return 2 * x - 1
        if self.logit_transform:
            p = LOGIT_LAMBDA + (1 - 2 * LOGIT_LAMBDA) * x
            return torch.log(p) - torch.log1p(-p)
        return x

    def _unit(self, y: torch.Tensor) -> torch.Tensor:
        if self.rescaled:
            return (y + 1) / 2
        if self.logit_transform:
            return (torch.sigmoid(y) - LOGIT_LAMBDA) / (1 - 2 * LOGIT_LAMBDA)
        return y

    def to_unit(self, y: torch.Tensor) -> torch.Tensor:
        """Model space -> images in [0, 1], clamped as the authors' inverse_data_transform does. In the
        unit space the samples are returned untouched (what the pipeline did before these options)."""
        return y if self.space == "unit" else self._unit(y).clamp(0.0, 1.0)

    def augment(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One training minibatch in model space, flipped and dequantised afresh (no-op without either)."""
        if not self.augments:
            return y
        x = self._unit(y.double()) if self.space == "logit" else self._unit(y)  # float64: logit's ends
        if self.random_flip:
            flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
            x = torch.where(flip.reshape(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        if self.uniform_dequantization:
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x / DEQUANT_LEVELS * (DEQUANT_LEVELS - 1) + u / DEQUANT_LEVELS
        return self.to_model(x).to(y.dtype)

    def as_dict(self) -> dict:
        return {**asdict(self), "space": self.space}


IDENTITY = ImageTransform()


def augmented_loss(loss_fn, transform: ImageTransform):
    """`loss_fn` on minibatches flipped and dequantised first, drawing from the loop's generator."""
    if not transform.augments:
        return loss_fn

    def loss(model, x, sigma, weight, *, generator=None, **kwargs):
        return loss_fn(model, transform.augment(x, generator), sigma, weight, generator=generator, **kwargs)

    return loss
