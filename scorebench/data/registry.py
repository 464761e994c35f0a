"""What is known about each dataset before it is loaded: its family, shape, labels and files.

The config layer (scorebench.study) refuses impossible cells when a config is read, before any
job runs, so it needs these facts without importing torch or touching the data. They live here,
once, beside the loaders that they describe (tests/test_registry.py checks them against real loads).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

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


def npz_image_shape(path) -> tuple:
    """The shape of an npz file's image array, read from the archive's directory and the array's
    header only (no pixel is read). Raises ValueError naming what is wrong with the file."""
    from numpy.lib import format as npy

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    header = None
    try:
        with zipfile.ZipFile(path) as z:
            names = [n.removesuffix(".npy") for n in z.namelist()]
            if NPZ_IMAGES in names:
                with z.open(f"{NPZ_IMAGES}.npy") as fh:
                    major, _ = npy.read_magic(fh)
                    header = (npy.read_array_header_1_0 if major == 1 else npy.read_array_header_2_0)(fh)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from None
    if header is None:
        raise ValueError(f"{path}: no array {NPZ_IMAGES!r} (found {sorted(names)}); store the images as {NPZ_IMAGES}=...")
    shape, _, dtype = header
    if dtype.hasobject:
        raise ValueError(f"{path}: array {NPZ_IMAGES!r} holds Python objects; use uint8 or float images")
    if len(shape) not in (3, 4) or shape[0] < 1:
        raise ValueError(f"{path}: array {NPZ_IMAGES!r} has shape {shape}; use (N, H, W), (N, H, W, C) or (N, C, H, W)")
    return tuple(shape)


def has_images(folder) -> bool:
    """Whether an image folder holds at least one file image_folder would read (stops at the first)."""
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in Path(folder).rglob("*"))
