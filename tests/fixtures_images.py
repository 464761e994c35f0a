"""Tiny fixture files in the exact on-disk formats torchvision reads, so image loaders are tested offline.

Formats are written from their specifications, not from torchvision's reader:
- MNIST / Fashion-MNIST: IDX files (LeCun et al.): big-endian magic 0x0000_08_<ndim> for uint8, then one
  big-endian int32 per dimension, then the bytes; uncompressed under <root>/<Class>/raw/.
- CIFAR-10 "python version": pickled dicts with 'data' (N, 3072) uint8 rows holding the red, then green,
  then blue 32x32 planes, and 'labels'; files data_batch_1..5, test_batch and batches.meta.
- CelebA (aligned): <root>/celeba/img_align_celeba/*.jpg plus the five space-separated annotation files.
torchvision compares CIFAR-10 and CelebA files with the md5 of the real release; tests that use these
fixtures replace that check by a plain existence check (see `skip_md5`).
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """One uint8 IDX file (magic 0x08 = unsigned byte, then the number of dimensions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(root: Path, folder: str, train: np.ndarray, test: np.ndarray) -> Path:
    """MNIST-style raw files (folder 'MNIST' or 'FashionMNIST'); images (N, H, W) uint8, labels i % 10."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, images in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(len(images)) % 10)
    return raw


def write_cifar10(root: Path, train: np.ndarray, test: np.ndarray) -> Path:
    """CIFAR-10 python pickles from (N, 3, 32, 32) uint8 arrays; train is spread over the five batches."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def dump(name: str, images: np.ndarray) -> None:
        entry = {"data": images.reshape(len(images), 3 * 32 * 32), "labels": [i % 10 for i in range(len(images))]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)

    for i, part in enumerate(np.array_split(train, 5), start=1):
        dump(f"data_batch_{i}", part)
    dump("test_batch", test)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return folder


def write_celeba(root: Path, images: list, partitions: list[int]) -> Path:
    """CelebA aligned layout: image i saved as {i+1:06d}.jpg (quality 100), partition 0/1/2 = train/valid/test."""
    from PIL import Image

    base = Path(root) / "celeba"
    (base / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(len(images))]
    for name, image in zip(names, images):
        Image.fromarray(image).save(base / "img_align_celeba" / name, quality=100, subsampling=0)
    n = len(names)

    def table(file: str, header: list[str] | None, values) -> None:
        lines = [] if header is None else [str(n), " ".join(header)]
        lines += [f"{name} " + " ".join(str(v) for v in row) for name, row in zip(names, values)]
        (base / file).write_text("\n".join(lines) + "\n")

    table("list_eval_partition.txt", None, [[p] for p in partitions])
    table("identity_CelebA.txt", None, [[i + 1] for i in range(n)])
    table("list_bbox_celeba.txt", ["image_id", "x_1", "y_1", "width", "height"], [[1, 2, 3, 4]] * n)
    landmarks = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y"]
    table("list_landmarks_align_celeba.txt", landmarks + ["a", "b", "c", "d"], [[1] * 10] * n)
    table("list_attr_celeba.txt", ["Smiling", "Young"], [[1, -1]] * n)
    return base


def skip_md5(monkeypatch, module_name: str) -> None:
    """Make torchvision's `check_integrity` in one dataset module test existence only (fixtures lack the real md5)."""
    import importlib

    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
