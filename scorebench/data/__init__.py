"""Datasets by registry name: toys with exact scores (2-D, and gmm_nd in any dimension), and image datasets.

`load_dataset(name, **params)` is the one entry point; every dataset returns a `Dataset`
(see base.py). Image loaders import torchvision only when called, so toy jobs stay light.
"""

from __future__ import annotations

from scorebench.data.base import Dataset
from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.errors import ScorebenchError

TOY_DATASETS = ("gmm_2mode", "gmm_ring8", "gmm_grid25", "swiss_roll", "moons", "gmm_nd")
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "npz", "image_folder")
DATASETS = TOY_DATASETS + IMAGE_DATASETS


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


__all__ = ["DATASETS", "TOY_DATASETS", "IMAGE_DATASETS", "Dataset", "IsotropicGaussianMixture", "load_dataset"]
