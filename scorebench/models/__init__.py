"""Score networks by registry name, built from a preset plus overrides, rebuilt from their config.

Every built network is called as `model(x, sigma)` with x (B, *shape) and sigma (B,), and carries
`.config`: a JSON-able dict (arch, preset, shape and every hyper-parameter) that a checkpoint stores
so `model_from_config` rebuilds the same architecture without the study config (nanoGPT's habit).
"""

from __future__ import annotations

import torch
from torch import nn

from scorebench.data.mixture import IsotropicGaussianMixture
from scorebench.errors import ScorebenchError
from scorebench.models.mlp import ACTIVATIONS, ScoreMLP
from scorebench.models.ncsn import ScoreNCSN, check_sigmas
from scorebench.models.ncsnv2 import ScoreNCSNv2
from scorebench.models.norms import CHANNEL_VARS
from scorebench.models.oracle import OracleScore
from scorebench.models.unet import ScoreUNet

# Each entry is a class with a PRESETS table and a check_shape(shape) -> reason-or-None; a class with
# NEEDS_SIGMAS = True conditions on the σ level index, so it is built for (and records) one σ list.
MODELS = {"mlp": ScoreMLP, "ncsn": ScoreNCSN, "ncsnv2": ScoreNCSNv2, "unet": ScoreUNet}

