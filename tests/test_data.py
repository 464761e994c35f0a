"""Datasets: exact toy and empirical scores against finite differences, and image loaders against fixtures.

Scores are checked against the math they claim (∇ₓ log p_σ by central differences in float64 and by
autograd), samplers against the mixture's known weights and covariance, and every image loader against
files written here in the dataset's published on-disk format, so no test needs the network.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from fixtures_images import skip_md5, write_celeba, write_cifar10, write_mnist

from scorebench.data import TOY_DATASETS, IsotropicGaussianMixture, load_dataset
from scorebench.errors import ScorebenchError

SIGMAS = (0.0, 0.1, 1.0, 10.0)


def central_difference_grad(log_prob, x: torch.Tensor, h: float) -> torch.Tensor:
    """∂/∂x_j log p(x) ≈ (log p(x + h e_j) - log p(x - h e_j)) / 2h, every coordinate in one batched call.

    Truncation error is O(h² ∂³ log p) and rounding O(ε |log p| / h); with h = 1e-4 times the smallest
    standard deviation both stay orders of magnitude below the 1e-5 relative tolerance used here.
    """
    b, d = x.shape[0], x[0].numel()
    steps = (torch.eye(d, dtype=torch.float64) * h).reshape(d, *x.shape[1:])
    plus = (x[:, None] + steps[None]).reshape(b * d, *x.shape[1:])
    minus = (x[:, None] - steps[None]).reshape(b * d, *x.shape[1:])
    return ((log_prob(plus) - log_prob(minus)) / (2 * h)).reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# exact scores


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_score_is_gradient_of_log_density(name, gen):
    dist = load_dataset(name, n_train=10, n_test=10).distribution
    for sigma in SIGMAS:
        near = dist.sample(20, sigma=sigma, generator=gen)
        near = near + 0.05 * torch.randn(near.shape, dtype=torch.float64, generator=gen)
        far = 25.0 * torch.randn(8, 2, dtype=torch.float64, generator=gen)  # far outside the data
        x = torch.cat([near, far])
        h = 1e-4 * float(torch.sqrt(dist.stds.min() ** 2 + sigma**2))
        fd = central_difference_grad(lambda y: dist.log_prob(y, sigma), x, h)
        score = dist.score(x, sigma)
        torch.testing.assert_close(score, fd, rtol=1e-5, atol=0.0, msg=f"{name} sigma={sigma}")

        xg = x.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(dist.log_prob(xg, sigma).sum(), xg)
        torch.testing.assert_close(score, auto, rtol=1e-9, atol=1e-12, msg=f"{name} sigma={sigma} autograd")


def test_empirical_mixture_score_is_gradient_of_log_sum_exp(gen):
    images = torch.rand(50, 1, 8, 8, dtype=torch.float64, generator=gen)
    one_chunk = IsotropicGaussianMixture(images, stds=0.0)
    chunked = IsotropicGaussianMixture(images, stds=0.0, chunk_size=7)  # 8 chunks, the last one partial
    for sigma in (0.1, 1.0):
        x = torch.cat(
            [
                images[:3] + 0.5 * sigma * torch.randn(3, 1, 8, 8, dtype=torch.float64, generator=gen),
                torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=gen),
                0.501 * images[3:6] + 0.499 * images[6:9],  # near-ties: two components share the weight
            ]
        )
        fd = central_difference_grad(lambda y: one_chunk.log_prob(y, sigma), x, 1e-4 * sigma)
        logp, score = one_chunk.log_prob_and_score(x, sigma)
        torch.testing.assert_close(score, fd, rtol=1e-5, atol=0.0, msg=f"sigma={sigma}")

        logp_c, score_c = chunked.log_prob_and_score(x, sigma)
        torch.testing.assert_close(logp_c, logp, rtol=1e-12, atol=0.0)
        torch.testing.assert_close(score_c, score, rtol=1e-10, atol=1e-12)
    with pytest.raises(ScorebenchError, match="σ must be > 0"):
        one_chunk.score(images[:2], 0.0)


def test_gmm_2mode_sampling_weights_and_perturbed_covariance(gen):
    dist = load_dataset("gmm_2mode", n_train=10, n_test=10).distribution
    x = dist.sample(20000, generator=gen)
    heavy = int(torch.argmin(torch.cdist(dist.means, torch.tensor([[5.0, 5.0]], dtype=torch.float64))))
    assert abs((dist.nearest_component(x) == heavy).double().mean().item() - 0.8) < 0.02

    # Cov[p_σ] = Σ_k w_k (s_k² + σ²) I + Σ_k w_k (μ_k - μ̄)(μ_k - μ̄)ᵀ, μ̄ = (3, 3);
    # for weights 0.2/0.8 at ∓(5, 5) with s = 1: (1 + σ²) I + 16·11ᵀ
    for sigma in (0.0, 0.5, 3.0):
        y = dist.sample(100000, sigma=sigma, generator=gen)
        expected = (1.0 + sigma**2) * torch.eye(2, dtype=torch.float64) + 16.0 * torch.ones(2, 2, dtype=torch.float64)
        torch.testing.assert_close(torch.cov(y.T), expected, rtol=0.03, atol=0.0)
        torch.testing.assert_close(y.mean(0), torch.tensor([3.0, 3.0], dtype=torch.float64), rtol=0.0, atol=0.1)


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_shapes_range_split_and_determinism():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.kind == "image" and ds.shape == (1, 8, 8)
    assert ds.train.dtype == torch.float32 and ds.train.shape == (1438, 1, 8, 8) and ds.test.shape == (359, 1, 8, 8)
    assert ds.train.min() == 0.0 and ds.train.max() == 1.0 and ds.test.min() >= 0 and ds.test.max() <= 1
    assert torch.equal(ds.train * 16, torch.round(ds.train * 16))  # value/16 of integer pixel values

    # the split is a partition of the 1797 scikit-learn images: each one lands in exactly one side
    source = sorted(map(tuple, (load_digits().images.reshape(-1, 64) / 16.0).tolist()))
    both = torch.cat([ds.train, ds.test]).double().reshape(-1, 64)
    assert sorted(map(tuple, both.tolist())) == source

    again = load_dataset("digits")
    assert torch.equal(again.train, ds.train) and torch.equal(again.test, ds.test)
    assert not torch.equal(load_dataset("digits", seed=1).train, ds.train)
    small = load_dataset("digits", max_train=100, max_test=30)
    assert torch.equal(small.train, ds.train[:100]) and torch.equal(small.test, ds.test[:30])
    assert torch.equal(small.distribution.means, small.train.double())
    assert small.info["n_train"] == 100 and small.info["n_train_available"] == 1438
    assert small.info["scaling"] == "value/16" and small.info["split"] == "seeded_permutation"
    assert load_dataset("digits", test_fraction=0.5).test.shape[0] == 898  # round(0.5 · 1797)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": 0.0001}, "test_fraction"),
        ({"max_train": 0}, "max_train"),
        ({"max_test": 2.5}, "max_test"),
        ({"image_size": 16}, "image_size"),
        ({"channels": 3}, "channels"),
        ({"path": "x.npz"}, "path"),
        ({"bogus": 1}, "bad parameters"),
    ],
)
def test_bad_image_options_are_refused_by_name(params, match):
    with pytest.raises(ScorebenchError, match=match):
        load_dataset("digits", **params)


def test_toy_jobs_never_import_torchvision_or_sklearn():
    code = (
        "import sys, scorebench.data as d, scorebench.data.images\n"
        "d.load_dataset('gmm_2mode', n_train=4, n_test=4)\n"
        "heavy = {'torchvision', 'sklearn'} & set(sys.modules)\n"
        "assert not heavy, sorted(heavy)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# torchvision datasets from fixture files


def _uint8(gen: torch.Generator, *shape) -> np.ndarray:
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen).numpy()


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(name, folder, tmp_path, gen):
    train, test = _uint8(gen, 7, 28, 28), _uint8(gen, 3, 28, 28)
    write_mnist(tmp_path, folder, train, test)
    ds = load_dataset(name, root=str(tmp_path))
    assert ds.shape == (1, 28, 28) and ds.train.dtype == torch.float32
    torch.testing.assert_close(ds.train, torch.from_numpy(train).float()[:, None] / 255, rtol=0, atol=1e-7)
    torch.testing.assert_close(ds.test, torch.from_numpy(test).float()[:, None] / 255, rtol=0, atol=1e-7)
    assert ds.info["split"] == "official" and ds.info["scaling"] == "uint8/255"
    small = load_dataset(name, root=str(tmp_path), max_train=4, max_test=2)
    assert torch.equal(small.train, ds.train[:4]) and torch.equal(small.test, ds.test[:2])


def test_cifar10_from_python_pickles(tmp_path, gen, monkeypatch):
    train, test = _uint8(gen, 10, 3, 32, 32), _uint8(gen, 4, 3, 32, 32)
    write_cifar10(tmp_path, train, test)
    with pytest.raises(ScorebenchError, match="missing or corrupt in .*cifar-10-batches-py"):
        load_dataset("cifar10", root=str(tmp_path))  # fixture md5s differ from the real release

    skip_md5(monkeypatch, "torchvision.datasets.cifar")
    ds = load_dataset("cifar10", root=str(tmp_path), max_test=3)
    assert ds.shape == (3, 32, 32)
    torch.testing.assert_close(ds.train, torch.from_numpy(train).float() / 255, rtol=0, atol=1e-7)
    torch.testing.assert_close(ds.test, torch.from_numpy(test[:3]).float() / 255, rtol=0, atol=1e-7)
    assert ds.info["n_test_available"] == 4 and ds.info["n_test"] == 3


def test_celeba_center_crop_resize_and_official_split(tmp_path, monkeypatch):
    # 178x218 aligned faces: the 140 crop starts at row round(78/2) = 39, column round(38/2) = 19.
    # Inside it a smooth pattern below 200, outside white, so a crop off by one pixel shows up as ~250.
    rows, cols = np.arange(140)[:, None], np.arange(140)[None, :]
    images = []
    for k in range(6):
        a = np.full((218, 178, 3), 255, np.uint8)
        a[39:179, 19:159] = np.stack([rows + 0 * cols, cols + 0 * rows, np.full((140, 140), 20 * k)], -1)
        images.append(a)
    write_celeba(tmp_path, images, partitions=[0, 0, 1, 2, 0, 2])  # train 1, 2, 5; valid 3; test 4, 6
    skip_md5(monkeypatch, "torchvision.datasets.celeba")

    full = load_dataset("celeba", root=str(tmp_path), image_size=140)  # no resize: the crop itself
    assert full.train.shape == (3, 3, 140, 140) and full.test.shape == (2, 3, 140, 140)
    expected = [torch.from_numpy(images[k][39:179, 19:159]).permute(2, 0, 1).float() / 255 for k in (0, 1, 4, 3, 5)]
    jpeg_error = 6 / 255  # quality-100 JPEG round trip
    for got, want in zip([*full.train, *full.test], expected):
        torch.testing.assert_close(got, want, rtol=0, atol=jpeg_error)

    small = load_dataset("celeba", root=str(tmp_path), max_train=2)  # default image_size 32
    assert small.train.shape == (2, 3, 32, 32)
    # down-sampling averages: each channel's mean is the crop's mean
    torch.testing.assert_close(small.train.mean((2, 3)), full.train[:2].mean((2, 3)), rtol=0, atol=2 / 255)
    # and it is NCSN's published pipeline, CenterCrop(140) then Resize (bilinear), pixel for pixel
    from PIL import Image
    from torchvision import transforms

    ncsn = transforms.Compose([transforms.CenterCrop(140), transforms.Resize(32), transforms.PILToTensor()])
    for k in range(2):
        with Image.open(tmp_path / "celeba" / "img_align_celeba" / f"{k + 1:06d}.jpg") as img:
            torch.testing.assert_close(small.train[k], ncsn(img.convert("RGB")).float() / 255, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "name, folder",
    [
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
        ("cifar10", "cifar-10-batches-py"),
        ("celeba", "celeba"),
    ],
)
def test_missing_torchvision_folder_names_folder_and_fix(name, folder, tmp_path, gen):
    write_mnist(
        tmp_path, "MNIST" if name == "fashion_mnist" else "Other", _uint8(gen, 2, 28, 28), _uint8(gen, 1, 28, 28)
    )
    with pytest.raises(ScorebenchError) as err:
        load_dataset(name, root=str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / folder) in message and "download: true" in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# npz files


def test_npz_layouts_scaling_and_split(tmp_path, gen):
    gray = _uint8(gen, 20, 6, 5)
    np.savez(tmp_path / "gray.npz", x=gray)
    ds = load_dataset("npz", path=str(tmp_path / "gray.npz"), test_fraction=0.25, seed=3)
    assert ds.shape == (1, 6, 5) and ds.train.shape[0] == 15 and ds.test.shape[0] == 5
    both = torch.cat([ds.train, ds.test]).reshape(20, -1).double()
    assert sorted(map(tuple, both.tolist())) == sorted(
        map(tuple, (gray.reshape(20, -1) / 255.0).astype(np.float32).tolist())
    )
    assert ds.info["scaling"] == "uint8/255"

    nchw = torch.rand(6, 3, 4, 4, generator=gen).numpy()
    np.savez(tmp_path / "nchw.npz", x=nchw, x_test=nchw[:2])
    ds = load_dataset("npz", path=str(tmp_path / "nchw.npz"))
    assert torch.equal(ds.train, torch.from_numpy(nchw)) and torch.equal(ds.test, torch.from_numpy(nchw[:2]))
    assert ds.info["split"] == "file" and ds.info["scaling"] == "float as stored"

    np.savez(tmp_path / "nhwc.npz", x=nchw.transpose(0, 2, 3, 1), x_test=nchw[:2].transpose(0, 2, 3, 1))
    ds = load_dataset("npz", path=str(tmp_path / "nhwc.npz"), max_train=4)
    assert torch.equal(ds.train, torch.from_numpy(nchw[:4])) and ds.shape == (3, 4, 4)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"images": np.zeros((4, 3, 3), np.uint8)}, "no array 'x'"),
        ({"x": np.zeros((4, 9), np.uint8)}, "shape"),
        ({"x": np.zeros((4, 2, 3, 3, 1), np.float32)}, "shape"),
        ({"x": np.zeros((4, 5, 3, 2), np.float32)}, "1 or 3 channels"),
        ({"x": np.full((4, 3, 3), 1.5, np.float32)}, r"\[0, 1\]"),
        ({"x": np.full((4, 3, 3), -0.1, np.float64)}, r"\[0, 1\]"),
        ({"x": np.full((4, 3, 3), np.nan, np.float32)}, "non-finite"),
        ({"x": np.zeros((4, 3, 3), np.int64)}, "dtype int64"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "x_test": np.zeros((2, 4, 4), np.uint8)}, "x_test images"),
        ({"x": np.zeros((1, 3, 3), np.uint8)}, "empty train or test"),
    ],
)
def test_npz_errors_name_the_file(arrays, match, tmp_path):
    file = tmp_path / "bad.npz"
    np.savez(file, **arrays)
    with pytest.raises(ScorebenchError, match=match) as err:
        load_dataset("npz", path=str(file))
    assert str(file) in str(err.value)


def test_npz_unreadable_or_missing_file(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive")
    for file, match in ((garbage, "cannot read"), (tmp_path / "absent.npz", "not found")):
        with pytest.raises(ScorebenchError, match=match) as err:
            load_dataset("npz", path=str(file))
        assert str(file) in str(err.value)
    with pytest.raises(ScorebenchError, match="path"):
        load_dataset("npz")


# ---------------------------------------------------------------------------------------------
# image folders


def _save_png(path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_recursive_channels_and_resize(tmp_path, gen):
    rgb = [_uint8(gen, 5, 7, 3) for _ in range(6)]
    for i, a in enumerate(rgb):
        _save_png(tmp_path / "faces" / f"sub{i % 2}" / f"img{i}.png", a)
    (tmp_path / "faces" / "notes.txt").write_text("ignored")
    ds = load_dataset("image_folder", path=str(tmp_path / "faces"), test_fraction=0.5)
    assert ds.shape == (3, 5, 7) and ds.train.shape[0] == 3 and ds.test.shape[0] == 3
    loaded = sorted(map(tuple, torch.cat([ds.train, ds.test]).reshape(6, -1).tolist()))
    want = [torch.from_numpy(a).permute(2, 0, 1).float() / 255 for a in rgb]
    assert loaded == sorted(map(tuple, torch.stack(want).reshape(6, -1).tolist()))

    gray = load_dataset("image_folder", path=str(tmp_path / "faces"), test_fraction=0.5, channels=1)
    assert gray.shape == (1, 5, 7) and gray.info["channels"] == 1

    # constant images of different sizes: resizing to 4x4 keeps the constant exactly
    for i, (h, w) in enumerate([(9, 9), (12, 8), (6, 10)]):
        _save_png(tmp_path / "mixed" / f"{i}.png", np.full((h, w), 40 * (i + 1), np.uint8))
    with pytest.raises(ScorebenchError, match="set `image_size`"):
        load_dataset("image_folder", path=str(tmp_path / "mixed"), test_fraction=0.34)
    ds = load_dataset("image_folder", path=str(tmp_path / "mixed"), test_fraction=0.34, image_size=4, channels=3)
    assert ds.shape == (3, 4, 4)
    values = sorted(round(v * 255) for v in torch.cat([ds.train, ds.test]).reshape(3, -1).unique().tolist())
    assert values == [40, 80, 120]
    for img in torch.cat([ds.train, ds.test]):
        assert img.unique().numel() == 1  # constant, channels replicated from gray


def test_image_folder_errors(tmp_path):
    with pytest.raises(ScorebenchError, match="folder not found"):
        load_dataset("image_folder", path=str(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScorebenchError, match="no .png"):
        load_dataset("image_folder", path=str(tmp_path / "empty"))
    _save_png(tmp_path / "broken" / "a.png", np.zeros((3, 3), np.uint8))
    _save_png(tmp_path / "broken" / "b.png", np.zeros((3, 3), np.uint8))
    (tmp_path / "broken" / "c.jpg").write_bytes(b"not an image")
    with pytest.raises(ScorebenchError, match="c.jpg: cannot read"):
        load_dataset("image_folder", path=str(tmp_path / "broken"), test_fraction=0.34)
    with pytest.raises(ScorebenchError, match="channels must be 1 or 3"):
        load_dataset("image_folder", path=str(tmp_path / "broken"), channels=2)


def test_labelled_datasets_carry_labels_aligned_with_images():
    """Digits labels feed the FID feature network: they must follow the same split and order."""
    from sklearn.datasets import load_digits

    from scorebench.data import load_dataset

    ds = load_dataset("digits", max_train=50, max_test=20)
    bunch = load_digits()
    flat = torch.from_numpy(bunch.images / 16.0).float().reshape(len(bunch.images), -1)
    for x, y in ((ds.train, ds.train_labels), (ds.test, ds.test_labels)):
        assert y.shape == (x.shape[0],)
        idx = torch.cdist(x.reshape(len(x), -1), flat).argmin(1)
        assert torch.equal(torch.from_numpy(bunch.target)[idx].long(), y)
