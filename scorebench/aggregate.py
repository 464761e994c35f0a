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
from scorebench.layout import cell_of_path
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
    """Training curves as tidy rows; the cell is read from the log's path (`layout.cell_of_path`)."""
    import pandas as pd

    rows = []
    for p in map(Path, paths):
        study, dataset, schedule, objective, seed = cell_of_path(p, below=1)
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
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


def aggregate(inputs, out, *, train_logs=()) -> None:
    """Write {out} (.parquet) and its .csv twin, and the training curves beside it."""
    out = Path(out)
    df = read_tables(inputs)
    write_table(df, out)
    write_table(df, out.with_suffix(".csv"))
    curves = read_train_logs(train_logs)
    write_table(curves, out.with_name("train_curves.parquet"))
