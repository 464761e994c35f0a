"""The one interface every dataset answers, toy or image.

Score error, the oracle model and the samplers never branch on the dataset kind: they ask a
`Dataset` for its training/held-out tensors and, through its `distribution`, for the exact
log p_σ and ∇ log p_σ (closed form for toys; the perturbed empirical training distribution for
images).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.data.transforms import ImageTransform  # noqa: F401 (the annotation)


@dataclass
class Dataset:
    """A fixed train/test split plus the exact perturbed density where one is known.

    Attributes:
        name: registry name (also the path wildcard).
        kind: "toy" (vectors, closed-form density) or "image" (C, H, W in [0, 1]).
        train, test: float32 tensors (N, *shape). Images are scaled to [0, 1].
        distribution: the mixture whose p_σ is exact: the true toy density, or the empirical
            training distribution for images (exact for σ > 0).
        info: provenance (source file, scaling, seed).
        train_labels, test_labels: class labels where the source has them (they train the
            dataset-specific feature network used for FID on small images); None otherwise.
        transform: images only: the pipeline options (data/transforms.py). `train` and `test` are in
            its model space; `to_unit` maps samples back to images in [0, 1], `to_model` the other way.
    """

    name: str
    kind: str
    train: torch.Tensor
    test: torch.Tensor
    distribution: IsotropicGaussianMixture | None = None
    info: dict = field(default_factory=dict)
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    transform: "ImageTransform | None" = None

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (or toy points) -> the space `train` lives in."""
        return x if self.transform is None else self.transform.to_model(x)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Samples in model space -> images in [0, 1] (toy points and untransformed images: as they are)."""
        return x if self.transform is None else self.transform.to_unit(x)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int:
        return int(self.train[0].numel())

    @property
    def has_score(self) -> bool:
        return self.distribution is not None

    def score(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """∇ₓ log p_σ(x), exact."""
        return self.distribution.score(x, sigma)

    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """log p_σ(x), exact (float64, shape (B,))."""
        return self.distribution.log_prob(x, sigma)
