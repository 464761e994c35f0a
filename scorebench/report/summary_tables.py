"""The summary tables every study gets (tables/summary.md and .tex): the headline numbers of each
cell and sampler, mean [95 % t-interval] over seeds with n, toy and image datasets in separate tables
(their metrics share no column).

The score error is a column that compares cells of different schedules, so it is read at one σ of
the study-wide common set (queries.at_common_sigma), named in its header; a table without common-σ
rows (an older table) has no score-error column. Columns that no row of a table fills are dropped.
"""

from __future__ import annotations

from pathlib import Path

from scorebench.data.registry import IMAGE_DATASETS
from scorebench.report.queries import CELL_KEYS, at_common_sigma, score_error_rows, sigma_text
from scorebench.report.stats import over_seeds
from scorebench.report.tables import mean_ci_text, to_latex, to_markdown
from scorebench.results import write_text

SCORE_ERROR = "score_error_rel"
HEADLINE = {
    # metric -> (column label with its unit, scale the values are multiplied by)
    "nfe": ("NFE (score evaluations per sample)", 1.0),
    "fid": ("FID", 1.0),
    "kid_mean": ("KID ×10³", 1e3),
    "precision": ("precision (fraction)", 1.0),
    "recall": ("recall (fraction)", 1.0),
    "mmd_rbf": ("MMD² (RBF kernel)", 1.0),
    "sliced_wasserstein": ("sliced W₂ (data units)", 1.0),
    "mode_weight_error": ("mode-weight TV (fraction)", 1.0),
    "mode_coverage_frac": ("modes covered (fraction of modes)", 1.0),
    SCORE_ERROR: ("rel. score error", 1.0),  # header gets "at σ = …"
}
IMAGE_METRICS = ("fid", "kid_mean", "precision", "recall")
ROW_KEYS = ["dataset", "schedule", "objective", "sampler"]
KINDS = (("toy", "Toy datasets"), ("image", "Image datasets"))


def dataset_types(df) -> dict:
    """{dataset: "image" or "toy"}: by its `dataset_kind` where the table has it, else by whether it
    has image metrics (FID, KID, precision/recall)."""
    out = {}
    for ds, rows in df.groupby("dataset"):
        kinds = set(rows["dataset_kind"].dropna().astype(str)) if "dataset_kind" in rows else set()
        image = bool(kinds & set(IMAGE_DATASETS)) if kinds else rows["metric"].isin(IMAGE_METRICS).any()
        out[ds] = "image" if image else "toy"
    return out


def headline(df):
    """One value per (cell, sampler, metric): sample metrics as they are (scaled as HEADLINE says), and
    each cell's relative score error at the common σ repeated on every sampler row of that cell (it does
    not depend on the sampler). Image metrics carry their feature extractor in the name, so numbers from
    different extractors never share a column. Returns (rows, σ of the score error or NaN)."""
    import pandas as pd

    sample = df[df["metric"].isin([m for m in HEADLINE if m != SCORE_ERROR]) & (df["sampler"] != "")].copy()
    sample["value"] = sample["value"] * sample["metric"].map(lambda m: HEADLINE[m][1])
    if "extractor" in sample.columns:
        has = sample["extractor"].notna() & (sample["extractor"].astype(str) != "")
        sample.loc[has, "metric"] = sample.loc[has, "metric"] + " [" + sample.loc[has, "extractor"].astype(str) + "]"
    parts = [sample]
    sigma, se = at_common_sigma(score_error_rows(df, SCORE_ERROR))
    if len(se):
        se = se.drop(columns=["sampler"])
        samplers = df.loc[df["sampler"] != "", CELL_KEYS + ["sampler"]].drop_duplicates()
        parts.append(se.merge(samplers, on=CELL_KEYS) if len(samplers) else se.assign(sampler=""))
    return pd.concat(parts, ignore_index=True), sigma


def _label(metric: str, sigma: float) -> str:
    base, _, extractor = metric.partition(" [")
    label = HEADLINE.get(base, (base, 1.0))[0]
    if base == SCORE_ERROR:
        label += f" at {sigma_text(sigma)} (common)"
    return f"{label} [{extractor}" if extractor else label


def _cell_text(r) -> str:
    if r["n"] >= 2 and r["sd"] == 0:
        return f"{r['mean']:.4g}"
    return mean_ci_text(r)


def summary_tables(df) -> dict:
    """{"toy": table, "image": table} (only the kinds the study has): per (dataset, schedule, objective,
    sampler) the seeds n and one column per metric, mean [95 % t-interval] over seeds; no empty column."""
    h, sigma = headline(df)
    if h.empty:
        return {}
    types = dataset_types(df)
    stats = over_seeds(h, [*ROW_KEYS, "metric"])
    stats["cell"] = [_cell_text(r) for r in stats.to_dict("records")]
    n = stats.groupby(ROW_KEYS)["n"].max().rename("seeds n").reset_index()
    wide = stats.pivot_table(index=ROW_KEYS, columns="metric", values="cell", aggfunc="first").reset_index()
    wide.columns.name = None
    wide = wide.merge(n, on=ROW_KEYS)
    wide["seeds n"] = wide["seeds n"].astype(int).astype(str)
    order = {m: i for i, m in enumerate(HEADLINE)}
    out = {}
    for kind, _ in KINDS:
        part = wide[wide["dataset"].map(types) == kind]
        if part.empty:
            continue
        metrics = [c for c in part.columns if c not in ROW_KEYS and c != "seeds n" and part[c].notna().any()]
        metrics.sort(key=lambda m: (order.get(m.partition(" [")[0], 99), m))
        part = part[[*ROW_KEYS, "seeds n", *metrics]].rename(columns={m: _label(m, sigma) for m in metrics})
        out[kind] = part.fillna("—").reset_index(drop=True)
    return out


def summary_table(df):
    """Both kinds in one frame (toys first), for callers that want every row; columns are the union."""
    import pandas as pd

    tables = summary_tables(df)
    return pd.concat(tables.values(), ignore_index=True).fillna("—") if tables else pd.DataFrame()


HEADER = ("Mean [95 % t-interval] over seeds (n = seeds; a single value: one seed, or every seed the same). "
          "Lower is better except precision, recall and modes covered. The score error is each cell's relative "
          "error E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖² at one σ of the study-wide common set, the same σ for every "
          "cell, so cells of different schedules are compared at the same noise level.")  # fmt: skip


def write_summary_tables(df, tables_dir) -> None:
    """tables/summary.md and tables/summary.tex of the study table `df`: toys and images apart."""
    tables = Path(tables_dir)
    found = summary_tables(df)
    md = ["# Summary\n", HEADER + "\n"]
    tex = [f"% {HEADER}"]
    for kind, title in KINDS:
        if kind in found:
            md += [f"## {title}\n", to_markdown(found[kind])]
            tex += [f"\\subsection*{{{title}}}", to_latex(found[kind], text_columns=len(ROW_KEYS) + 1)]
    if not found:
        md.append("The study table has no sample-quality or common-σ score-error rows.\n")
    write_text(tables / "summary.md", "\n".join(md))
    write_text(tables / "summary.tex", "\n".join(tex) + "\n")


