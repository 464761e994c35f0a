"""Merge per-job tables into one tidy study table, training curves, and summary tables.

The study table is the union of every evaluation job's rows; re-runs are deduplicated on the
key columns keeping the newest (benchopt's merge). Summaries are mean ± std over seeds of the
headline numbers, written as Markdown and LaTeX.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from scorebench.errors import ScorebenchError
from scorebench.layout import cell_of_path
from scorebench.results import KEY_COLUMNS, write_table, write_text

if TYPE_CHECKING:  # pandas is imported lazily inside the functions
    import pandas as pd

HEADLINE = {
    # metric -> (label, lower is better?)
    "fid": ("FID", True),
    "kid_mean": ("KID", True),
    "precision": ("precision", False),
    "recall": ("recall", False),
    "mmd_rbf": ("MMD²", True),
    "sliced_wasserstein": ("sliced W₂", True),
    "mode_weight_error": ("mode-weight TV", True),
    "mode_coverage": ("modes covered", False),
    "score_error_rel": ("rel. score error (σ_min)", True),
}


def read_table(path) -> pd.DataFrame:
    """One parquet table; an unreadable file is named in one line."""
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is named, not traced
        raise ScorebenchError(f"table {path} is unreadable ({type(exc).__name__}: {exc})") from None


def read_tables(paths) -> pd.DataFrame:
    import pandas as pd

    frames = [read_table(p) for p in paths]
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


def headline(df) -> pd.DataFrame:
    """One value per (cell, sampler, metric): sample metrics as they are, and each cell's score error
    at its smallest σ repeated on every sampler row of that cell (it does not depend on the sampler).
    Image metrics carry their feature extractor in the name, so numbers from different extractors
    never share a column."""
    import pandas as pd

    sample = df[df["metric"].isin([m for m in HEADLINE if m != "score_error_rel"]) & (df["sampler"] != "")].copy()
    if "extractor" in sample.columns:
        has = sample["extractor"].notna() & (sample["extractor"].astype(str) != "")
        sample.loc[has, "metric"] = sample.loc[has, "metric"] + " [" + sample.loc[has, "extractor"].astype(str) + "]"
    parts = [sample]
    se = df[(df["metric"] == "score_error_rel") & (df["region"] == "all")]
    if len(se):
        cell_keys = ["dataset", "schedule", "objective", "seed"]
        se = se[se["sigma"] == se.groupby(cell_keys)["sigma"].transform("min")].drop(columns=["sampler"])
        samplers = df.loc[df["sampler"] != "", cell_keys + ["sampler"]].drop_duplicates()
        parts.append(se.merge(samplers, on=cell_keys) if len(samplers) else se.assign(sampler=""))
    return pd.concat(parts, ignore_index=True)


def _label(metric: str) -> str:
    base, _, extractor = metric.partition(" [")
    label = HEADLINE.get(base, (base, True))[0]
    return f"{label} [{extractor}" if extractor else label


def summary(df) -> pd.DataFrame:
    """Mean ± std over seeds, one row per (dataset, schedule, objective, sampler), one column per metric."""
    h = headline(df)
    if h.empty:
        return h
    g = h.groupby(["dataset", "schedule", "objective", "sampler", "metric"])["value"]
    stats = g.agg(["mean", "std", "count"]).reset_index()

    def fmt(r):
        if r["count"] > 1 and not math.isnan(r["std"]):
            return f"{r['mean']:.4g} ± {r['std']:.2g}"
        return f"{r['mean']:.4g}"

    stats["cell"] = stats.apply(fmt, axis=1)
    wide = stats.pivot_table(
        index=["dataset", "schedule", "objective", "sampler"], columns="metric", values="cell", aggfunc="first"
    ).reset_index()
    wide.columns.name = None
    order = {m: i for i, m in enumerate(HEADLINE)}
    metrics = sorted((c for c in wide.columns if c not in ("dataset", "schedule", "objective", "sampler")),
                     key=lambda m: (order.get(m.partition(" [")[0], 99), m))  # fmt: skip
    wide = wide[["dataset", "schedule", "objective", "sampler", *metrics]]
    return wide.rename(columns={m: _label(m) for m in metrics}).fillna("")


def to_markdown(df) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_latex(df) -> str:
    def esc(s):
        s = str(s)
        for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
            s = s.replace(a, b)
        return s.replace("±", r"$\pm$").replace("σ", r"$\sigma$").replace("²", r"$^2$").replace("₂", r"$_2$")

    cols = list(df.columns)
    lines = [r"\begin{tabular}{" + "l" * 4 + "r" * (len(cols) - 4) + "}", r"\toprule"]
    lines.append(" & ".join(esc(c) for c in cols) + r" \\")
    lines.append(r"\midrule")
    for row in df.itertuples(index=False):
        lines.append(" & ".join(esc(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def aggregate(inputs, out, *, train_logs=(), tables_dir=None) -> None:
    """Write {out} (.parquet) and its .csv twin, training curves beside it, and summary tables."""
    out = Path(out)
    df = read_tables(inputs)
    write_table(df, out)
    write_table(df, out.with_suffix(".csv"))
    curves = read_train_logs(train_logs)
    write_table(curves, out.with_name("train_curves.parquet"))
    if tables_dir:
        tables = Path(tables_dir)
        s = summary(df)
        write_text(tables / "summary.md", "# Summary (mean ± std over seeds)\n\n" + to_markdown(s))
        write_text(tables / "summary.tex", to_latex(s))