def _check_shape(arch: str, shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ScorebenchError(f"model.shape: need a tuple of positive ints, got {shape!r}") from None
    if any(d < 1 for d in shape):
        raise ScorebenchError(f"model.shape: need positive sizes, got {shape}")
    reason = MODELS[arch].check_shape(shape)
    if reason is not None:
        raise ScorebenchError(f"model {arch!r}: shape {shape} refused: {reason}")
    return shape


def _check_value(arch: str, key: str, value, default):
    """A hyper-parameter of the same kind as its preset default, as a JSON-able value."""
    where = f"model {arch!r}: {key}"
    if key == "activation":
        if value not in ACTIVATIONS:
            raise ScorebenchError(f"{where}: unknown {value!r}; choose one of {sorted(ACTIVATIONS)} (smooth only)")
        return value
    if key == "channel_var":
        if value not in CHANNEL_VARS:
            raise ScorebenchError(f"{where}: unknown {value!r}; choose one of {list(CHANNEL_VARS)}")
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ScorebenchError(f"{where}: need true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScorebenchError(f"{where}: need an integer >= 1, got {value!r}")
        return value
    if isinstance(default, list):
        ok = isinstance(value, (list, tuple)) and len(value) > 0
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        if not ok:
            raise ScorebenchError(f"{where}: need a non-empty list of integers >= 1, got {value!r}")
        return [int(v) for v in value]
    return value


def _seed_from(generator: torch.Generator | None) -> int:
    """An init seed from `generator`; None falls back to the global RNG, like torch's own layers."""
    device = "cpu" if generator is None else generator.device
    return int(torch.randint(0, 2**62, (), generator=generator, device=device))


def build_model(
    arch: str,
    *,
    shape,
    sigmas=None,
    preset: str = "tiny",
    generator: torch.Generator | None = None,
    **overrides,
) -> nn.Module:
    """Build a score network from a preset, with hyper-parameters overridden by name.

    Args:
        arch: a key of MODELS ("mlp" for vectors, any shape flattened; "unet" for (C, H, W);
            "ncsn" for (C, H, W), NCSN's RefineNet; "ncsnv2" for (C, H, W), NCSNv2's).
        shape: per-sample data shape, e.g. (2,) or (1, 28, 28).
        sigmas: the schedule's σ list; checked against `scale_by_sigma` (σ = 0 refused). None skips
            the check (rebuilding an mlp or unet from a checkpoint): their σ embedding never depends
            on it. ncsn needs it (one conditioning row per level) and keeps it in `.config`.
        preset: a key of the arch's PRESETS (mlp: tiny/small/medium; unet: tiny/small/base;
            ncsn: tiny/mnist/cifar10/celeba; ncsnv2: tiny/cifar10/celeba/church/ffhq).
        generator: draws the initial weights (built under a forked CPU RNG seeded from it, so the
            global RNG is untouched). Pass one seeded from the cell's seed; None draws the seed from
            the global RNG (as torch's layers do), so only `torch.manual_seed` makes it repeatable.
        **overrides: any hyper-parameter of the preset table (e.g. hidden=128, scale_by_sigma=True).

    Returns:
        The network on CPU, with `.config` holding arch, preset, shape and every hyper-parameter.
    """
    if arch not in MODELS:
        hint = " ('oracle' is built with build_oracle(distribution))" if arch == "oracle" else ""
        raise ScorebenchError(f"model.arch: unknown {arch!r}; choose one of {sorted(MODELS)}{hint}")
    cls = MODELS[arch]
    if preset not in cls.PRESETS:
        raise ScorebenchError(f"model {arch!r}: unknown preset {preset!r}; choose one of {list(cls.PRESETS)}")
    defaults = cls.PRESETS[preset]
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ScorebenchError(f"model {arch!r}: unknown option(s) {unknown}; valid: {sorted(defaults)}")
    shape = _check_shape(arch, shape)
    hparams = {k: _check_value(arch, k, overrides.get(k, v), v) for k, v in defaults.items()}
    if hparams["scale_by_sigma"] and sigmas is not None:
        s = torch.as_tensor(sigmas, dtype=torch.float64)
        if not torch.all(s > 0):
            raise ScorebenchError(
                f"model {arch!r}: scale_by_sigma divides by σ, but the σ list {s.tolist()[:6]} contains σ <= 0 "
                "(the `none` schedule); set scale_by_sigma: false"
            )
    levels = {"sigmas": check_sigmas(sigmas)} if getattr(cls, "NEEDS_SIGMAS", False) else {}
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(_seed_from(generator))
        model = cls(shape, **hparams, **levels)
    model.config = {"arch": arch, "preset": preset, "shape": list(shape), **hparams, **levels}
    return model


def build_oracle(distribution: IsotropicGaussianMixture) -> OracleScore:
    """The exact score of `distribution` as a model (see oracle.py); `.config == {"arch": "oracle"}`."""
    if not isinstance(distribution, IsotropicGaussianMixture):
        raise ScorebenchError(
            f"model 'oracle': needs the dataset's exact distribution (an IsotropicGaussianMixture), "
            f"got {type(distribution).__name__}"
        )
    return OracleScore(distribution)


def model_from_config(config: dict, *, distribution: IsotropicGaussianMixture | None = None) -> nn.Module:
    """Rebuild the architecture a checkpoint's `model.config` describes (weights are loaded separately).

    Args:
        config: a built model's `.config` (after a JSON round trip too).
        distribution: needed only for {"arch": "oracle"}, which has no weights to restore.
    """
    if not isinstance(config, dict) or "arch" not in config:
        raise ScorebenchError(f"model config: need a dict with 'arch', got {config!r}")
    cfg = dict(config)
    arch = cfg.pop("arch")
    if arch == "oracle":
        if distribution is None:
            raise ScorebenchError("model config: arch 'oracle' needs the dataset's distribution to rebuild")
        return build_oracle(distribution)
    if "shape" not in cfg:
        raise ScorebenchError(f"model config: missing 'shape' for arch {arch!r}")
    shape = cfg.pop("shape")
    preset = cfg.pop("preset", "tiny")
    sigmas = cfg.pop("sigmas", None)  # only index-conditioned archs (ncsn) record their σ list
    # a config written before a hyper-parameter existed meant the behaviour of that time, not today's default
    for key, value in getattr(MODELS.get(arch), "LEGACY_DEFAULTS", {}).items():
        cfg.setdefault(key, value)
    return build_model(arch, shape=shape, sigmas=sigmas, preset=preset, **cfg)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameter entries, for provenance columns and preset tables."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


__all__ = [
    "MODELS",
    "OracleScore",
    "ScoreMLP",
    "ScoreNCSN",
    "ScoreNCSNv2",
    "ScoreUNet",
    "build_model",
    "build_oracle",
    "count_parameters",
    "model_from_config",
]
