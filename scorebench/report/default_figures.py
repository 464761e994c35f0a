"""The figures every study gets, each a query over the study's tidy table (plus curves and samples).

Every figure is written as PNG and PDF. A figure whose data the study does not have (say, metric
vs number of σ levels in a study with a single L) is still written, with a one-line note saying
why it is empty, so the workflow's outputs are the same for every study. The registry
(scorebench.report.DEFAULT_FIGURES) names them and their captions.
"""

from __future__ import annotations

import math
from pathlib import Path

from scorebench.report.job_files import sample_cell
from scorebench.report.plotting import CELL_LABEL, empty_figure, label_cells, pyplot, save_figure
from scorebench.report.queries import at_sigma_min, first_metric_present, score_error_rows

SAMPLE_METRICS = {
    "fid": "FID (lower is better)",
    "kid_mean": "KID (lower is better)",
    "mmd_rbf": "MMD² (lower is better)",
    "sliced_wasserstein": "sliced Wasserstein-2 (lower is better)",
    "mode_weight_error": "mode-weight TV error (lower is better)",
}  # in the order a dataset's headline sample metric is chosen


def score_error_vs_sigma(df, out_dir: Path) -> None:
    """Relative score error over all evaluation points against σ, one line per schedule/objective."""
    plt, sns = pyplot()
    d = score_error_rows(df)
    d = d[d["sigma"] > 0]
    if d.empty:
        return empty_figure(out_dir, "score_error_vs_sigma", "no score-error rows with σ > 0")
    d = label_cells(d)
    g = sns.relplot(
        data=d, x="sigma", y="value", hue=CELL_LABEL, col="dataset", kind="line", marker="o",
        errorbar="sd", facet_kws={"sharey": False, "sharex": False}, height=3.2, aspect=1.2, col_wrap=min(3, d["dataset"].nunique()),
    )  # fmt: skip
    g.set(xscale="log", yscale="log")
    g.set_axis_labels("noise level σ", "relative score error\nE‖s_θ−∇log p_σ‖² / E‖∇log p_σ‖²")
    g.figure.suptitle("Score error against σ (lower is better; bands: ± sd over seeds)", y=1.03)
    save_figure(g.figure, out_dir, "score_error_vs_sigma")


def score_error_by_density(df, out_dir: Path) -> None:
    """Absolute score error per density bin at each cell's smallest σ; bin 0 is the lowest density.

    2-D toys use the uniform grid over the data's box ("grid_bin": the low-density plane between
    modes, where the method says a noiseless model is wrong); images use held-out points binned by
    distance to the nearest training image ("bin").
    """
    plt, sns = pyplot()
    d = score_error_rows(df, "score_error", regions=("bin", "grid_bin"))
    if d.empty:
        return empty_figure(out_dir, "score_error_by_density", "no score-error rows")
    has_grid = d.groupby("dataset")["region"].transform(lambda r: (r == "grid_bin").any())
    d = label_cells(at_sigma_min(d[(d["region"] == "grid_bin") | ~has_grid]))
    g = sns.catplot(
        data=d, x="bin", y="value", hue=CELL_LABEL, col="dataset", kind="point", errorbar="sd",
        sharey=False, height=3.2, aspect=1.2, col_wrap=min(3, d["dataset"].nunique()),
    )  # fmt: skip
    g.set(yscale="log")
    g.set_axis_labels("density bin (0 = lowest density)", "score error E‖s_θ−∇log p_σ‖²\nat each cell's smallest σ")
    g.figure.suptitle("Score error by data density (toys: uniform grid; images: held-out points; lower is better)", y=1.03)
    save_figure(g.figure, out_dir, "score_error_by_density")


def sample_quality(df, out_dir: Path) -> None:
    """Headline sample-quality metric of each dataset per cell and sampler (bars: mean ± sd over seeds)."""
    plt, sns = pyplot()
    panels = []
    for ds, sub in df[df["sampler"] != ""].groupby("dataset"):
        found = first_metric_present(sub, SAMPLE_METRICS)
        if found:
            panels.append((ds, found[0], SAMPLE_METRICS[found[0]], label_cells(found[1])))
    if not panels:
        return empty_figure(out_dir, "sample_quality", "no sample-quality rows")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for i, (ax, (ds, metric, label, rows)) in enumerate(zip(axes[0], panels)):
        sns.barplot(data=rows, y=CELL_LABEL, x="value", hue="sampler", errorbar="sd", ax=ax, orient="h")
        ax.set_title(f"{ds}: {metric}")
        ax.set_xlabel(label)
        ax.set_ylabel("")
        if i < len(panels) - 1:
            ax.get_legend().remove()
        else:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), title="sampler")
    fig.suptitle("Sample quality per cell and sampler (bars: mean ± sd over seeds)", y=1.02)
    fig.tight_layout()
    save_figure(fig, out_dir, "sample_quality")


