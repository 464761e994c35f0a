"""Queries over the study table that several figures and sections ask: each written once.

The table is tidy (one row per cell × metric × σ level, density bin or sampler; results.py), so a
figure or a number is a selection of rows. These are the selections more than one place needs.
"""

from __future__ import annotations

CELL_KEYS = ["dataset", "schedule", "objective", "seed"]  # one trained (or oracle) network


def score_error_rows(df, metric: str = "score_error_rel", regions=("all",)):
    """Score-error rows of one metric (`score_error` absolute, `score_error_rel` relative) over the
    given evaluation regions ("all" points, "grid", density "bin"s, "grid_bin"s)."""
    return df[(df["metric"] == metric) & df["region"].isin(list(regions))]


def at_sigma_min(rows, per=CELL_KEYS):
    """The rows at the smallest σ of their group (by default their cell): the level a sampler ends
    on and where the model is used nearest the data."""
    return rows[rows["sigma"] == rows.groupby(per)["sigma"].transform("min")]


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
