"""Atomic checkpoint files and clear errors when one cannot be used.

A job killed mid-write must never leave a half-written checkpoint in place of a good one
(nanoGPT overwrites `ckpt.pt` in place; we write a temp file beside it, fsync, then `os.replace`).
Files are loaded with `weights_only=True`, so a checkpoint holds only tensors and plain
dicts/lists/numbers/strings (settings as a plain dict, RNG states as tensors): loading never
runs pickled code, and a file from another version fails with a one-line message, not a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from scorebench.errors import ScorebenchError
from scorebench.results import atomic_path

_FIX = "delete it to retrain from scratch"


def save_atomic(obj, path) -> Path:
    """`torch.save` that replaces `path` only once the new file is complete on disk.

    Args:
        obj: what to save (tensors and plain containers, so `weights_only` loading works).
        path: destination; its folder is created if needed.

    Returns:
        The destination path.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort; not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path, *, expect_keys=(), map_location="cpu", fix: str = _FIX) -> dict:
    """Load a checkpoint dict safely, turning every way it can be unusable into one line.

    Args:
        path: the file.
        expect_keys: keys the caller needs; a file lacking one is reported as incompatible.
        map_location: where tensors land (CPU by default; the caller moves them).
        fix: what the message tells the user to do (a finished model.pt: delete it, or its pack's folder).

    Returns:
        The saved dict.

    Raises:
        ScorebenchError: missing, truncated, garbage, unsafe content, or missing keys; the message
            names the file and says to delete it to retrain from scratch.
    """
    path = Path(path)
    if not path.is_file():
        raise ScorebenchError(f"checkpoint {path} does not exist" + ("" if fix == _FIX else f"; {fix}"))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, disallowed pickle globals, ...
        raise ScorebenchError(f"checkpoint {path} is corrupt ({type(exc).__name__}: {_reason(exc)}); {fix}") from None
    if not isinstance(obj, dict):
        raise ScorebenchError(f"checkpoint {path} is corrupt (holds a {type(obj).__name__}, not a dict); {fix}")
    missing = [k for k in expect_keys if k not in obj]
    if missing:
        raise ScorebenchError(f"checkpoint {path} is incompatible (missing keys {missing}); {fix}")
    return obj


def load_states(targets: dict, saved: dict, *, path) -> None:
    """`load_state_dict` for each named object (model, EMA, optimiser) from a loaded checkpoint.

    Args:
        targets: {checkpoint key: object with load_state_dict}.
        saved: the loaded checkpoint dict.
        path: the checkpoint file, for the message.

    Raises:
        ScorebenchError: a state that does not fit its object (other architecture, other optimiser).
    """
    for key, target in targets.items():
        try:
            target.load_state_dict(saved[key])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise ScorebenchError(f"checkpoint {path} is incompatible ({key}: {_reason(exc)}); {_FIX}") from None


def _reason(exc: Exception) -> str:
    """The informative line of a load error (weights_only errors put it after a long preamble)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in str(exc).splitlines()]
    lines = [ln for ln in lines if ln]
    for ln in lines:
        if "Unsupported global" in ln:
            return ln.split(" was not an allowed")[0][:200] + " is not allowed in a weights-only file"
        if "Unsupported operand" in ln:
            return ln[:200]
    return (lines[0] if lines else "the file is empty or ends early")[:200]


def _plain(value):
    """Tuples as lists, so a value compares equal after a save/load round trip."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def require_same(saved: dict, current: dict, *, path, label: str, fields=None) -> None:
    """Refuse to resume when the file was written for a different model or run.

    Args:
        saved: the dict stored in the checkpoint (e.g. its model_config).
        current: the same dict for this run.
        path: the checkpoint file, for the message.
        label: what the dicts are ("model_config", "settings"), for the message.
        fields: the keys to compare (default: all keys of either).

    Raises:
        ScorebenchError: naming the first differing field, both values, and the file.
    """
    keys = fields if fields is not None else sorted(set(saved) | set(current), key=str)
    for key in keys:
        old, new = _plain(saved.get(key, "<absent>")), _plain(current.get(key, "<absent>"))
        if old != new:
            raise ScorebenchError(
                f"checkpoint {path} is incompatible: {label}.{key} was {old!r} there but is {new!r} now; "
                f"{_FIX}, or restore {label}.{key}"
            )
