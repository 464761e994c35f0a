"""Image datasets as fixed train/test tensors in [0, 1], with the empirical training distribution.

Every loader returns (C, H, W) float32 images scaled to [0, 1] and a documented split:
- `digits`: scikit-learn's bundled 8x8 digits (offline), pixel value / 16, seeded permutation split.
- `mnist`, `fashion_mnist`, `cifar10`, `celeba`: torchvision's on-disk formats under `root`, uint8 / 255,
  torchvision's official train/test split. CelebA is center-cropped to 140 and resized (NCSN, Sec. 5).
- `npz`: an array `x` (and optionally `x_test`) in a .npz file; uint8 / 255 or float already in [0, 1].
- `image_folder`: PNG/JPG files found recursively; uint8 / 255.
`max_train` / `max_test` keep the first N of each split, so small studies are a deterministic subset.
The authors' pipeline options (uniform dequantisation, random flip, logit transform, [−1, 1]
rescaling) are dataset options too: see data/transforms.py for where each one acts.

The exact score that image score error is measured against is that of the perturbed empirical
training distribution, p_σ = (1/N) Σ_i N(x_i, σ² I), exact for σ > 0 (Vincent 2011; NCSN Sec. 3).
torchvision, scikit-learn and PIL are imported inside the loaders, so toy jobs never import them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from scorebench.data.base import Dataset
from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.data.registry import CELEBA_DEFAULT_SIZE, IMAGE_SUFFIXES
from scorebench.data.transforms import ImageTransform
from scorebench.errors import ScorebenchError

# registry name -> (torchvision class, folder under root that holds its files)
TORCHVISION_SOURCES = {
    "mnist": ("MNIST", "MNIST/raw"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "celeba": ("CelebA", "celeba"),
}
CELEBA_CROP = 140  # NCSN's CelebA preprocessing: center crop 140, then resize (64 in the paper)
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
_IMAGE_NAMES = ["digits", *TORCHVISION_SOURCES, "npz", "image_folder"]


def load_image_dataset(
    name: str,
    *,
    root="data",
    download: bool = False,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    path=None,
    image_size: int | None = None,
    channels: int | None = None,
    uniform_dequantization: bool = False,
    random_flip: bool = False,
    logit_transform: bool = False,
    rescaled: bool = False,
) -> Dataset:
    """Load an image dataset as a fixed split scaled to [0, 1].

    Args:
        name: one of digits, mnist, fashion_mnist, cifar10, celeba, npz, image_folder.
        root: folder holding torchvision's files (mnist, fashion_mnist, cifar10, celeba).
        download: let torchvision download into `root` when the files are missing (never by default).
        test_fraction: held-out share for datasets without an official split (digits, npz without
            `x_test`, image_folder); the split is a permutation seeded by `seed`.
        max_train, max_test: keep only the first N images of each split (None keeps all).
        seed: the split seed (independent of the training seed).
        path: the .npz file (npz) or the image folder (image_folder).
        image_size: output side length: celeba (default 32) and image_folder (default: keep the size).
        channels: image_folder only: 1 or 3 (default: from the first image's mode).
        uniform_dequantization, random_flip, logit_transform, rescaled: the authors' pipeline
            options (data/transforms.py): the last two set the model space `train` and `test` are
            returned in; the first two are redrawn per training minibatch.

    Returns:
        A `Dataset` of kind "image" whose `distribution` is the zero-bandwidth mixture over the
        training images (in model space), whose `transform` holds the pipeline options and whose
        `info` records source, scaling, split, sizes and the options.
    """
    _check_options(name, path=path, image_size=image_size, channels=channels)
    transform = ImageTransform(
        uniform_dequantization=uniform_dequantization, random_flip=random_flip,
        logit_transform=logit_transform, rescaled=rescaled,
    )  # fmt: skip
    limits = (_limit("max_train", max_train), _limit("max_test", max_test))
    labels = (None, None)
    if name == "digits":
        train, test, info, labels = _load_digits(test_fraction, int(seed), limits)
    elif name in TORCHVISION_SOURCES:
        train, test, info, labels = _load_torchvision(name, Path(root), bool(download), limits, image_size)
    elif name == "npz":
        train, test, info = _load_npz(Path(path), test_fraction, int(seed), limits)
    elif name == "image_folder":
        train, test, info = _load_image_folder(Path(path), test_fraction, int(seed), limits, image_size, channels)
    else:
        raise ScorebenchError(f"dataset: {name!r} is not an image dataset; choose one of {_IMAGE_NAMES}")
    info = {**info, "n_train": int(train.shape[0]), "n_test": int(test.shape[0]), "shape": list(train.shape[1:])}
    info["transform"] = transform.as_dict()
    train, test = transform.to_model(train), transform.to_model(test)
    distribution = IsotropicGaussianMixture(train, stds=0.0)
    return Dataset(name, "image", train, test, distribution, info, *labels, transform=transform)


# ---------------------------------------------------------------------------------------------
# argument checks and split helpers


def _check_options(name: str, *, path, image_size, channels) -> None:
    """Refuse options the chosen dataset would silently ignore (a likely config typo)."""
    needs_path = name in ("npz", "image_folder")
    if needs_path and path is None:
        raise ScorebenchError(f"dataset {name!r}: set `path` to the {'.npz file' if name == 'npz' else 'image folder'}")
    if not needs_path and path is not None:
        raise ScorebenchError(f"dataset {name!r}: `path` is only for npz and image_folder")
    if image_size is not None:
        if name not in ("celeba", "image_folder"):
            raise ScorebenchError(f"dataset {name!r}: `image_size` is only for celeba and image_folder")
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
            raise ScorebenchError(f"dataset {name!r}: image_size must be a positive integer, got {image_size!r}")
    if channels is not None:
        if name != "image_folder":
            raise ScorebenchError(f"dataset {name!r}: `channels` is only for image_folder")
        if channels not in (1, 3):
            raise ScorebenchError(f"dataset {name!r}: channels must be 1 or 3, got {channels!r}")


def _limit(field: str, value) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ScorebenchError(f"dataset.{field}: must be a positive integer or null, got {value!r}")
    return value


def _permutation_split(n: int, test_fraction: float, seed: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a seeded random split: the first round(n·test_fraction) of a permutation are held out."""
    if not (isinstance(test_fraction, (int, float)) and 0.0 < float(test_fraction) < 1.0):
        raise ScorebenchError(f"dataset.test_fraction: must be a number in (0, 1), got {test_fraction!r}")
    n_test = int(round(float(test_fraction) * n))
    if not 1 <= n_test <= n - 1:
        raise ScorebenchError(
            f"{source}: test_fraction {test_fraction} of {n} images leaves an empty train or test split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return perm[n_test:], perm[:n_test]


def _first(items, limit: int | None):
    """The first `limit` entries of a sequence, array or tensor (all when limit is None)."""
    return items if limit is None else items[:limit]


def _split_info(kind: str, n_train_available: int, n_test_available: int, **extra) -> dict:
    return {"split": kind, "n_train_available": n_train_available, "n_test_available": n_test_available, **extra}


def _uint8_to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1] by value / 255."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)


def _load_digits(test_fraction: float, seed: int, limits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images  # (1797, 8, 8) float64 with integer values 0..16
    x = torch.from_numpy(images / 16.0).to(torch.float32).unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = _permutation_split(x.shape[0], test_fraction, seed, "dataset 'digits'")
    info = {
        "source": "sklearn.datasets.load_digits",
        "scaling": "value/16",
        **_split_info("seeded_permutation", len(train_idx), len(test_idx), seed=seed, test_fraction=test_fraction),
    }
    tr, te = _first(train_idx, limits[0]), _first(test_idx, limits[1])
    return x[tr], x[te], info, (y[tr], y[te])


# ---------------------------------------------------------------------------------------------
# torchvision datasets (official splits)


def _open_torchvision(name: str, root: Path, download: bool, split):
    """Construct torchvision's dataset object; missing or corrupt files become one ScorebenchError line."""
    import torchvision.datasets as tvd

    cls_name, folder = TORCHVISION_SOURCES[name]
    cls = getattr(tvd, cls_name)
    kwargs = {"split": split, "target_type": []} if name == "celeba" else {"train": split == "train"}
    try:
        return cls(str(root), download=download, **kwargs)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, AssertionError, pickle errors...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = root / folder
        if download:
            raise ScorebenchError(f"dataset {name!r}: download into {where} failed ({reason})") from None
        detail = "" if reason.startswith("Dataset not found") else f" ({reason})"
        raise ScorebenchError(
            f"dataset {name!r}: files missing or corrupt in {where}{detail}; "
            "set `download: true` or copy the files there"
        ) from None


def _load_torchvision(name: str, root: Path, download: bool, limits, image_size: int | None):
    cls_name, folder = TORCHVISION_SOURCES[name]
    parts, labels = [], []
    for split, limit in zip(("train", "test"), limits):
        ds = _open_torchvision(name, root, download, split)
        if name == "celeba":
            size = image_size or CELEBA_DEFAULT_SIZE
            files = [Path(ds.root) / ds.base_folder / "img_align_celeba" / f for f in ds.filename]
            parts.append((len(files), _celeba_images(_first(files, limit), size)))
            labels.append(None)  # CelebA has attributes, not classes
        else:
            data = np.asarray(_first(ds.data, limit))  # MNIST: uint8 tensor (N, H, W); CIFAR10: ndarray (N, H, W, C)
            data = data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)
            parts.append((len(ds.data), _uint8_to_unit(data)))
            labels.append(torch.as_tensor(np.asarray(_first(ds.targets, limit)), dtype=torch.long))
    (n_train, train), (n_test, test) = parts
    info = {
        "source": f"torchvision.datasets.{cls_name} in {root / folder}",
        "scaling": "uint8/255",
        **_split_info("official", n_train, n_test),
    }
    if name == "celeba":
        info.update(preprocessing=f"center_crop {CELEBA_CROP}, bilinear resize {train.shape[-1]}")
    return train, test, info, tuple(labels)


def _celeba_images(files, size: int) -> torch.Tensor:
    """NCSN's CelebA preprocessing: center crop 140x140 (torchvision's rounding), bilinear resize to size."""
    from PIL import Image

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, file in enumerate(files):
        img = _open_image(file).convert("RGB")
        w, h = img.size
        if min(w, h) < CELEBA_CROP:
            raise ScorebenchError(f"dataset 'celeba': {file} is {w}x{h}, smaller than the {CELEBA_CROP} crop")
        top, left = int(round((h - CELEBA_CROP) / 2.0)), int(round((w - CELEBA_CROP) / 2.0))
        img = img.crop((left, top, left + CELEBA_CROP, top + CELEBA_CROP)).resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    return _uint8_to_unit(out)


# ---------------------------------------------------------------------------------------------
# npz files


def _load_npz(file: Path, test_fraction: float, seed: int, limits):
    arrays = _read_npz(file)
    x = _npz_images(arrays["x"], file, "x")
    if "x_test" in arrays:
        test = _npz_images(arrays["x_test"], file, "x_test")
        if test.shape[1:] != x.shape[1:]:
            raise ScorebenchError(
                f"npz {file}: x_test images are {tuple(test.shape[1:])} but x images are {tuple(x.shape[1:])}"
            )
        split = _split_info("file", x.shape[0], test.shape[0])
        train = x
    else:
        train_idx, test_idx = _permutation_split(x.shape[0], test_fraction, seed, f"npz {file}")
        split = _split_info("seeded_permutation", len(train_idx), len(test_idx), seed=seed, test_fraction=test_fraction)
        train, test = x[train_idx], x[test_idx]
    scaling = "uint8/255" if arrays["x"].dtype == np.uint8 else "float as stored"
    info = {"source": f"npz {file}", "scaling": scaling, **split}
    return _first(train, limits[0]), _first(test, limits[1]), info


def _read_npz(file: Path) -> dict:
    if not file.is_file():
        raise ScorebenchError(f"npz {file}: file not found")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:  # not a zip, truncated, object arrays (pickles are refused)
        raise ScorebenchError(f"npz {file}: cannot read it as a .npz archive ({type(exc).__name__}: {exc})") from None
    if "x" not in arrays:
        raise ScorebenchError(f"npz {file}: no array 'x' (found {sorted(arrays)}); store the images as x=...")
    return arrays


def _npz_images(a: np.ndarray, file: Path, key: str) -> torch.Tensor:
    """Validate one image array and return it as (N, C, H, W) float32 in [0, 1].

    Layouts: (N, H, W) is one channel; a 4-D array is channel-first when shape[1] is 1 or 3,
    otherwise channel-last when shape[-1] is 1 or 3.
    """
    where = f"npz {file}: array {key!r}"
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(a.dtype, np.floating):
        x = a.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise ScorebenchError(f"{where} has non-finite values (NaN or inf)")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ScorebenchError(f"{where} has values in [{x.min():g}, {x.max():g}]; floats must lie in [0, 1]")
    else:
        raise ScorebenchError(f"{where} has dtype {a.dtype}; use uint8 (0..255) or float in [0, 1]")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[1] not in (1, 3):
            if x.shape[-1] not in (1, 3):
                raise ScorebenchError(f"{where} has shape {a.shape}; 4-D images need 1 or 3 channels (NCHW or NHWC)")
            x = x.transpose(0, 3, 1, 2)
    else:
        raise ScorebenchError(f"{where} has shape {a.shape}; use (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if x.shape[0] < 1:
        raise ScorebenchError(f"{where} holds no images")
    return torch.from_numpy(np.ascontiguousarray(x))


# ---------------------------------------------------------------------------------------------
# folders of PNG/JPG files


def _open_image(file: Path):
    from PIL import Image

    try:
        img = Image.open(file)
        img.load()
    except Exception as exc:
        raise ScorebenchError(f"image {file}: cannot read it ({type(exc).__name__}: {exc})") from None
    return img


def _load_image_folder(folder: Path, test_fraction: float, seed: int, limits, image_size, channels):
    """Images found recursively (sorted by path), each center-cropped to a square and resized when image_size is set."""
    from PIL import Image

    if not folder.is_dir():
        raise ScorebenchError(f"image_folder {folder}: folder not found")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ScorebenchError(
            f"image_folder {folder}: no {'/'.join(IMAGE_SUFFIXES)} files found (searched recursively)"
        )
    train_idx, test_idx = _permutation_split(len(files), test_fraction, seed, f"image_folder {folder}")
    split = _split_info("seeded_permutation", len(train_idx), len(test_idx), seed=seed, test_fraction=test_fraction)
    train_idx, test_idx = _first(train_idx, limits[0]), _first(test_idx, limits[1])

    first = _open_image(files[0])
    channels = channels or (1 if first.mode in GRAY_MODES else 3)
    mode = "L" if channels == 1 else "RGB"
    size = first.size if image_size is None else (image_size, image_size)

    def read(file: Path) -> np.ndarray:
        img = _open_image(file).convert(mode)
        if image_size is not None:
            w, h = img.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side)).resize(size, Image.BILINEAR)
        elif img.size != size:
            raise ScorebenchError(
                f"image_folder {folder}: {file} is {img.size[0]}x{img.size[1]} but {files[0]} is {size[0]}x{size[1]}; "
                "set `image_size` to resize them all"
            )
        a = np.asarray(img, dtype=np.uint8)
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    def stack(indices) -> torch.Tensor:
        return _uint8_to_unit(np.stack([read(files[i]) for i in indices]))

    info = {
        "source": f"image_folder {folder}",
        "scaling": "uint8/255",
        "channels": channels,
        **split,
    }
    return stack(train_idx), stack(test_idx), info
