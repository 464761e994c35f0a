"""Statistics over seeds, the one place a report computes them: mean, sample sd, n and a 95 %
Student-t interval of the mean per group of rows, and the comparisons the sections draw verdicts
from. Missing values (NaN) are skipped, as pandas does.

Why one module: every figure and section used to carry its own mean ± sd helper; a verdict that
needs a stronger test (Holm-corrected comparisons, bootstrap intervals) is added here once.
"""

from __future__ import annotations

import math
from typing import NamedTuple

CONFIDENCE = 0.95


class SeedStats(NamedTuple):
    """A quantity over seeds: mean, sample sd (NaN for n < 2), n, and its 95 % t-interval (NaN for n < 2)."""

    mean: float
    sd: float
    n: int
    lo: float
    hi: float


def over_seeds(rows, keys, value: str = "value"):
    """Mean, sd, n, lo and hi of `value` per group of `keys` (a DataFrame with those columns after
    the keys; groups sorted by key)."""
    import numpy as np
    from scipy import stats

    out = rows.groupby(keys)[value].agg(mean="mean", sd="std", n="count").reset_index()
    n = out["n"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * out["sd"].to_numpy(dtype=float) / np.sqrt(n)
    out["lo"], out["hi"] = out["mean"] - half, out["mean"] + half
    return out


def describe(values) -> SeedStats:
    """SeedStats of one list of per-seed values (all NaN, n = 0, when there are none)."""
    import pandas as pd

    v = pd.DataFrame({"group": 0, "value": pd.Series(values, dtype=float)})
    row = over_seeds(v, ["group"]).to_dict("records")
    if not row or row[0]["n"] == 0:
        return SeedStats(math.nan, math.nan, 0, math.nan, math.nan)
    r = row[0]
    return SeedStats(float(r["mean"]), float(r["sd"]), int(r["n"]), float(r["lo"]), float(r["hi"]))


def combined_sd(*sds: float) -> float:
    """√Σ sd² of some cells' seed sds, a single-seed cell (sd NaN) counting 0: two means closer than
    this are a difference the seeds cannot resolve."""
    return math.hypot(*(0.0 if math.isnan(sd) else sd for sd in sds))


def intervals_apart(a, b) -> bool:
    """The 95 % intervals of two means (mappings with n, lo, hi) do not overlap (a conservative 'different')."""
    return a["n"] > 1 and b["n"] > 1 and (a["hi"] < b["lo"] or b["hi"] < a["lo"])


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x), y ∝ x^slope (NaN with fewer than 2 distinct x)."""
    from scipy import stats

    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return math.nan
    return float(stats.linregress(*zip(*pts)).slope)
