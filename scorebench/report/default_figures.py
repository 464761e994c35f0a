"""The figures every study gets, each a query over the study's tidy table (plus curves and samples).

Every figure is written as PNG and PDF. The registry (scorebench.report.default_figures) says from
the config which of them a study can fill (no metric-vs-L figure for a single L, no sample figures
without samplers, ...); only those are declared and drawn, and a declared figure whose rows the
table lacks is an error (plotting.NothingToDraw), never a placeholder.

A figure that compares cells of different schedules at one noise level reads one σ of the common
set (queries.at_common_sigma) and names it on its axis.
"""

from __future__ import annotations

import math
from pathlib import Path

from scorebench.report.job_files import sample_cell
from scorebench.report.plotting import CELL_LABEL, NothingToDraw, draw_each, label_cells, pyplot, save_figure
from scorebench.report.queries import at_common_sigma, first_metric_present, own_sigma_rows, score_error_rows, sigma_text

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
    d = own_sigma_rows(score_error_rows(df))
    d = d[d["sigma"] > 0]
    if d.empty:
        raise NothingToDraw("score_error_vs_sigma", "no score-error rows with σ > 0")
    d = label_cells(d)
    g = sns.relplot(
        data=d, x="sigma", y="value", hue=CELL_LABEL, col="dataset", kind="line", marker="o",
        errorbar="sd", facet_kws={"sharey": False, "sharex": False}, height=3.2, aspect=1.2, col_wrap=min(3, d["dataset"].nunique()),
    )  # fmt: skip
    g.set(xscale="log", yscale="log")
    g.set_axis_labels("noise level σ", "relative score error\nE‖s_θ−∇log p_σ‖² / E‖∇log p_σ‖²")
    g.figure.suptitle("Score error against σ (lower is better; bands: ± sd over seeds)", y=1.03)
    save_figure(g.figure, out_dir, "score_error_vs_sigma")


NORM_LABEL = "score error / mean ‖∇log p_σ‖² over all points\n({sigma}, common to every cell)"


def score_error_by_density(df, out_dir: Path) -> None:
    """Normalised score error (`score_error_norm`: the bin's mean ‖s_θ − ∇log p_σ‖² divided by the mean
    ‖∇log p_σ‖² over the whole point set at the same σ) per bin of the clean data density, at ONE σ
    of the common set shared by every cell; bin 0 is the lowest density.

    2-D toys use the uniform grid over the data's box ("grid_bin", binned by log p_0: the low-density
    plane between modes) where the table has it, else held-out points binned by log p_0 ("bin");
    images use held-out points binned by distance to the nearest training image ("bin").
    """
    plt, sns = pyplot()
    d = score_error_rows(df, "score_error_norm", regions=("bin", "grid_bin"))
    if d.empty:
        raise NothingToDraw("score_error_by_density", "no score_error_norm rows")
    has_grid = d.groupby("dataset")["region"].transform(lambda r: (r == "grid_bin").any())
    d = d[(d["region"] == "grid_bin") | ~has_grid]
    sigma, d = at_common_sigma(d)
    if d.empty:
        raise NothingToDraw("score_error_by_density", "no common-σ score-error rows shared by every cell")
    d = label_cells(d)
    g = sns.catplot(
        data=d, x="bin", y="value", hue=CELL_LABEL, col="dataset", kind="point", errorbar=("ci", 95),
        sharey=False, height=3.2, aspect=1.3, col_wrap=min(3, d["dataset"].nunique()),
    )  # fmt: skip
    g.set(yscale="log")
    binned = {"log_density_0": "bins of log p₀ over a grid", "log_density": "bins of log p_σ",
              "nearest_distance": "bins of distance to the nearest training image"}
    by = d.groupby("dataset")["bin_by"].first().to_dict() if "bin_by" in d else {}
    for ds, ax in g.axes_dict.items():
        ax.set_title(f"{ds}\n({binned.get(by.get(ds), 'density bins')})", fontsize=9)
    g.set_axis_labels("density bin (0 = lowest density)", NORM_LABEL.format(sigma=sigma_text(sigma)))
    g.figure.subplots_adjust(top=0.74)
    g.figure.suptitle(f"Score error by clean data density at {sigma_text(sigma)} (bars: 95 % CI over seeds; lower is "
                      "better)", y=0.98)  # fmt: skip
    save_figure(g.figure, out_dir, "score_error_by_density")


def sample_quality(df, out_dir: Path) -> None:
    """Headline sample-quality metric of each dataset per cell and sampler (bars: mean and 95 % CI over seeds)."""
    plt, sns = pyplot()
    panels = []
    for ds, sub in df[df["sampler"] != ""].groupby("dataset"):
        found = first_metric_present(sub, SAMPLE_METRICS)
        if found:
            panels.append((ds, found[0], SAMPLE_METRICS[found[0]], label_cells(found[1])))
    if not panels:
        raise NothingToDraw("sample_quality", "no sample-quality rows")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    for i, (ax, (ds, metric, label, rows)) in enumerate(zip(axes[0], panels)):
        sns.barplot(data=rows, y=CELL_LABEL, x="value", hue="sampler", errorbar=("ci", 95), ax=ax, orient="h")
        ax.set_title(f"{ds}: {metric}")
        ax.set_xlabel(label)
        ax.set_ylabel("")
        if i < len(panels) - 1:
            ax.get_legend().remove()
        else:
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), title="sampler")
    fig.suptitle("Sample quality per cell and sampler (bars: mean and 95% CI over seeds)", y=1.02)
    fig.tight_layout()
    save_figure(fig, out_dir, "sample_quality")


