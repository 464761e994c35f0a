"""The authors' released NCSN and NCSNv2 weights as this project's model.pt, so a released model is
sampled and scored exactly like a trained cell (`scorebench import-checkpoint`).

What the authors' files hold (read from their runners, not copied): a list `states`, whose first
entry is `score.state_dict()` of a `torch.nn.DataParallel` wrapper, so every key starts with
`module.` (ermongroup/ncsn runners/anneal_runner.py `train`: [model, optimizer]; ermongroup/ncsnv2
runners/ncsn_runner.py `train`: [model, optimizer, epoch, step, ema]). NCSNv2's last entry with
`model.ema: true` is the EMA shadow `EMAHelper.state_dict()`: parameters only, keyed by the
*unwrapped* module's names (no `module.` prefix). NCSNv2's model state also holds the σ list as the
buffer `sigmas` (geometric σ_begin → σ_end, num_classes levels); NCSN's does not, so its σ list comes
from the config (sigma_begin, sigma_end, num_classes of configs/anneal.yml).

Key names differ from this project's only in spelling: the mapping below renames each of our
state-dict keys into theirs (`authors_key`) from the layer structure (begin_conv/end_conv/
normalizer, res<k>.<j>.normalize1/conv1/normalize2/conv2/shortcut with `.conv` inside a
ConvMeanPool, refine<k>.adapt_convs.<i>.<b>_<s>_conv|norm, msf, crp, output_convs), and the import
requires a one-to-one match with equal shapes, so a wrong or partial file is refused by name.
"""

from __future__ import annotations

import math
import re

import torch

from scorebench.errors import ScorebenchError

PREFIX = "module."
# NCSNv2 stage and RefineBlock names by depth (models/ncsnv2.py of the authors: NCSNv2,
# NCSNv2Deeper, NCSNv2Deepest): our stages[k] and refines[k] (deepest stage first)
V2_STAGES = {
    "base": ["res1", "res2", "res3", "res4"],
    "deeper": ["res1", "res2", "res3", "res4", "res5"],
    "deepest": ["res1", "res2", "res3", "res31", "res4", "res5"],
}
V2_REFINES = {
    "base": ["refine1", "refine2", "refine3", "refine4"],
    "deeper": ["refine1", "refine2", "refine3", "refine4", "refine5"],
    "deepest": ["refine1", "refine2", "refine31", "refine3", "refine4", "refine5"],
}


def _rcu(match: re.Match, kind: str) -> str:
    b, s = int(match["b"]), int(match["s"])
    return f"{b + 1}_{s + 1}_{kind}."


def _ncsn_key(key: str, model) -> str:
    k = re.sub(r"^conv_in\.", "begin_conv.", key)
    k = re.sub(r"^conv_out\.", "end_conv.", k)
    k = re.sub(r"^norm_out\.", "normalizer.", k)
    m = re.match(r"^(res\d\.\d+)\.(norm1|norm2|conv2|shortcut)\.(.*)$", k)
    if m:
        block, part, rest = m.groups()
        if part in ("norm1", "norm2"):
            return f"{block}.normalize{part[-1]}.{rest}"
        if model.get_submodule(block).pool:  # the authors' ConvMeanPool wraps its conv
            return f"{block}.{part}.conv.{rest}"
        return k
    k = re.sub(r"\.adapt\.(\d+)\.(?P<kind>norms|convs)\.(?P<b>\d+)\.(?P<s>\d+)\.",
               lambda m: f".adapt_convs.{m[1]}." + _rcu(m, m["kind"][:-1]), k)  # fmt: skip
    k = re.sub(r"\.out\.(?P<kind>norms|convs)\.(?P<b>\d+)\.(?P<s>\d+)\.",
               lambda m: ".output_convs." + _rcu(m, m["kind"][:-1]), k)  # fmt: skip
    return k


