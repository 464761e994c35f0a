"""Tables of a report as text: number formats (mean [95 % interval], with n) and Markdown and
LaTeX writers, pandas' own (`DataFrame.to_markdown` through tabulate, `Styler.to_latex`)."""

from __future__ import annotations

import math

# Unicode in table cells that LaTeX text mode lacks, as math.
LATEX_SYMBOLS = {"±": r"$\pm$", "σ": r"$\sigma$", "²": r"$^2$", "₂": r"$_2$"}


def mean_ci_text(r) -> str:
    """`mean [lo, hi]` of a mapping with mean, n, lo, hi (the mean alone for one seed; n/a for none)."""
    if r is None or math.isnan(r["mean"]):
        return "n/a"
    if r["n"] < 2:
        return f"{r['mean']:.3g}"
    return f"{r['mean']:.3g} [{r['lo']:.3g}, {r['hi']:.3g}]"


def mean_ci_n_text(r) -> str:
    """`mean [lo, hi] (n = k)`: a seed aggregate as the summaries print it (a mapping with mean, n, lo, hi,
    or a stats.SeedStats); `mean (n = 1)` for one seed, n/a for none."""
    if hasattr(r, "_asdict"):
        r = r._asdict()
    if r is None or r["mean"] is None or math.isnan(r["mean"]):
        return "n/a"
    return f"{mean_ci_text(r)} (n = {int(r['n'])})"


def to_markdown(df) -> str:
    """A DataFrame as a Markdown (pipe) table, cells written as they are (no re-formatting of numbers)."""
    return df.astype(str).to_markdown(index=False, disable_numparse=True) + "\n"


def markdown_table(columns, rows) -> str:
    """Rows (lists of cell texts) under `columns` as a Markdown table."""
    import pandas as pd

    return to_markdown(pd.DataFrame(rows, columns=list(columns)))


def _latex_text(text: str) -> str:
    for symbol, latex in LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def to_latex(df, text_columns: int = 4) -> str:
    """A DataFrame as a booktabs LaTeX tabular: the first `text_columns` columns left-aligned, the rest
    right-aligned; special characters escaped and ±, σ, ², ₂ written as math."""
    styler = df.astype(str).style.hide(axis="index")
    styler = styler.format(escape="latex", formatter=_latex_text).format_index(escape="latex", formatter=_latex_text, axis=1)
    n = len(df.columns)
    align = "l" * min(text_columns, n) + "r" * max(n - text_columns, 0)
    return styler.to_latex(column_format=align, hrules=True)
