"""Every file a job reads is opened here, so a damaged file is one line naming it and what to do.

A samples file cut short, a bit-flipped parquet table, a reference record that is not JSON: the
libraries below raise a dozen different exceptions (BadZipFile, zlib.error, ArrowInvalid, ...),
each as a traceback. Here each becomes a `ScorebenchError` that names the file, the reason in one
line, and the action: which file or folder to delete so that running snakemake again remakes it
(a file inside a pack's or group's folder is remade only with its whole folder, which Snakemake
tracks as one output).
"""

from __future__ import annotations

import json
from pathlib import Path

from scorebench.errors import ScorebenchError
from scorebench.layout import EVALUATED, MEMBERS


def redo_hint(path) -> str:
    """What to delete so that the next `snakemake` run remakes `path`."""
    parts = Path(path).parts
    for i in range(len(parts) - 3, -1, -1):
        if parts[i] == "packs" and i + 3 < len(parts):
            if parts[i + 3] == MEMBERS:
                return f"delete the folder {Path(*parts[: i + 4])} and run snakemake again (its pack retrains)"
            if parts[i + 3] == EVALUATED and i + 4 < len(parts):
                return f"delete the folder {Path(*parts[: i + 5])} and run snakemake again (its group is re-evaluated)"
    return "delete it and run snakemake again to remake it"


def reason(exc: BaseException) -> str:
    """An exception as `Type: first line`, at most 200 characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}"[:200]


def damaged(path, what: str, exc: BaseException) -> ScorebenchError:
    """The one-line error for an unreadable file."""
    if isinstance(exc, FileNotFoundError) or not Path(path).exists():
        return ScorebenchError(f"{what} {path} does not exist; {redo_hint(path)}")
    return ScorebenchError(f"{what} {path} is damaged or unreadable ({reason(exc)}); {redo_hint(path)}")


def read_npz(path, what: str, *, require=()) -> dict:
    """All arrays of an .npz file, read now (a lazily read member could fail later, mid-figure)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib.error, OSError, ValueError, EOFError ...
        raise damaged(path, what, exc) from None
    missing = [k for k in require if k not in arrays]
    if missing:
        raise ScorebenchError(f"{what} {path} lacks {', '.join(missing)} (written by another version?); "
                              f"{redo_hint(path)}")  # fmt: skip
    return arrays


def read_meta(arrays: dict, path, what: str) -> dict:
    """The JSON record an .npz of this project keeps in its `meta` array."""
    try:
        return json.loads(str(arrays["meta"]))
    except (KeyError, ValueError) as exc:
        raise damaged(path, what, exc) from None


def read_table(path, what: str = "table"):
    """A parquet table as a DataFrame."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - ArrowInvalid, OSError, ...
        raise damaged(path, what, exc) from None


def read_json(path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise damaged(path, what, exc) from None
