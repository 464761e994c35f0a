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


# The per-coordinate variance s² of each toy (the mean over coordinates of Var x_j) that the
# convergence check of a sampler (scorebench/checks.py, scorebench/budgets.py `relaxation`) compares
# its steps with. Mixtures: exact from the parameters data/toys.py builds them with (the within-mode
# std² plus the weighted spread of the means; tests/test_registry.py checks them against the loaded
# mixtures). Point clouds (a random point set, smoothed by `bandwidth`): stated values, rounded down
# from the variance of 10^6 points (swiss roll 7.38, 2000-point sets 7.29-7.47; moons 3.11), plus
# bandwidth², so the check never refuses a preset for a variance it overstated. Images: None, no check (their model space depends on transforms).
POINT_CLOUD_VARIANCE = {"swiss_roll": 7.0, "moons": 3.0}
POINT_CLOUD_DEFAULT_BANDWIDTH = 0.1  # data/toys.py load_toy's `bandwidth`


def _mixture_variance(means, std: float, weights=None) -> float:
    """Per-coordinate variance of an isotropic mixture Σ_k w_k N(m_k, std² I): std² + (Σ_k w_k ‖m_k‖² − ‖m̄‖²)/D."""
    k, dim = len(means), len(means[0])
    w = [1.0 / k] * k if weights is None else [float(v) / sum(weights) for v in weights]
    mean = [sum(w[i] * means[i][j] for i in range(k)) for j in range(dim)]
    spread = sum(w[i] * sum(v * v for v in means[i]) for i in range(k)) - sum(v * v for v in mean)
    return float(std) ** 2 + spread / dim


def data_variance(kind: str, options: dict) -> float | None:
    """Per-coordinate variance s² of a toy preset ({kind, options}) known before loading, else None (images)."""
    if kind == "gmm_2mode":  # 0.2·N((-5,-5), I) + 0.8·N((5,5), I)
        return _mixture_variance([[-5.0, -5.0], [5.0, 5.0]], 1.0, [0.2, 0.8])
    if kind == "gmm_ring8":  # 8 equal N(5·(cos, sin)(2πk/8), 0.5² I)
        angles = [2 * math.pi * k / 8 for k in range(8)]
        return _mixture_variance([[5.0 * math.cos(a), 5.0 * math.sin(a)] for a in angles], 0.5)
    if kind == "gmm_grid25":  # 25 equal N(·, 0.2² I) on a 5 × 5 grid of spacing 2 centred on 0
        ticks = [2.0 * (i - 2) for i in range(5)]
        return _mixture_variance([[a, b] for a in ticks for b in ticks], 0.2)
    if kind == "gmm_nd":  # n_modes equal N(±radius·e_i, std² I), +e_1, −e_1, +e_2, ...
        dim = int(options.get("dim", GMM_ND_DEFAULT_DIM))
        n, radius, std = int(options.get("n_modes", 4)), float(options.get("radius", 4.0)), float(options.get("std", 1.0))
        means = [[0.0] * dim for _ in range(n)]
        for k in range(min(n, 2 * dim)):
            means[k][k // 2] = radius * (1.0 - 2.0 * (k % 2))
        return _mixture_variance(means, std)
    if kind in POINT_CLOUD_VARIANCE:
        return POINT_CLOUD_VARIANCE[kind] + float(options.get("bandwidth", POINT_CLOUD_DEFAULT_BANDWIDTH)) ** 2
    return None
