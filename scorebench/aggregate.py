"""Merge per-job tables into one tidy study table and the training curves.

The study table is the union of every evaluation job's rows; re-runs are deduplicated on the
key columns keeping the newest (benchopt's merge). What is made of it (figures, summary tables,
a paper study's summary) is scorebench/report/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from scorebench.errors import ScorebenchError
from scorebench.layout import MEMBERS, cell_of_path
from scorebench.readers import read_table
from scorebench.results import KEY_COLUMNS, write_table

if TYPE_CHECKING:  # pandas is imported lazily inside the functions
    import pandas as pd

def read_tables(paths) -> pd.DataFrame:
    import pandas as pd

    frames = []
    for p in paths:
        frames.append(read_table(p, "metrics table"))
    if not frames:
        raise ScorebenchError("aggregate: no input tables")
    df = pd.concat(frames, ignore_index=True, sort=False)
    keys = [c for c in KEY_COLUMNS if c in df.columns]
    df = df.drop_duplicates(subset=keys, keep="last").reset_index(drop=True)
    return broadcast_cell_columns(df)


TRAINING_COST = ["train_wall_s", "train_gpu_hours", "train_steps", "train_device"]


def broadcast_cell_columns(df) -> pd.DataFrame:
    """Give every row of a cell its training cost (recorded by the score-error job), so a sample-quality
    row carries the training wall seconds and GPU hours behind it."""
    cols = [c for c in TRAINING_COST if c in df.columns]
    if not cols or "cell" not in df.columns:
        return df
    per_cell = df.dropna(subset=[cols[0]]).drop_duplicates("cell").set_index("cell")[cols]
    for c in cols:
        df[c] = df["cell"].map(per_cell[c])
    return df


def read_train_logs(paths) -> pd.DataFrame:
    """Training curves as tidy rows; the cell is read from the log's path (`layout.cell_of_path`).

    Each log must be one writer's complete record: whole JSON lines, steps strictly increasing, the
    last at its model's final step (model.pt beside it; the oracle's log is empty at step 0). A log
    cut mid-line, written by two jobs at once, or ending early is refused with one line naming the
    file and the training to redo, instead of turning into curves that stop early or double back.
    """
    import pandas as pd

    rows = []
    for p in map(Path, paths):
        study, dataset, schedule, objective, seed = cell_of_path(p, below=1)
        for rec in _checked_log(p):
            if "loss" not in rec:
                continue
            rows.append(
                {
                    "study": study, "dataset": dataset, "schedule": schedule, "objective": objective,
                    "seed": seed, "step": int(rec["step"]), "loss": float(rec["loss"]),
                    "wall_s": float(rec.get("wall_s", math.nan)),
                }  # fmt: skip
            )
    return pd.DataFrame(rows, columns=["study", "dataset", "schedule", "objective", "seed", "step", "loss", "wall_s"])


def _retrain_hint(log_path: Path) -> str:
    """What to do about a bad train log: redo the training that wrote it (a cell's, or its pack's)."""
    if len(log_path.parts) >= 4 and log_path.parts[-4] == MEMBERS:  # .../members/{schedule}/seed{n}/train_log.jsonl
        return f"retrain: delete {log_path.parents[2]} and rerun the workflow (rule train_pack)"
    return f"retrain: delete {log_path.with_name('model.pt')} and rerun the workflow (rule train)"


def _checked_log(path: Path) -> list[dict]:
    """The records of one train log, refused unless whole, strictly increasing in step and complete."""
    fix = _retrain_hint(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScorebenchError(f"train log {path} is unreadable ({exc}); {fix}") from None
    if text and not text.endswith("\n"):
        raise ScorebenchError(f"train log {path} ends mid-line (its writer was killed while writing); {fix}")
    records, last = [], None
    for i, line in enumerate(text.splitlines(), start=1):
        try:
            rec = json.loads(line)
            step = int(rec["step"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ScorebenchError(f"train log {path} line {i} is not a log record ({exc}); {fix}") from None
        if last is not None and step <= last:
            raise ScorebenchError(
                f"train log {path} line {i}: step {step} after step {last} (steps must strictly increase; "
                f"two training jobs wrote it); {fix}"
            )
        records.append(rec)
        last = step
    final = _model_step(path.with_name("model.pt"), fix)
    if (last or 0) != final:
        ends = f"ends at step {last}" if records else "is empty"
        raise ScorebenchError(f"train log {path} {ends} but its model is at step {final}; {fix}")
    return records


def _model_step(model_path: Path, fix: str) -> int:
    """The training step a model file was written at (memory-mapped: the weights are not read)."""
    import torch

    try:
        ckpt = torch.load(model_path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["step"])
    except FileNotFoundError:
        raise ScorebenchError(f"train log {model_path.with_name('train_log.jsonl')}: no model file {model_path} "
                              f"beside it; {fix}") from None  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file is named, not traced
        raise ScorebenchError(f"model file {model_path} is unreadable ({type(exc).__name__}); {fix}") from None


def aggregate(inputs, out, *, train_logs=()) -> None:
    """Write {out} (.parquet) and its .csv twin, and the training curves beside it."""
    out = Path(out)
    df = read_tables(inputs)
    write_table(df, out)
    write_table(df, out.with_suffix(".csv"))
    curves = read_train_logs(train_logs)
    write_table(curves, out.with_name("train_curves.parquet"))
