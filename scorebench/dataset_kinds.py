"""What is known about a dataset kind before loading it: toy or image, mixture, data dimension.

Why its own module: the config checks (study.py) and the report's checks and tables
(scorebench/report/) both ask these questions, and the report must not import study.py, which
finds the report's studies through its registry.
"""

from __future__ import annotations

# Data dimension of each registry dataset where it is known before loading (to refuse cells early).
KNOWN_DIMS = {
    "gmm_2mode": 2, "gmm_ring8": 2, "gmm_grid25": 2, "swiss_roll": 2, "moons": 2,
    "digits": 64, "mnist": 784, "fashion_mnist": 784, "cifar10": 3072,
    "gmm_nd": 2,  # its loader's default; `options: {dim: D}` sets it (dataset_dim)
}  # fmt: skip
# Toys: vectors with a closed-form score; an MLP by default, no FID reference. gmm_nd may have any
# dimension, so the 2-D-only figures (score fields, the animation) ask for dimension 2, not this list.
TOY_KINDS = ("gmm_2mode", "gmm_ring8", "gmm_grid25", "swiss_roll", "moons", "gmm_nd")
MIXTURE_KINDS = ("gmm_2mode", "gmm_ring8", "gmm_grid25")  # toys whose samples have mode weights
# The 2-D toys, as a config error names them.
PLANAR_TOYS_TEXT = ", ".join(k for k in TOY_KINDS if k != "gmm_nd") + ", gmm_nd with dim 2"


def dataset_dim(ds: dict) -> int | None:
    """Data dimension of a dataset preset ({kind, options}) where it is known before loading."""
    options = ds.get("options") or {}
    if ds["kind"] == "celeba":
        size = options.get("image_size", 32)
        return 3 * size * size
    if ds["kind"] == "gmm_nd":
        return int(options.get("dim", KNOWN_DIMS["gmm_nd"]))
    return KNOWN_DIMS.get(ds["kind"])


def is_planar_toy(ds: dict) -> bool:
    """A toy in the plane: what score fields and the animation can draw."""
    return ds["kind"] in TOY_KINDS and dataset_dim(ds) == 2
