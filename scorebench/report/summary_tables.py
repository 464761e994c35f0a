"""The summary tables every study gets (tables/summary.md and .tex): the headline numbers of each
cell and sampler, mean ± sd over seeds."""

from __future__ import annotations

from pathlib import Path

from scorebench.report.queries import CELL_KEYS, at_sigma_min, score_error_rows
from scorebench.report.stats import over_seeds
from scorebench.report.tables import mean_sd_text, to_latex, to_markdown
from scorebench.results import write_text

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
ROW_KEYS = ["dataset", "schedule", "objective", "sampler"]


def headline(df):
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
    se = score_error_rows(df)
    if len(se):
        se = at_sigma_min(se).drop(columns=["sampler"])
        samplers = df.loc[df["sampler"] != "", CELL_KEYS + ["sampler"]].drop_duplicates()
        parts.append(se.merge(samplers, on=CELL_KEYS) if len(samplers) else se.assign(sampler=""))
    return pd.concat(parts, ignore_index=True)


def _label(metric: str) -> str:
    base, _, extractor = metric.partition(" [")
    label = HEADLINE.get(base, (base, True))[0]
    return f"{label} [{extractor}" if extractor else label


def summary_table(df):
    """Mean ± sd over seeds, one row per (dataset, schedule, objective, sampler), one column per metric."""
    h = headline(df)
    if h.empty:
        return h
    stats = over_seeds(h, [*ROW_KEYS, "metric"])
    stats["cell"] = [mean_sd_text(m, sd, n, digits=4) for m, sd, n in zip(stats["mean"], stats["sd"], stats["n"])]
    wide = stats.pivot_table(index=ROW_KEYS, columns="metric", values="cell", aggfunc="first").reset_index()
    wide.columns.name = None
    order = {m: i for i, m in enumerate(HEADLINE)}
    metrics = sorted((c for c in wide.columns if c not in ROW_KEYS), key=lambda m: (order.get(m.partition(" [")[0], 99), m))
    wide = wide[[*ROW_KEYS, *metrics]]
    return wide.rename(columns={m: _label(m) for m in metrics}).fillna("")


def write_summary_tables(df, tables_dir) -> None:
    """tables/summary.md and tables/summary.tex of the study table `df`."""
    tables = Path(tables_dir)
    s = summary_table(df)
    write_text(tables / "summary.md", "# Summary (mean ± std over seeds)\n\n" + to_markdown(s))
    write_text(tables / "summary.tex", to_latex(s, text_columns=len(ROW_KEYS)))