def _levels_column(df):
    """Each row's number of σ levels L: `schedule_n_levels` (every kind that fixes L), else `schedule_levels`."""
    for col in ("schedule_n_levels", "schedule_levels"):
        if col in df.columns and df[col].notna().any():
            return df[col]
    return None


def metric_vs_levels(df, out_dir: Path) -> None:
    """Sample quality (per sampler, NFE beside each L) and the relative score error at one common σ
    against the number of σ levels L, one line per weighting λ (bands: 95 % CI over seeds)."""
    plt, sns = pyplot()
    levels = _levels_column(df)
    if levels is None:
        raise NothingToDraw("metric_vs_levels", "no schedule with a known number of levels")
    d = df[levels.notna()].copy()
    d["L"] = levels[levels.notna()].astype(int)
    if d.groupby(["dataset", "objective"])["L"].nunique().max() < 2:
        raise NothingToDraw("metric_vs_levels", "no dataset × objective with 2 or more numbers of σ levels")
    d["weighting λ"] = d["schedule_weighting"] if "schedule_weighting" in d else ""
    panels = []
    for ds, sub in d.groupby("dataset"):
        for smp, rows in sub[sub["sampler"] != ""].groupby("sampler"):
            found = first_metric_present(rows, SAMPLE_METRICS)
            if found and found[1]["L"].nunique() >= 2:
                nfe = rows[rows["metric"] == "nfe"].groupby("L")["value"].mean()
                panels.append((f"{ds} · {smp}", SAMPLE_METRICS[found[0]], found[1], nfe))
        sigma, se = at_common_sigma(score_error_rows(sub))
        if len(se) and se["L"].nunique() >= 2:
            panels.append((ds, f"relative score error at {sigma_text(sigma)}\n(common σ; lower is better)", se, None))
    if not panels:
        raise NothingToDraw("metric_vs_levels", "no sample metric or common-σ score error at 2 or more L")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (title, label, rows, nfe) in zip(axes[0], panels):
        sns.lineplot(data=rows, x="L", y="value", hue="weighting λ", style="objective", marker="o", errorbar=("ci", 95), ax=ax)
        ax.set_xscale("log")
        ticks = sorted(rows["L"].unique())
        ax.set_xticks(ticks)
        if nfe is not None and len(nfe) and nfe.nunique() > 1:  # cost differs with L: say so at each tick
            ax.set_xticklabels([f"{L}\nNFE {nfe.get(L, float('nan')):.0f}" for L in ticks], fontsize=7)
        else:
            ax.set_xticklabels([str(L) for L in ticks])
        ax.minorticks_off()
        ax.set_title(title)
        ax.set_xlabel("number of σ levels L")
        ax.set_ylabel(label)
    fig.suptitle("Ablation: number of noise levels × weighting (bands: 95% CI over seeds)", y=1.02)
    fig.tight_layout()
    save_figure(fig, out_dir, "metric_vs_levels")


def training_curves(curves, out_dir: Path) -> None:
    """Training loss against step per schedule/objective (lines: mean over seeds)."""
    plt, sns = pyplot()
    if curves is None or curves.empty:
        raise NothingToDraw("training_curves", "no training logs (oracle-only study)")
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


def samples_figure(sample_files, out_dir: Path, max_panels: int = 24, real=()) -> None:
    """Samples of every cell (first seed): scatter plots for toys, image grids for image data, each image
    dataset's held-out images (`real`: reference/DATASET/real.npz) in a panel before its samples."""
    import numpy as np

    plt, _ = pyplot()
    files = sorted(Path(p) for p in sample_files)
    if not files:
        raise NothingToDraw("samples", "no samples")
    first_seed = min(sample_cell(f)[3] for f in files)
    files = [f for f in files if sample_cell(f)[3] == first_seed][:max_panels]
    real_of = {Path(p).parent.name: Path(p) for p in real}
    panels = []  # (title, file)
    for f in files:
        dataset, schedule, objective, _, sampler = sample_cell(f)
        if dataset in real_of:
            panels.append((f"{dataset}\nreal (held-out)", real_of.pop(dataset)))
        panels.append((f"{dataset}\n{schedule} / {objective} / {sampler}", f))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, f) in zip(axes.flat, panels):
        with np.load(f) as z:
            x = z["samples"]
        ax.set_title(title, fontsize=8)
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
    fig.suptitle("Samples (first seed); image datasets: held-out images first", y=1.0)
    fig.tight_layout()
    save_figure(fig, out_dir, "samples")


def make_default_figures(df, out_dir, *, curves=None, samples=(), real=(), only=None) -> list[str]:
    """The figures of DEFAULT_FIGURES named in `only` (what the workflow declared: registry.default_figures),
    or, without `only`, every one the table can fill; returns the names drawn. A figure in `only`
    with nothing to draw raises plotting.NothingToDraw."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return draw_each({
        "score_error_vs_sigma": lambda: score_error_vs_sigma(df, out_dir),
        "score_error_by_density": lambda: score_error_by_density(df, out_dir),
        "sample_quality": lambda: sample_quality(df, out_dir),
        "metric_vs_levels": lambda: metric_vs_levels(df, out_dir),
        "training_curves": lambda: training_curves(curves, out_dir),
        "samples": lambda: samples_figure(samples, out_dir, real=real),
    }, None if only is None else set(only))  # fmt: skip
