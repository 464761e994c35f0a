"""The dataset facts the config layer reads before loading (scorebench/data/registry.py) match what
the loaders return: a wrong fact would refuse a valid cell or let an impossible one through."""

import math

import numpy as np
import pytest
from fixtures_images import skip_md5, write_cifar10, write_mnist

from scorebench.data import load_dataset
from scorebench.data.registry import (
    DATASETS, GMM_ND_DEFAULT_DIM, IMAGE_DATASETS, LABELLED_DATASETS, MIXTURE_DATASETS, SHAPES, TOY_DATASETS,
    dataset_dim,
)  # fmt: skip


def loaded(kind, tmp_path, monkeypatch, **options):
    """A small load of `kind` (torchvision sets from fixture files)."""
    if kind in ("mnist", "fashion_mnist"):
        folder = "MNIST" if kind == "mnist" else "FashionMNIST"
        write_mnist(tmp_path, folder, np.zeros((3, 28, 28), np.uint8), np.zeros((2, 28, 28), np.uint8))
        return load_dataset(kind, root=str(tmp_path), **options)
    if kind == "cifar10":
        write_cifar10(tmp_path, np.zeros((3, 3, 32, 32), np.uint8), np.zeros((2, 3, 32, 32), np.uint8))
        skip_md5(monkeypatch, "torchvision.datasets.cifar")
        return load_dataset(kind, root=str(tmp_path), **options)
    if kind in TOY_DATASETS:
        return load_dataset(kind, n_train=8, n_test=4, **options)
    return load_dataset(kind, max_train=8, max_test=4, **options)


@pytest.mark.parametrize("kind", sorted(SHAPES))
def test_shapes_dims_and_labels_are_the_loaders(kind, tmp_path, monkeypatch):
    ds = loaded(kind, tmp_path, monkeypatch)
    assert ds.shape == SHAPES[kind]
    assert ds.dim == dataset_dim(kind, {}) == math.prod(SHAPES[kind])
    assert (ds.train_labels is not None) == (kind in LABELLED_DATASETS)
    assert ds.kind == ("toy" if kind in TOY_DATASETS else "image")
    assert (ds.info.get("family") == "gaussian_mixture") == (kind in MIXTURE_DATASETS)


def test_gmm_nd_dim_default_and_option(tmp_path, monkeypatch):
    assert loaded("gmm_nd", tmp_path, monkeypatch).dim == GMM_ND_DEFAULT_DIM == dataset_dim("gmm_nd", {})
    assert loaded("gmm_nd", tmp_path, monkeypatch, dim=5).dim == dataset_dim("gmm_nd", {"dim": 5}) == 5


def test_every_dataset_is_in_one_family_and_unknown_dims_are_none():
    assert set(TOY_DATASETS).isdisjoint(IMAGE_DATASETS) and set(DATASETS) == set(TOY_DATASETS) | set(IMAGE_DATASETS)
    assert set(LABELLED_DATASETS) <= set(IMAGE_DATASETS) and set(MIXTURE_DATASETS) <= set(TOY_DATASETS)
    assert dataset_dim("celeba", {}) == 3 * 32 * 32 and dataset_dim("celeba", {"image_size": 64}) == 3 * 64 * 64
    assert dataset_dim("npz", {"path": "x.npz"}) is None and dataset_dim("image_folder", {}) is None


def test_the_config_layer_does_not_import_torch():
    """study.py reads these facts in every `snakemake` parse; torch would add ~2 s to each."""
    import subprocess
    import sys

    code = "import sys, scorebench.study; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
