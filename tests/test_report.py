"""The pieces every report figure and section shares (scorebench/report/): the table queries, the
statistics over seeds and the Markdown and LaTeX writers."""

import math

import numpy as np
import pandas as pd
import pytest

from scorebench.report.queries import at_sigma_min, first_metric_present, score_error_rows
from scorebench.report.stats import combined_sd, describe, over_seeds
from scorebench.report.tables import markdown_table, mean_sd_text, to_latex
from test_studies import markdown_rows

T975_2DF = 4.302652729911275  # Student-t 97.5 % quantile with 2 degrees of freedom (3 seeds)


# ---------------------------------------------------------------------- queries and statistics


def score_error_table():
    """Two cells × 2 seeds with 3 σ levels each (σ_min 0.5 and 0.2), plus a grid row that must be ignored."""
    rows = []
    for schedule, sigmas in (("a", (4.0, 1.0, 0.5)), ("b", (2.0, 0.2, 0.8))):
        for seed in (0, 1):
            for sigma in sigmas:
                base = {"dataset": "d", "schedule": schedule, "objective": "o", "seed": seed, "sampler": "", "sigma": sigma}
                rows.append({**base, "metric": "score_error_rel", "region": "all", "value": sigma + seed})
                rows.append({**base, "metric": "score_error_rel", "region": "grid", "value": -1.0})
    return pd.DataFrame(rows)


def test_score_error_at_sigma_min_is_each_cells_smallest_level():
    picked = at_sigma_min(score_error_rows(score_error_table()))
    assert sorted(zip(picked["schedule"], picked["seed"], picked["sigma"])) == [
        ("a", 0, 0.5), ("a", 1, 0.5), ("b", 0, 0.2), ("b", 1, 0.2)]  # fmt: skip
    assert (picked["value"] >= 0).all()  # never a grid row


def test_first_metric_present_follows_the_preference_order():
    rows = pd.DataFrame({"metric": ["mmd_rbf", "fid", "fid"], "value": [1.0, 2.0, 3.0]})
    metric, found = first_metric_present(rows, ["kid_mean", "fid", "mmd_rbf"])
    assert metric == "fid" and list(found["value"]) == [2.0, 3.0]
    assert first_metric_present(rows, ["kid_mean"]) is None


def test_over_seeds_is_mean_sd_and_t_interval_skipping_missing_values():
    rows = pd.DataFrame({"g": ["x"] * 4 + ["y"], "value": [1.0, 2.0, 4.0, math.nan, 7.0]})
    x, y = over_seeds(rows, ["g"]).to_dict("records")
    v = np.array([1.0, 2.0, 4.0])
    half = T975_2DF * v.std(ddof=1) / math.sqrt(3)
    assert (x["mean"], x["sd"], x["n"]) == (pytest.approx(v.mean()), pytest.approx(v.std(ddof=1)), 3)
    assert (x["lo"], x["hi"]) == (pytest.approx(v.mean() - half), pytest.approx(v.mean() + half))
    assert y["n"] == 1 and math.isnan(y["sd"]) and math.isnan(y["lo"])
    assert describe([]).n == 0 and math.isnan(describe([]).mean)
    assert describe([1.0, 2.0, 4.0, math.nan]) == tuple(x[k] for k in ("mean", "sd", "n", "lo", "hi"))


def test_combined_sd_counts_a_single_seed_as_zero():
    assert combined_sd(0.3, 0.4) == pytest.approx(0.5)
    assert combined_sd(0.3, math.nan) == pytest.approx(0.3)


# ---------------------------------------------------------------------- tables


def test_mean_sd_text():
    assert mean_sd_text(0.123456, 0.01234, 3) == "0.123 ± 0.012"
    assert mean_sd_text(0.123456, 0.01234, 1) == "0.123"
    assert mean_sd_text(1234.5678, 12.0, 2, digits=4) == "1235 ± 12"
    assert mean_sd_text(math.nan) == "n/a"


def test_markdown_keeps_cells_as_written():
    text = markdown_table(["metric", "value"], [["a_b", "1.50"], ["c", "1e-05 ± 2e-06"]])
    rows = markdown_rows(text, "metric")
    assert rows == [{"metric": "a_b", "value": "1.50"}, {"metric": "c", "value": "1e-05 ± 2e-06"}]
    assert text.endswith("\n") and text.count("\n") == 4


def test_latex_escapes_and_writes_symbols_as_math():
    df = pd.DataFrame({"dataset": ["a_b"], "s": ["x"], "o": ["y"], "sampler": ["z"], "MMD² (σ_min)": ["1 ± 0.1"]})
    tex = to_latex(df)
    assert r"\begin{tabular}{llllr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"a\_b" in tex and r"MMD$^2$ ($\sigma$\_min)" in tex and r"1 $\pm$ 0.1 \\" in tex