def _ncsnv2_key(key: str, model) -> str:
    depth = model.config["depth"]
    k = re.sub(r"^stages\.(\d+)\.", lambda m: V2_STAGES[depth][int(m[1])] + ".", key)
    k = re.sub(r"^refines\.(\d+)\.", lambda m: V2_REFINES[depth][int(m[1])] + ".", k)
    k = re.sub(r"\.adapt\.(\d+)\.convs\.(?P<b>\d+)\.(?P<s>\d+)\.", lambda m: f".adapt_convs.{m[1]}." + _rcu(m, "conv"), k)
    k = re.sub(r"\.out\.convs\.(?P<b>\d+)\.(?P<s>\d+)\.", lambda m: ".output_convs." + _rcu(m, "conv"), k)
    return re.sub(r"\.msf\.(\d+)\.", r".msf.convs.\1.", k)


def authors_key_map(model) -> dict[str, str]:
    """{our state-dict key: the authors' key (without `module.`)} for an `ncsn` or `ncsnv2` network."""
    arch = (getattr(model, "config", None) or {}).get("arch")
    rename = {"ncsn": _ncsn_key, "ncsnv2": _ncsnv2_key}.get(arch)
    if rename is None:
        raise ScorebenchError(f"import-checkpoint: only ncsn and ncsnv2 networks map onto the authors', got {arch!r}")
    mapping = {key: rename(key, model) for key in model.state_dict()}
    if len(set(mapping.values())) != len(mapping):
        raise ScorebenchError("import-checkpoint: two keys map to one authors' key (a mapping bug)")
    return mapping


def strip_prefix(state: dict) -> dict:
    """The authors' DataParallel keys without `module.` (keys without it are kept as they are)."""
    return {k[len(PREFIX) :] if k.startswith(PREFIX) else k: v for k, v in state.items()}


def to_project_state(authors_state: dict, model, *, extra_ok=("sigmas",)) -> dict:
    """The authors' state dict (with or without `module.`) as our state dict for `model`.

    Every one of our keys must be present with the same shape, and every authors' key used, except
    buffers named in `extra_ok` (NCSNv2's `sigmas`, checked separately).
    """
    theirs = strip_prefix(authors_state)
    mapping = authors_key_map(model)
    ours = model.state_dict()
    missing = sorted(v for v in mapping.values() if v not in theirs)
    unused = sorted(set(theirs) - set(mapping.values()) - set(extra_ok))
    if missing or unused:
        raise ScorebenchError(
            f"import-checkpoint: the file does not fit {model.config['arch']} preset {model.config['preset']!r}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unused[:5]}"
            f"{'...' if len(unused) > 5 else ''} ({len(missing)} missing, {len(unused)} unexpected)"
        )
    out = {}
    for key, their_key in mapping.items():
        t = theirs[their_key]
        if tuple(t.shape) != tuple(ours[key].shape):
            raise ScorebenchError(
                f"import-checkpoint: {PREFIX}{their_key} has shape {tuple(t.shape)}, the network needs "
                f"{tuple(ours[key].shape)} (another width ngf, level count or channel count?)"
            )
        out[key] = t.detach().to(dtype=ours[key].dtype, device="cpu").clone()
    return out


def to_authors_state(model, *, prefix: str = PREFIX, sigmas=None) -> dict:
    """Our weights under the authors' key names (the inverse of `to_project_state`): what their
    runners save for a DataParallel model; `sigmas` adds NCSNv2's σ buffer."""
    state = model.state_dict()
    out = {prefix + their: state[ours].detach().clone() for ours, their in authors_key_map(model).items()}
    if sigmas is not None:
        out[prefix + "sigmas"] = torch.as_tensor(sigmas, dtype=torch.float32)
    return out


def geometric_sigmas(sigma_begin: float, sigma_end: float, levels: int) -> list[float]:
    """The authors' get_sigmas (geometric): exp(linspace(log σ_begin, log σ_end, L)), then float32."""
    s = torch.exp(torch.linspace(math.log(sigma_begin), math.log(sigma_end), int(levels), dtype=torch.float64))
    return [float(v) for v in s.float().double()]


