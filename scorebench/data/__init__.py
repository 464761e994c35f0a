"""Datasets by registry name: toys with exact scores (2-D, and gmm_nd in any dimension), and image datasets.

`load_dataset(name, **params)` is the one entry point; every dataset returns a `Dataset`
(see base.py). What is known before loading (names, families, shapes, labels) is in registry.py,
which imports neither torch nor the loaders, so the config layer can read it for free; `Dataset`
and `IsotropicGaussianMixture` are imported on first use for the same reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scorebench.data.registry import DATASETS, IMAGE_DATASETS, TOY_DATASETS
from scorebench.errors import ScorebenchError

if TYPE_CHECKING:
    from scorebench.data.base import Dataset


def load_dataset(name: str, **params) -> Dataset:
    """Load a dataset by registry name; unknown names and parameters fail with one line naming them."""
    if name == "gmm_nd":  # options dim, n_modes, radius, std besides the draws
        from scorebench.data.toys import load_gmm_nd

        loader, args = load_gmm_nd, ()
    elif name in TOY_DATASETS:
        from scorebench.data.toys import load_toy

        loader = load_toy
        args = (name,)
    elif name in IMAGE_DATASETS:
        from scorebench.data.images import load_image_dataset

        loader = load_image_dataset
        args = (name,)
    else:
        raise ScorebenchError(f"dataset: unknown {name!r}; choose one of {list(DATASETS)}")
    try:
        return loader(*args, **params)
    except TypeError as exc:  # an unexpected keyword is a config typo
        raise ScorebenchError(f"dataset {name!r}: bad parameters {sorted(params)}: {exc}") from None


def __getattr__(name):
    """`Dataset` and `IsotropicGaussianMixture` on first use (they import torch)."""
    if name == "Dataset":
        from scorebench.data.base import Dataset

        return Dataset
    if name == "IsotropicGaussianMixture":
        from scorebench.data.mixture import IsotropicGaussianMixture

        return IsotropicGaussianMixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DATASETS", "TOY_DATASETS", "IMAGE_DATASETS", "Dataset", "IsotropicGaussianMixture", "load_dataset"]
