"""Queries over the study table that several figures and sections ask: each written once.

The table is tidy (one row per cell × metric × σ level, density bin or sampler; results.py), so a
figure or a number is a selection of rows. These are the selections more than one place needs.

Score-error rows come in two σ sets (column `sigma_set`): "own", the cell's own σ levels, and
"common", the study-wide list evaluation.score_error.common_sigmas, the same for every cell. A
number that compares cells of DIFFERENT schedules reads one σ of the common set (`at_common_sigma`);
`at_sigma_min` (each cell's own smallest σ) is for comparisons within one schedule only. Tables
without the column are read as all "own".
"""

from __future__ import annotations

CELL_KEYS = ["dataset", "schedule", "objective", "seed"]  # one trained (or oracle) network


def score_error_rows(df, metric: str = "score_error_rel", regions=("all",)):
    """Score-error rows of one metric (`score_error` absolute, `score_error_rel` relative) over the
    given evaluation regions ("all" points, "grid", density "bin"s, "grid_bin"s)."""
    return df[(df["metric"] == metric) & df["region"].isin(list(regions))]


def own_sigma_rows(rows):
    """The rows at the cells' own σ levels (all rows of a table without `sigma_set`)."""
    if "sigma_set" not in rows.columns:
        return rows
    return rows[rows["sigma_set"].fillna("own").astype(str) != "common"]


def common_sigma_rows(rows):
    """The rows of the study-wide common σ list (`sigma_set == "common"`; none in an older table)."""
    if "sigma_set" not in rows.columns:
        return rows.iloc[0:0]
    return rows[rows["sigma_set"].astype(str) == "common"]


def at_sigma_min(rows, per=CELL_KEYS):
    """The rows at the smallest own σ of their group (by default their cell): the level a sampler
    ends on and where the model is used nearest the data. Within one schedule only: two schedules'
    σ_min differ, so comparing them across schedules compares two different σ (at_common_sigma)."""
    rows = own_sigma_rows(rows)
    return rows[rows["sigma"] == rows.groupby(per)["sigma"].transform("min")]


def common_sigma(rows, per=CELL_KEYS) -> float:
    """The σ comparisons across cells read: the smallest σ > 0 of the common set that every cell
    (group of `per`) among `rows` has (NaN when the rows have no common σ shared by all)."""
    import math

    common = common_sigma_rows(rows)
    common = common[common["sigma"] > 0]
    if common.empty:
        return math.nan
    cells = common.groupby(per).ngroups
    shared = common.groupby("sigma").apply(lambda g: g.groupby(per).ngroups == cells, include_groups=False)
    shared = sorted(float(s) for s, ok in shared.items() if ok)
    return shared[0] if shared else math.nan


def at_common_sigma(rows, per=CELL_KEYS, sigma: float | None = None):
    """(σ, the rows at it): the common-set rows at one σ shared by every cell (`common_sigma`, or
    the given σ). (NaN, no rows) when the table has no such σ."""
    import math

    s = common_sigma(rows, per) if sigma is None else float(sigma)
    common = common_sigma_rows(rows)
    if math.isnan(s):
        return s, common.iloc[0:0]
    return s, common[(common["sigma"] - s).abs() <= 1e-9 * max(1.0, s)]


def sigma_text(sigma: float) -> str:
    """σ as a label names it: "σ = 1", "σ = 0.05"."""
    return f"σ = {sigma:g}"


def sampler_kinds(df) -> dict:
    """{sampler preset: its kind} (empty when the table has no sampler_kind column)."""
    if "sampler_kind" not in df:
        return {}
    return df.drop_duplicates("sampler").set_index("sampler")["sampler_kind"].to_dict()


def first_metric_present(rows, metrics):
    """(metric, its rows) of the first of `metrics` that `rows` has, or None: a dataset's headline
    sample metric (FID for images, MMD² for toys, ...)."""
    for metric in metrics:
        found = rows[rows["metric"] == metric]
        if len(found):
            return metric, found
    return None
