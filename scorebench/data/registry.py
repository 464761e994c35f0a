"""What is known about each dataset before it is loaded: its family, shape, labels and files.

The config layer (scorebench.study) refuses impossible cells when a config is read, before any
job runs, so it needs these facts without importing torch or touching the data. They live here,
once, beside the loaders that they describe (tests/test_data.py checks them against real loads).
"""

from __future__ import annotations

import math

TOY_DATASETS = ("gmm_2mode", "gmm_ring8", "gmm_grid25", "swiss_roll", "moons", "gmm_nd")
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "celeba", "npz", "image_folder")
DATASETS = TOY_DATASETS + IMAGE_DATASETS
# Toys whose samples have mode weights (a fixed 2-D Gaussian mixture).
MIXTURE_DATASETS = ("gmm_2mode", "gmm_ring8", "gmm_grid25")
# Datasets whose loader returns class labels (what the FID feature network trains on).
LABELLED_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")

GMM_ND_DEFAULT_DIM = 2  # gmm_nd's `dim` option when a preset leaves it out
CELEBA_DEFAULT_SIZE = 32  # celeba's `image_size` option when a preset leaves it out
# Per-sample shape of the datasets whose shape does not depend on options or files.
SHAPES = {
    "gmm_2mode": (2,), "gmm_ring8": (2,), "gmm_grid25": (2,), "swiss_roll": (2,), "moons": (2,),
    "digits": (1, 8, 8), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32),
}  # fmt: skip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what image_folder reads
NPZ_IMAGES = "x"  # the array of an npz dataset's (training) images


def dataset_dim(kind: str, options: dict) -> int | None:
    """Data dimension D of a dataset preset ({kind, options}) where it is known before loading, else None."""
    if kind == "gmm_nd":
        return int(options.get("dim", GMM_ND_DEFAULT_DIM))
    if kind == "celeba":
        return 3 * int(options.get("image_size", CELEBA_DEFAULT_SIZE)) ** 2
    if kind in SHAPES:
        return math.prod(SHAPES[kind])
    return None
