"""Image sample quality (FID, KID, precision/recall) through torch-fidelity, offline.

FID (Heusel et al. 2017), KID (Bińkowski et al. 2018) and k-NN precision/recall (Kynkäänniemi
et al. 2019) compare feature distributions of generated and reference images. torch-fidelity
computes them, so no Fréchet distance is written by hand here. This module adds three things:

- a feature extractor that needs no download: the dataset's own small classifier
  (feature_net.py), registered with torch-fidelity under a name that carries its weights hash;
  Inception-v3 is used only from a local weights file;
- reference features computed once and cached under a name made of the dataset tag, a hash of
  the reference pixels and the extractor's weights hash. torch-fidelity's own cache key has no
  weights hash, so a retrained extractor would otherwise load stale features without warning;
- guards that turn torch-fidelity's crashes on small sample counts (LinAlgError, kthvalue
  out of range, KID subset size) into one-line `ScorebenchError`s naming the config field.

All metrics use one feature layer ("pool" for the feature net, "2048" for Inception), so a
reference cache holds exactly one features file and one FID statistics file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

import torch
import torch_fidelity
from torch.utils.data import Dataset as TorchDataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from scorebench.errors import ScorebenchError
from scorebench.results import write_json
from scorebench.metrics.feature_net import FEATURE_LAYERS, FeatureNet, load_feature_net

EXTRACTORS = ("feature_net", "inception")
METRICS = ("fid", "kid", "prc")
INCEPTION_NAME = "inception-v3-compat"
INCEPTION_LAYER = "2048"
FEATURE_NET_LAYER = "pool"
KID_MAX_SUBSET = 1000  # torch-fidelity's default subset size; smaller sets use all their samples

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_REGISTERED: dict[str, str] = {}  # full weights hash -> extractor name registered in this process


# ---------------------------------------------------------------------------------------------
# Inputs as torch-fidelity wants them
# ---------------------------------------------------------------------------------------------
class UInt8Images(TorchDataset):
    """A Dataset of uint8 (C, H, W) tensors. torch-fidelity only accepts Datasets whose items are bare tensors."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def to_uint8_dataset(images: torch.Tensor, *, channels: int | None = None) -> UInt8Images:
    """Quantise float images in [0, 1] to uint8 the way a saved PNG would (clamp, ×255, round).

    Metrics are computed on what a viewer would see, and generated and reference images go
    through the same quantisation. NaN pixels (a diverged sampler) become 0 and ±inf are
    clamped, so a bad model gets a bad score instead of a crash.

    Args:
        images: (N, C, H, W) float tensor (any device) with values meant to lie in [0, 1].
        channels: channels the extractor expects; 1-channel images are repeated to match
            (Inception needs RGB). None keeps C.

    Returns:
        A `UInt8Images` Dataset of uint8 (C, H, W) CPU tensors.
    """
    images = torch.as_tensor(images)
    if images.dim() != 4 or not images.is_floating_point():
        raise ScorebenchError(
            f"images must be a float tensor (N, C, H, W) in [0, 1], got {images.dtype} {tuple(images.shape)}"
        )
    x = torch.nan_to_num(images.detach().to("cpu", torch.float32), nan=0.0, posinf=1.0, neginf=0.0)
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ScorebenchError(
                f"images have {x.shape[1]} channels; the feature extractor needs {channels} (or 1, repeated)"
            )
        x = x.repeat(1, channels, 1, 1)
    return UInt8Images(x.contiguous())


