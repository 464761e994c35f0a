"""Statistics over seeds, the one place a report computes them: mean, sample sd, n and a 95 %
Student-t interval of the mean per group of rows; "A vs B" comparisons over seeds (paired t-test
when both have the same seeds, Welch's t-test otherwise); Holm's step-down correction over a family
of comparisons; and the `Claim` records a summary section renders as its "Claims". Missing values
(NaN) are skipped, as pandas does.

A sentence that says one cell is better than another is written only from a `Claim` whose
Holm-adjusted p is below ALPHA: a gap between two means, however large it looks, is otherwise
reported as "not resolved", with the test and n that could not resolve it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

CONFIDENCE = 0.95
ALPHA = 0.05  # family-wise error rate of a section's claims (Holm)


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


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log(y) against log(x), y ∝ x^slope (NaN with fewer than 2 distinct x)."""
    from scipy import stats

    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return math.nan
    return float(stats.linregress(*zip(*pts)).slope)


# ---------------------------------------------------------------------- comparisons over seeds


@dataclass(frozen=True)
class Comparison:
    """A − B over seeds: the mean difference, its 95 % t-interval, the two-sided p of "no difference",
    the test ("paired t" over the shared seeds, "Welch t" otherwise) and n (pairs, or n_A + n_B)."""

    diff: float
    lo: float
    hi: float
    p: float
    test: str
    n: int


def _finite(values) -> list:
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def compare(a, b, a_seeds=None, b_seeds=None) -> Comparison:
    """A vs B over seeds: scipy.stats.ttest_rel on the values paired by seed when both have the same
    seeds (given, and ≥ 2 of them), else scipy.stats.ttest_ind with equal_var=False (Welch).

    NaN values (and their seeds) are dropped. With fewer than 2 values (pairs) on a side, or no
    spread at all, p and the interval are NaN: nothing can be resolved.
    """
    import numpy as np
    from scipy import stats

    if a_seeds is not None and b_seeds is not None:
        va = {s: float(v) for s, v in zip(a_seeds, a) if not math.isnan(float(v))}
        vb = {s: float(v) for s, v in zip(b_seeds, b) if not math.isnan(float(v))}
        if set(va) == set(vb) and len(va) == len(list(a_seeds)) == len(list(b_seeds)) and len(va) >= 2:
            seeds = sorted(va)
            x, y = np.array([va[s] for s in seeds]), np.array([vb[s] for s in seeds])
            diff = float((x - y).mean())
            if np.ptp(x - y) == 0:
                return Comparison(diff, math.nan, math.nan, math.nan, "paired t", len(seeds))
            res = stats.ttest_rel(x, y)
            ci = res.confidence_interval(CONFIDENCE)
            return Comparison(diff, float(ci.low), float(ci.high), float(res.pvalue), "paired t", len(seeds))
    x, y = np.array(_finite(a)), np.array(_finite(b))
    n = len(x) + len(y)
    if len(x) == 0 or len(y) == 0:
        return Comparison(math.nan, math.nan, math.nan, math.nan, "Welch t", n)
    diff = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):
        return Comparison(diff, math.nan, math.nan, math.nan, "Welch t", n)
    res = stats.ttest_ind(x, y, equal_var=False)
    ci = res.confidence_interval(CONFIDENCE)
    return Comparison(diff, float(ci.low), float(ci.high), float(res.pvalue), "Welch t", n)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values of a family of m tests (NaN p: no test, left NaN and not
    counted in m).

    With the finite p sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted value of the k-th smallest
    (k = 1 … m) is  p̃_(k) = min(1, max_{j ≤ k} (m − j + 1) · p_(j)):  multiply by (m − rank + 1),
    take the cumulative maximum, clip at 1. Rejecting every p̃ < α keeps the family-wise error rate
    (the chance of any false claim) at most α, under any dependence between the tests.
    """
    import numpy as np

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out.tolist()
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out.tolist()


@dataclass(frozen=True)
class Claim:
    """One comparison of a section's family: "A better than B" when resolved.

    Args:
        a, b: what is compared (cell labels as the summary names them).
        what: the quantity and where (e.g. "MMD², ring, dsm"); lower_is_better says its direction.
        test: the test's name ("paired t" or "Welch t"); n: pairs, or n_A + n_B.
        diff, lo, hi: mean of A − B and its 95 % interval; p and p_holm: raw and Holm-adjusted p.
        resolved: p_holm < ALPHA; direction: "a" or "b" (which is better) when resolved, else "".
    """

    a: str
    b: str
    what: str
    test: str
    n: int
    diff: float
    lo: float
    hi: float
    p: float
    p_holm: float
    resolved: bool
    direction: str
    lower_is_better: bool = True

    @property
    def statement(self) -> str:
        """The claim as a sentence: "A better than B" only when resolved."""
        detail = f"{self.test}, n = {self.n}, Δ = {_g(self.diff)} [{_g(self.lo)}, {_g(self.hi)}], " \
                 f"p = {_g(self.p)}, Holm p = {_g(self.p_holm)}"  # fmt: skip
        if self.resolved:
            better, worse = (self.a, self.b) if self.direction == "a" else (self.b, self.a)
            return f"{self.what}: {better} better than {worse} ({detail})"
        return f"{self.what}: {self.a} vs {self.b}: not resolved ({detail})"


def _g(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.3g}"


def claims(family, alpha: float = ALPHA) -> list[Claim]:
    """Claims of one Holm family: `family` is a list of (a, b, what, Comparison, lower_is_better);
    the p-values are Holm-adjusted together, and a claim is resolved when its adjusted p < alpha."""
    adjusted = holm([c.p for _, _, _, c, _ in family])
    out = []
    for (a, b, what, c, lower), ph in zip(family, adjusted):
        resolved = not math.isnan(ph) and ph < alpha and c.diff != 0
        a_better = (c.diff < 0) if lower else (c.diff > 0)
        out.append(Claim(a, b, what, c.test, c.n, c.diff, c.lo, c.hi, c.p, ph, resolved,
                         ("a" if a_better else "b") if resolved else "", lower))  # fmt: skip
    return out


def claims_markdown(found: list[Claim], title: str = "Claims") -> str:
    """The "Claims" part of a section: one bullet per claim of the family, resolved ones first."""
    testable = sum(not math.isnan(c.p) for c in found)
    untestable = f", {len(found) - testable} without a test (fewer than 2 seeds, or no spread)" if testable < len(found) else ""
    head = (f"**{title}** (one Holm family of {testable} t-tests over seeds{untestable}; \"A better than B\" only "
            f"when the Holm-adjusted p < {ALPHA:g}; Δ = A − B with its 95 % interval):\n")  # fmt: skip
    if not found:
        return head + "\nNo comparison could be made (fewer than two cells with seeds).\n"
    ordered = sorted(found, key=lambda c: not c.resolved)
    return head + "\n" + "\n".join(f"- {c.statement}." for c in ordered) + "\n"


def t_interval(values) -> tuple[float, float]:
    """The 95 % t-interval of the mean of `values` as (lo, hi): seaborn's `errorbar=` callable, so a
    figure's bands are the same interval the tables print."""
    s = describe(values)
    return (s.lo, s.hi) if s.n > 1 else (s.mean, s.mean)


def seed_values(rows, value: str = "value"):
    """(values, seeds) of one cell's per-seed rows, for `compare` (seeds paired when both sides share them)."""
    r = rows.dropna(subset=[value]).sort_values("seed")
    return r[value].to_numpy(dtype=float), r["seed"].tolist()
