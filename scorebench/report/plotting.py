"""Plotting helpers every report figure shares: the seaborn theme, PNG + PDF writing, what a figure
with nothing to show does (it raises NothingToDraw: no placeholder is ever written), and the drawing
conventions several figures use.

matplotlib, seaborn and numpy are imported on first use, so the registry (read by study.py and the
Snakefile to know file names) stays cheap to import.
"""

from __future__ import annotations

from pathlib import Path

from scorebench.errors import ScorebenchError
from scorebench.results import atomic_path

AXIS_LABELS = ("x₁ (data units)", "x₂ (data units)")
DENSITY_RANGE = 12.0  # nats below the maximum shown by the density backgrounds
CELL_LABEL = "schedule / objective"


def pyplot():
    """(matplotlib.pyplot, seaborn) with the report's theme, on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.1)
    return plt, sns


def save_figure(fig, out_dir: Path, name: str) -> None:
    """Write `fig` as {name}.png and {name}.pdf (atomically), then close it."""
    for ext in ("png", "pdf"):
        with atomic_path(Path(out_dir) / f"{name}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=130, bbox_inches="tight")
    pyplot()[0].close(fig)


class NothingToDraw(ScorebenchError):
    """A figure whose rows the table lacks: no file is written (never a placeholder)."""

    def __init__(self, name: str, why: str):
        super().__init__(f"figure {name}: nothing to draw ({why})")
        self.name, self.why = name, why


def draw_each(makers: dict, wanted=None) -> list[str]:
    """Run each {name: () -> None} maker; returns the names drawn.

    `wanted` (the names the workflow declared, from the registry) is None to draw what the table
    can fill, skipping a figure with nothing to draw; a figure in `wanted` with nothing to draw
    raises NothingToDraw (the workflow promised its file), and one not in `wanted` is not drawn.
    """
    drawn = []
    for name, make in makers.items():
        if wanted is not None and name not in wanted:
            continue
        try:
            make()
        except NothingToDraw:
            if wanted is not None:
                raise
            continue
        drawn.append(name)
    return drawn


def label_cells(df):
    """A copy of `df` with a CELL_LABEL column, "schedule / objective", for a figure's hue."""
    df = df.copy()
    df[CELL_LABEL] = df["schedule"] + " / " + df["objective"]
    return df


def fmt_sigma(s: float) -> str:
    return "0" if s == 0 else f"{s:.3g}"


def spans_decades(values, ratio: float = 30.0) -> bool:
    """Whether positive values span more than `ratio` (then a log axis shows them all)."""
    import numpy as np

    vals = np.asarray(values, dtype=float)
    return bool(np.isfinite(vals).any() and np.nanmin(vals) > 0 and np.nanmax(vals) / np.nanmin(vals) > ratio)


def mixture_log_density(mixture: dict, xs, ys, sigma: float = 0.0):
    """log p_σ of an isotropic Gaussian mixture (means, stds, weights) on the grid xs × ys, (len(ys), len(xs)):
    the exact density convolved with N(0, σ² I), i.e. each component's variance plus σ² (σ = 0: the data p_0)."""
    import numpy as np

    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx, gy], -1)[..., None, :]  # (Y, X, 1, 2)
    means = np.asarray(mixture["means"], dtype=np.float64)
    var = np.asarray(mixture["stds"], dtype=np.float64) ** 2 + float(sigma) ** 2
    w = np.asarray(mixture["weights"], dtype=np.float64)
    logc = np.log(w) - np.log(2 * np.pi * var) - ((pts - means) ** 2).sum(-1) / (2 * var)
    top = logc.max(-1, keepdims=True)
    return (top + np.log(np.exp(logc - top).sum(-1, keepdims=True)))[..., 0]
