"""Tidy result rows, their provenance, and atomic writes of every output file.

Every row of a study's table carries the settings that produced it (each grid parameter a column
prefixed by its owner: dataset_, schedule_, objective_, model_, training_, sampler_, sampling_,
evaluation_) and where it was made (git commit, package versions, device), so a number can be
traced and a figure is only ever a query over one table (benchopt's habit).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

KEY_COLUMNS = ["study", "dataset", "schedule", "objective", "seed", "sampler", "metric", "sigma", "sigma_set", "region", "bin"]
PACKAGES = ("scorebench", "torch", "torchvision", "torch-fidelity", "numpy", "snakemake")


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    A killed job therefore never leaves a half-written output that Snakemake would take as done.
    A write that fails because the disk is full says so, naming the file: torch.save, for one,
    reports a full disk only as "unexpected pos" or "basic_ios::clear: iostream error".
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _disk_full_error(path) if _disk_full(exc, path.parent) else exc from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:  # the bytes are on disk before the name points at them
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except Exception as exc:
        if _disk_full(exc, path.parent):  # checked before the partial file is removed and frees space
            raise _disk_full_error(path) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


DISK_FULL_BYTES = 1 << 20  # a failed write with less than this free on its file system blames the disk


def _disk_full(exc: BaseException, folder: Path) -> bool:
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_BYTES
    except OSError:
        return False


def _disk_full_error(path: Path):
    from scorebench.errors import ScorebenchError

    return ScorebenchError(f"no space left on device writing {path}; free some space and run snakemake again")


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_table(df, path) -> None:
    """Write a DataFrame as parquet (or csv by suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)


def write_npz(path, **arrays) -> None:
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def flatten(prefix: str, settings: dict) -> dict:
    """{"kind": "geometric", "levels": 10} -> {"schedule_kind": "geometric", "schedule_levels": 10}.

    Nested dicts flatten with underscores; lists become JSON text so the column stays scalar.
    """
    out = {}
    for key, value in settings.items():
        name = f"{prefix}_{key}"
        if isinstance(value, dict):
            out.update(flatten(name, value))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out


def spec_columns(spec: dict) -> dict:
    """The parameter columns of a job spec: identity columns plus every setting, prefixed by its owner."""
    cols = {
        "study": spec["study"],
        "cell": spec["cell"],
        "dataset": spec["dataset"]["name"],
        "schedule": spec["schedule"]["name"],
        "objective": spec["objective"]["name"],
        "seed": int(spec["seed"]),
        "sampler": spec["sampler"]["name"] if "sampler" in spec else "",
    }
    for owner in ("dataset", "schedule", "objective", "model", "training", "sampler", "sampling", "evaluation"):
        if owner in spec:
            cols.update(flatten(owner, {k: v for k, v in spec[owner].items() if k != "name"}))
    if "weights" in spec:
        cols["evaluation_weights"] = spec["weights"]
    n_levels = schedule_n_levels(spec["schedule"])
    if n_levels is not None:
        cols["schedule_n_levels"] = n_levels
    return cols


def schedule_n_levels(schedule: dict) -> int | None:
    """L of a schedule preset, for every kind whose preset fixes it (`single` and `none` have one level
    but no `levels` key; `ncsnv2` derives L from the data: None), so an L axis spans every kind."""
    kind = schedule["kind"]
    if kind in ("none", "single"):
        return 1
    if kind == "explicit":
        return len(schedule["sigmas"])
    if kind in ("geometric", "linear") and "levels" in schedule:
        return int(schedule["levels"])
    return None


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The workflow's git commit (with '+dirty' for uncommitted changes), or 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    for cwd in (Path.cwd(), here):
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            if sha:
                dirty = subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=cwd, capture_output=True, text=True, timeout=10,
                ).stdout.strip()  # fmt: skip
                return sha + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return "unknown"


@functools.lru_cache(maxsize=1)
def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(device: dict | None = None) -> dict:
    """Columns saying where a row was made: commit, versions, host, device."""
    cols = {"git_commit": git_commit(), "python": platform.python_version(), "host": platform.node()}
    cols.update({f"version_{k.replace('-', '_')}": v for k, v in package_versions().items()})
    for k, v in (device or {}).items():
        cols[f"device_{k}"] = v
    return cols


def gpu_hours(wall_s: float, device: dict | None) -> float:
    """Wall hours spent on a GPU (0 on a CPU): the cost column a cluster user budgets with."""
    return float(wall_s) / 3600.0 if (device or {}).get("type") == "cuda" else 0.0


def tidy_rows(metric_rows: list[dict], spec: dict, extra: dict | None = None) -> list[dict]:
    """Attach the spec's parameter columns and `extra` (provenance, timings) to each metric row."""
    base = {**spec_columns(spec), **(extra or {})}
    rows = []
    for r in metric_rows:
        row = dict(base)
        row.update(r)
        rows.append(row)
    return rows
