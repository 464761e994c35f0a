"""The report's statistics (scorebench/report/stats.py), checked by simulation: the 95 % t-interval over
3–5 seeds covers a known mean 95 % of the time, Holm's correction resolves a planted difference and keeps
the family-wise rate of false claims near 5 % over simulated nulls, and the Claims text says "better"
only for a resolved claim."""

import math

import numpy as np
import pandas as pd
import pytest

from scorebench.report.stats import ALPHA, claims, claims_markdown, compare, holm, over_seeds


def test_t_interval_covers_the_mean_95_percent_of_2000_studies():
    rng = np.random.default_rng(20261202)
    mu, sd, studies = 3.0, 2.0, 2000
    n_seeds = rng.integers(3, 6, size=studies)  # 3, 4 or 5 seeds per study
    rows = pd.DataFrame({"study": np.repeat(np.arange(studies), n_seeds),
                         "value": rng.normal(mu, sd, size=int(n_seeds.sum()))})  # fmt: skip
    ci = over_seeds(rows, ["study"])
    assert (ci["n"].to_numpy() == n_seeds).all()
    covered = ((ci["lo"] <= mu) & (mu <= ci["hi"])).mean()
    assert abs(covered - 0.95) <= 0.015, covered
    # a z-interval (1.96 sd/√n) over so few seeds is too short: the t quantile is what gives 95 %
    z_half = 1.96 * ci["sd"] / np.sqrt(ci["n"])
    assert ((ci["mean"] - z_half <= mu) & (mu <= ci["mean"] + z_half)).mean() < 0.925


def test_holm_is_the_step_down_formula():
    # sorted 0.005, 0.01, 0.03, 0.04 → ×4, ×3, ×2, ×1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # clipped at 1
    out = holm([0.01, math.nan, 0.02])  # an untestable comparison is not counted in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_paired_by_seed_when_both_have_the_same_seeds_else_welch():
    rng = np.random.default_rng(1)
    seed_effect = rng.normal(0, 10, size=6)  # large shared seed effect, small true difference
    a, b = seed_effect + 1.0 + rng.normal(0, 0.1, 6), seed_effect + rng.normal(0, 0.1, 6)
    paired = compare(a, b, a_seeds=range(6), b_seeds=range(6))
    assert paired.test == "paired t" and paired.n == 6 and paired.p < 1e-4
    assert paired.lo < 1.0 < paired.hi and paired.diff == pytest.approx(np.mean(a - b))
    welch = compare(a, b, a_seeds=range(6), b_seeds=range(10, 16))  # other seeds: not paired
    assert welch.test == "Welch t" and welch.n == 12 and welch.p > 0.5
    one = compare([1.0], [2.0, 3.0])
    assert math.isnan(one.p) and one.diff == pytest.approx(-1.5)


def test_holm_resolves_a_planted_difference_and_refuses_a_null_one():
    rng = np.random.default_rng(7)
    base = rng.normal(0, 1, 10)
    better = rng.normal(0, 1, 10) - 3.0  # 10 seeds, effect 3 sd (lower is better)
    null = rng.normal(0, 1, 10)
    family = [("A", "B", "planted", compare(better, base), True), ("C", "B", "null", compare(null, base), True)]
    planted, nul = claims(family)
    assert planted.resolved and planted.direction == "a" and planted.p_holm < ALPHA
    assert not nul.resolved and nul.direction == ""
    text = claims_markdown([planted, nul])
    assert "planted: A better than B (Welch t, n = 20" in text
    assert "null: C vs B: not resolved (Welch t, n = 20" in text
    assert sum("better than" in line for line in text.splitlines() if line.startswith("- ")) == 1
    higher = claims([("A", "B", "recall", compare(better, base), False)])[0]  # higher is better: B wins
    assert higher.resolved and higher.direction == "b" and "recall: B better than A" in higher.statement


def test_family_wise_false_claims_stay_near_five_percent_over_simulated_nulls():
    rng = np.random.default_rng(11)
    families, k, seeds = 1000, 5, 5
    any_false = 0
    for _ in range(families):
        fam = []
        for j in range(k):
            a, b = rng.normal(0, 1, seeds), rng.normal(0, 1, seeds)
            fam.append((f"A{j}", f"B{j}", "null", compare(a, b, range(seeds), range(seeds)), True))
        any_false += any(c.resolved for c in claims(fam))
    rate = any_false / families
    assert rate <= 0.065, rate  # Holm: at most α = 5 % (plus simulation noise, sd ≈ 0.7 %)
    unadjusted = 1 - (1 - ALPHA) ** k  # ≈ 23 % without a correction
    assert rate < unadjusted / 2