def metric_vs_levels(df, out_dir: Path) -> None:
    """Sample quality and score error against the number of σ levels L, one line per weighting λ."""
    plt, sns = pyplot()
    if "schedule_levels" not in df.columns:
        return empty_figure(out_dir, "metric_vs_levels", "no schedule with a `levels` setting")
    d = df[df["schedule_levels"].notna()].copy()
    if d.empty or d["schedule_levels"].nunique() < 2:
        return empty_figure(out_dir, "metric_vs_levels", "the study varies the number of σ levels in fewer than 2 values")
    d["L"] = d["schedule_levels"].astype(int)
    d["weighting λ"] = d["schedule_weighting"]
    panels = []
    for ds, sub in d.groupby("dataset"):
        found = first_metric_present(sub, SAMPLE_METRICS)
        if found:
            panels.append((ds, SAMPLE_METRICS[found[0]], found[1]))
        se = score_error_rows(sub)
        if len(se):
            panels.append((ds, "relative score error at σ_min (lower is better)", at_sigma_min(se)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (ds, label, rows) in zip(axes[0], panels):
        sns.lineplot(data=rows, x="L", y="value", hue="weighting λ", style="objective", marker="o", errorbar=("ci", 95), ax=ax)
        ax.set_xscale("log")
        ax.set_title(ds)
        ax.set_xlabel("number of σ levels L")
        ax.set_ylabel(label)
    fig.suptitle("Ablation: number of noise levels × weighting (bands: 95% CI over seeds)", y=1.02)
    fig.tight_layout()
    save_figure(fig, out_dir, "metric_vs_levels")


def training_curves(curves, out_dir: Path) -> None:
    """Training loss against step per schedule/objective (lines: mean over seeds)."""
    plt, sns = pyplot()
    if curves is None or curves.empty:
        return empty_figure(out_dir, "training_curves", "no training logs (oracle-only study)")
    c = label_cells(curves)
    c = c[c["loss"].apply(math.isfinite)]
    g = sns.relplot(
        data=c, x="step", y="loss", hue=CELL_LABEL, col="dataset", kind="line", errorbar="sd",
        facet_kws={"sharey": False, "sharex": False}, height=3.2, aspect=1.2, col_wrap=min(3, c["dataset"].nunique()),
    )  # fmt: skip
    g.set_axis_labels("training step", "training loss (weighted, per sample)")
    g.figure.suptitle("Training curves (lines: mean over seeds)", y=1.03)
    save_figure(g.figure, out_dir, "training_curves")


def _image_grid(x, max_images: int = 64):
    """Up to `max_images` images (N, C, H, W) in [0, 1] tiled with 1-pixel gaps: (H', W') or (H', W', C)."""
    import numpy as np

    n = min(max_images, len(x))
    side = int(math.ceil(math.sqrt(n)))
    c, h, w = x.shape[1:]
    canvas = np.ones((side * (h + 1), side * (w + 1), c))
    for k in range(n):
        r, q = divmod(k, side)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = np.clip(np.nan_to_num(x[k]).transpose(1, 2, 0), 0, 1)
    return canvas.squeeze(-1) if c == 1 else canvas


def samples_figure(sample_files, out_dir: Path, max_panels: int = 24) -> None:
    """Samples of every cell (first seed): scatter plots for toys, image grids for image data."""
    import numpy as np

    plt, _ = pyplot()
    files = sorted(Path(p) for p in sample_files)
    files = [f for f in files if sample_cell(f)[3] == min(sample_cell(g)[3] for g in files)][:max_panels]
    if not files:
        return empty_figure(out_dir, "samples", "no samples")
    cols = min(4, len(files))
    rows = math.ceil(len(files) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, f in zip(axes.flat, files):
        with np.load(f) as z:
            x = z["samples"]
        dataset, schedule, objective, _, sampler = sample_cell(f)
        ax.set_title(f"{dataset}\n{schedule} / {objective} / {sampler}", fontsize=8)
        if x.ndim == 2:
            ax.axis("on")
            ok = np.isfinite(x).all(1)
            ax.scatter(x[ok, 0], x[ok, 1], s=2, alpha=0.4)
            ax.set_xlabel("x₁", fontsize=7)
            ax.set_ylabel("x₂", fontsize=7)
            ax.tick_params(labelsize=6)
        else:
            grid = _image_grid(x)
            ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)
    fig.suptitle("Samples (first seed)", y=1.0)
    fig.tight_layout()
    save_figure(fig, out_dir, "samples")


def make_default_figures(df, out_dir, *, curves=None, samples=()) -> None:
    """Every figure of DEFAULT_FIGURES, from the study table `df`, the training curves and samples files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    score_error_vs_sigma(df, out_dir)
    score_error_by_density(df, out_dir)
    sample_quality(df, out_dir)
    metric_vs_levels(df, out_dir)
    training_curves(curves, out_dir)
    samples_figure(samples, out_dir)