def read_authors_checkpoint(path) -> tuple[dict, dict | None, int | None]:
    """(model state, EMA shadow or None, step or None) from an authors' checkpoint file."""
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise ScorebenchError(f"import-checkpoint: cannot read {path} ({type(exc).__name__}: {exc})") from None
    if isinstance(states, dict) and all(isinstance(v, torch.Tensor) for v in states.values()):
        return states, None, None  # a bare state dict
    if not isinstance(states, (list, tuple)) or not states or not isinstance(states[0], dict):
        raise ScorebenchError(f"import-checkpoint: {path} is not an authors' checkpoint (a list starting with a state dict)")
    model_state = states[0]
    step = states[3] if len(states) >= 4 and isinstance(states[3], int) else None  # NCSNv2: [.., epoch, step, ema]
    ema = states[-1] if len(states) >= 5 and isinstance(states[-1], dict) else None
    return model_state, ema, step


def import_checkpoint(path, out_path, *, arch: str, preset: str, shape, sigmas=None) -> dict:
    """Write `out_path` (a model.pt in this project's layout) from an authors' checkpoint.

    Args:
        arch, preset: `ncsn` (mnist, cifar10, celeba) or `ncsnv2` (cifar10, celeba, church, ffhq).
        shape: (C, H, W) of the data.
        sigmas: the σ list; NCSN needs it (its file has none); NCSNv2's file carries it, and a given
            list must equal it (to float32 precision).

    Returns:
        A summary (keys, step, whether EMA weights were found, the σ range).
    """
    from scorebench.checkpoint import save_atomic
    from scorebench.models import build_model

    model_state, ema_state, step = read_authors_checkpoint(path)
    theirs = strip_prefix(model_state)
    if "sigmas" in theirs:
        stored = [float(v) for v in theirs["sigmas"].double()]
        given = None if sigmas is None else torch.tensor(sigmas, dtype=torch.float32).double()
        if given is not None and (len(given) != len(stored) or not torch.allclose(given, torch.tensor(stored, dtype=torch.float64), rtol=1e-6)):
            raise ScorebenchError(f"import-checkpoint: the file's σ list ({len(stored)} levels, {stored[0]:g} → "
                                  f"{stored[-1]:g}) differs from the one given ({len(sigmas)} levels)")  # fmt: skip
        sigmas = stored
    if sigmas is None:
        raise ScorebenchError(f"import-checkpoint: {path} holds no σ list; give it (sigma_begin, sigma_end, levels)")
    model = build_model(arch, shape=shape, sigmas=sigmas, preset=preset)
    raw = to_project_state(model_state, model)
    model.load_state_dict(raw, strict=True)
    ema = None
    if ema_state is not None:  # parameters only, unprefixed; buffers (none in either network) stay raw
        params = {k for k, _ in model.named_parameters()}
        mapping = authors_key_map(model)
        shadow = strip_prefix(ema_state)
        ema = {k: (shadow[mapping[k]].detach().float().clone() if k in params and mapping[k] in shadow else v)
               for k, v in raw.items()}  # fmt: skip
        lacking = sorted(mapping[k] for k in params if mapping[k] not in shadow)
        if lacking:
            raise ScorebenchError(f"import-checkpoint: the EMA state lacks {lacking[:3]} ({len(lacking)} parameters)")
    s = torch.tensor(sigmas, dtype=torch.float64)
    record = {"imported_from": str(path), "step": step, "ema": ema is not None}
    save_atomic(
        {
            "model": raw, "ema": ema, "model_config": model.config, "step": int(step or 0),
            "settings": {"imported": record}, "sigmas": s, "weights": s**2,
            "wall_s": 0.0, "device": {"imported": True},
        },
        out_path,
    )  # fmt: skip
    return {**record, "levels": len(sigmas), "sigma_max": float(s[0]), "sigma_min": float(s[-1]),
            "parameters": sum(v.numel() for v in raw.values())}  # fmt: skip