def _pixels_hash(dataset: UInt8Images) -> str:
    digest = hashlib.sha256(str(tuple(dataset.images.shape)).encode())
    digest.update(dataset.images.numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Feature extractors
# ---------------------------------------------------------------------------------------------
class FeatureNetExtractor(FeatureExtractorBase):
    """torch-fidelity wrapper around a `FeatureNet`; one subclass per weights hash (see `register_feature_net`).

    torch-fidelity builds extractors from a registered class by name, so each registered
    subclass carries its own config and weights as class attributes.
    """

    net_config: dict = {}
    net_state: dict = {}

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.net = FeatureNet(**self.net_config)
        self.net.load_state_dict(self.net_state)
        self.net.eval()

    @staticmethod
    def get_provided_features_list():
        return FEATURE_LAYERS

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": FEATURE_NET_LAYER, "kid": FEATURE_NET_LAYER, "prc": FEATURE_NET_LAYER}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        """uint8 (B, C, H, W) in 0..255 -> features in the order of `self.features_list`.

        torch-fidelity builds `features_list` from a set, so its order varies between
        processes; the output follows it, never the provided order.
        """
        expected = tuple(self.net.config["shape"])
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ScorebenchError(
                f"feature net {self.name}: expects uint8 images (B, {', '.join(map(str, expected))}), "
                f"got {x.dtype} {tuple(x.shape)}"
            )
        features = self.net.features(x.to(torch.float32) / 255.0)
        return tuple(features[layer] for layer in self.features_list)


def register_feature_net(net: FeatureNet) -> str:
    """Register `net` with torch-fidelity once per process, under `scorebench-<name>-<hash8>`.

    Args:
        net: a loaded feature net (`load_feature_net` sets `net.weights_hash`).

    Returns:
        The extractor name to pass as `feature_extractor=`.
    """
    digest = net.weights_hash
    if digest in _REGISTERED:
        return _REGISTERED[digest]
    tag = re.sub(r"[^a-z0-9_]+", "_", str(net.config["name"]).lower()).strip("_") or "images"
    name = f"scorebench-{tag}-{digest[:8]}"
    if name in FEATURE_EXTRACTORS_REGISTRY:  # same 8 hex digits, other weights: astronomically rare
        raise ScorebenchError(
            f"feature extractor name {name!r} is already registered with other weights; retrain with another seed"
        )
    cls = type(
        f"FeatureNetExtractor_{digest[:8]}",
        (FeatureNetExtractor,),
        {
            "net_config": dict(net.config),
            "net_state": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        },
    )
    torch_fidelity.register_feature_extractor(name, cls)
    _REGISTERED[digest] = name
    return name


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inception_weights_path(inception_weights: str | os.PathLike | None) -> Path:
    """The local Inception-v3 weights file, or a ScorebenchError: nothing is ever downloaded.

    Args:
        inception_weights: `evaluation.fid.inception_weights`; None looks for torch-fidelity's
            download in `$TORCH_HOME/hub/checkpoints`.

    Returns:
        The path of an existing weights file.
    """
    if inception_weights:
        path = Path(inception_weights)
        if not path.is_file():
            raise ScorebenchError(
                f"evaluation.fid.inception_weights: file {str(path)!r} does not exist; "
                f"point it at a local copy of {URL_INCEPTION_V3}"
            )
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)
    if not path.is_file():
        raise ScorebenchError(
            f"evaluation.fid.inception_weights is not set and {str(path)!r} does not exist: set it to a local copy of "
            f"{URL_INCEPTION_V3}, run once where it can download, or use evaluation.fid.extractor: feature_net"
        )
    return path


class _Extractor(NamedTuple):
    kind: str  # "feature_net" | "inception"
    name: str  # torch-fidelity registry name
    tag: str  # weights identity used in cache names and result rows
    layer: str
    channels: int
    weights_path: str | None  # passed to torch-fidelity (Inception loads it itself)


def _resolve_extractor(extractor: str, feature_net_path, inception_weights) -> _Extractor:
    if extractor == "feature_net":
        if feature_net_path is None:
            raise ScorebenchError("feature_net_path is required with evaluation.fid.extractor: feature_net")
        net = load_feature_net(feature_net_path)
        name = register_feature_net(net)
        tag = f"featnet-{net.weights_hash[:8]}"
        return _Extractor("feature_net", name, tag, FEATURE_NET_LAYER, net.config["shape"][0], None)
    if extractor == "inception":
        path = inception_weights_path(inception_weights)
        stat = path.stat()
        digest = _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        return _Extractor("inception", INCEPTION_NAME, f"inception-{digest[:8]}", INCEPTION_LAYER, 3, str(path))
    raise ScorebenchError(f"evaluation.fid.extractor: unknown {extractor!r}; choose one of {list(EXTRACTORS)}")


# ---------------------------------------------------------------------------------------------
# Reference statistics
# ---------------------------------------------------------------------------------------------
def _fidelity_kwargs(ext: _Extractor, *, cache_root, device, batch_size) -> dict:
    return {
        "feature_extractor": ext.name,
        "feature_layer_fid": ext.layer,
        "feature_layer_kid": ext.layer,
        "feature_layer_prc": ext.layer,
        "feature_extractor_weights_path": ext.weights_path,
        "cuda": torch.device(device).type == "cuda",
        "batch_size": int(batch_size or (64 if ext.kind == "inception" else 512)),
        "cache_root": str(cache_root),
        "cache": True,
        "save_cpu_ram": True,
        "verbose": False,
    }


def _cache_files(cache_root, full_name: str, ext: _Extractor) -> list[Path]:
    """Our sidecar and the features file torch-fidelity writes for a cached input.

    torch-fidelity names it `{cache name}-{extractor name}-features-{layer}.pt` and derives the
    FID statistics file (`...-stat-fid-{layer}.pt`) from it on first use.
    """
    root = Path(cache_root)
    return [root / f"{full_name}.json", root / f"{full_name}-{ext.name}-features-{ext.layer}.pt"]


def _check_cache_name(cache_name: str) -> None:
    if not isinstance(cache_name, str) or not _NAME_RE.match(cache_name):
        raise ScorebenchError(
            f"cache_name {cache_name!r}: use letters, digits, '_', '-' or '.' only (it becomes a file name)"
        )


def reference_features(
    images: torch.Tensor,
    *,
    cache_root: str | os.PathLike,
    cache_name: str,
    extractor: str = "feature_net",
    feature_net_path: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
) -> str:
    """Extract and cache reference features once; later calls only look them up.

    The full cache name is `<cache_name>-<pixels sha256[:12]>-<extractor tag>`, where the tag
    carries the extractor's weights hash. Changing the reference images or the extractor
    weights therefore gives a new name and never reuses stale features. (torch-fidelity's key
    is only `<cache name>-<extractor name>`, and Inception's name has no hash.)

    Args:
        images: (N, C, H, W) float reference images in [0, 1] (e.g. the dataset's test split).
        cache_root: folder of torch-fidelity's cache files.
        cache_name: base name, usually the dataset name.
        extractor: "feature_net" or "inception".
        feature_net_path: the saved feature net (extractor "feature_net").
        inception_weights: local Inception-v3 weights (extractor "inception").
        device: where features are extracted ("cuda" uses the GPU).
        batch_size: images per forward pass (default 512 feature net, 64 Inception).

    Returns:
        The full cache name, to pass to `fidelity_metrics` in place of the images.
    """
    _check_cache_name(cache_name)
    ext = _resolve_extractor(extractor, feature_net_path, inception_weights)
    dataset = to_uint8_dataset(images, channels=ext.channels)
    pixels_sha256 = _pixels_hash(dataset)
    full_name = f"{cache_name}-{pixels_sha256[:12]}-{ext.tag}"
    files = _cache_files(cache_root, full_name, ext)
    if all(f.is_file() for f in files):
        return full_name
    if len(dataset) < 2:
        raise ScorebenchError(f"evaluation.fid.n_reference: FID needs at least 2 reference images, got {len(dataset)}")
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    # Populate the cache through the public API only. input1 and input2 share the cache name,
    # so input1's features are computed and saved and input2 loads them. A 1-subset, size-2 KID
    # is the cheapest metric that needs features; FID would add a 2048² eigendecomposition
    # (2-20 s on a 2-core CPU for Inception). FID statistics are cached on first use.
    torch_fidelity.calculate_metrics(
        input1=dataset,
        input2=dataset,
        input1_cache_name=full_name,
        input2_cache_name=full_name,
        kid=True,
        kid_subsets=1,
        kid_subset_size=2,
        **_fidelity_kwargs(ext, cache_root=cache_root, device=device, batch_size=batch_size),
    )
    write_json(
        files[0],
        {
            "cache_name": full_name,
            "n_reference": len(dataset),
            "pixels_sha256": pixels_sha256,
            "extractor": ext.kind,
            "extractor_id": ext.name if ext.kind == "feature_net" else ext.tag,
            "layer": ext.layer,
        },
    )
    return full_name


class _CachedReference(TorchDataset):
    """Stands in for input2 when only cached reference features are given.

    torch-fidelity reads it only on a cache miss, which `fidelity_metrics` rules out first;
    it fails with a clear message should that ever happen.
    """

    def __init__(self, cache_name: str, cache_root):
        self.cache_name, self.cache_root = cache_name, cache_root

    def __getitem__(self, index):
        raise ScorebenchError(
            f"reference features {self.cache_name!r} are missing from {str(self.cache_root)!r}; "
            "run reference-stats again"
        )


def _cached_reference_size(cache_root, full_name: str, ext: _Extractor) -> int:
    if not full_name.endswith(f"-{ext.tag}"):
        raise ScorebenchError(
            f"reference cache {full_name!r} was computed with another feature extractor than the current one "
            f"({ext.tag}); recompute it with reference_features (scorebench reference-stats)"
        )
    files = _cache_files(cache_root, full_name, ext)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ScorebenchError(
            f"reference cache {full_name!r}: {missing} missing under {str(cache_root)!r}; run reference-stats first"
        )
    return int(json.loads(files[0].read_text())["n_reference"])


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _check_sample_counts(metrics, n_generated: int, n_reference: int, prc_neighborhood: int) -> None:
    sets = (
        (n_generated, "generated samples", "sampling.n_samples"),
        (n_reference, "reference images", "evaluation.fid.n_reference"),
    )
    for count, who, field in sets:
        if ("fid" in metrics or "kid" in metrics) and count < 2:
            raise ScorebenchError(f"{field}: FID/KID need at least 2 {who}, got {count}")
        if "prc" in metrics and count <= prc_neighborhood:
            raise ScorebenchError(
                f"{field}: precision/recall need more than prc_neighborhood={prc_neighborhood} {who}, got {count}"
            )


def fidelity_metrics(
    generated: torch.Tensor,
    reference_or_cache: torch.Tensor | str,
    *,
    cache_root: str | os.PathLike,
    cache_name: str = "reference",
    extractor: str = "feature_net",
    feature_net_path: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    n_samples: int | None = None,
    metrics: tuple[str, ...] = METRICS,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    prc_neighborhood: int = 3,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    rng_seed: int = 2020,
) -> list[dict]:
    """FID, KID and precision/recall/F of generated images against a reference set, as tidy rows.

    Deterministic: KID's random subsets come from `rng_seed`, and nothing else is random.

    Args:
        generated: (N, C, H, W) float samples in [0, 1] (torch-fidelity's input1, "generated").
        reference_or_cache: reference images (cached via `reference_features` on first use), or
            a cache name returned by `reference_features`.
        cache_root: folder of the reference cache.
        cache_name: base cache name when reference images are given (usually the dataset name).
        extractor: "feature_net" (offline, default) or "inception" (needs local weights).
        feature_net_path, inception_weights: the extractor's weights (see `reference_features`).
        n_samples: use the first n_samples generated images (all when None).
        metrics: any of "fid", "kid", "prc".
        kid_subset_size: KID subset size; None takes min(1000, n_generated, n_reference).
        kid_subsets: number of KID subsets.
        prc_neighborhood: k of the k-NN balls in precision/recall.
        device: "cuda..." runs the extractor on the GPU.
        batch_size: images per forward pass.
        rng_seed: seed of KID's subset draws.

    Returns:
        One dict per value: {metric (fid|kid_mean|kid_std|precision|recall|f_score), value,
        extractor, extractor_id, n_generated, n_reference}.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ScorebenchError(f"fidelity metrics: unknown {unknown or 'empty list'}; choose from {list(METRICS)}")
    ext = _resolve_extractor(extractor, feature_net_path, inception_weights)
    if n_samples is not None:
        if int(n_samples) < 1 or int(n_samples) > len(generated):
            raise ScorebenchError(
                f"sampling.n_samples={n_samples}: must be between 1 and the {len(generated)} generated samples"
            )
        generated = generated[: int(n_samples)]
    gen_dataset = to_uint8_dataset(generated, channels=ext.channels)

    if isinstance(reference_or_cache, str):
        full_name = reference_or_cache
        n_reference = _cached_reference_size(cache_root, full_name, ext)
    else:
        full_name = reference_features(
            reference_or_cache,
            cache_root=cache_root,
            cache_name=cache_name,
            extractor=extractor,
            feature_net_path=feature_net_path,
            inception_weights=inception_weights,
            device=device,
            batch_size=batch_size,
        )
        n_reference = len(reference_or_cache)
    n_generated = len(gen_dataset)
    _check_sample_counts(metrics, n_generated, n_reference, prc_neighborhood)

    kid_options = {}
    if "kid" in metrics:
        largest = min(n_generated, n_reference)
        subset = min(KID_MAX_SUBSET, largest) if kid_subset_size is None else int(kid_subset_size)
        if not 2 <= subset <= largest:
            raise ScorebenchError(
                f"kid_subset_size={kid_subset_size}: must be between 2 and "
                f"min(sampling.n_samples, n_reference) = {largest}"
            )
        kid_options = {"kid_subset_size": subset, "kid_subsets": int(kid_subsets)}

    raw = torch_fidelity.calculate_metrics(
        input1=gen_dataset,
        input2=_CachedReference(full_name, cache_root),
        input2_cache_name=full_name,
        fid="fid" in metrics,
        kid="kid" in metrics,
        prc="prc" in metrics,
        prc_neighborhood=int(prc_neighborhood),
        rng_seed=int(rng_seed),
        **kid_options,
        **_fidelity_kwargs(ext, cache_root=cache_root, device=device, batch_size=batch_size),
    )
    keys = {
        "fid": [("fid", torch_fidelity.KEY_METRIC_FID)],
        "kid": [("kid_mean", torch_fidelity.KEY_METRIC_KID_MEAN), ("kid_std", torch_fidelity.KEY_METRIC_KID_STD)],
        "prc": [
            ("precision", torch_fidelity.KEY_METRIC_PRECISION),
            ("recall", torch_fidelity.KEY_METRIC_RECALL),
            ("f_score", torch_fidelity.KEY_METRIC_F_SCORE),
        ],
    }
    extractor_id = ext.name if ext.kind == "feature_net" else ext.tag
    return [
        {
            "metric": metric,
            "value": float(raw[key]),
            "extractor": ext.kind,
            "extractor_id": extractor_id,
            "n_generated": n_generated,
            "n_reference": n_reference,
        }
        for group in METRICS
        if group in metrics
        for metric, key in keys[group]
    ]
