"""Paper figures of single studies (config `figures:`), each from the study table or from job files.

- `score_fields_figure`: the exact score ∇ₓ log p_σ and the model's s_θ(x, σ) as arrows over the
  density, and a map of their difference, for the naive, one-level and multi-level models (Song &
  Ermon 2019, Fig. 2 and Sec. 3.2.1: estimates are poor where data is scarce; noise fills those
  regions). Reads the score-field .npz files (`scorebench score-field`).
- `score_error_vs_log_density`: the grid's score error per log-density bin (table rows
  `region == "grid_bin"`), the same claim as a number per bin.
- `sampler_samples_figure` and `mode_weights_figure`: plain vs annealed Langevin on a mixture (Song &
  Ermon 2019, Fig. 3: without annealing the samples get the modes but not their weights).
- `sampler_nfe_figure`: sample quality against the number of score evaluations (NFE) for each sampler
  family (annealed Langevin per step ratio, predictor–corrector), oracle and trained score apart
  (Song et al. 2021, Sec. 4.2: PC samplers vs annealed Langevin at equal computation).
- `annealed_animation`: a GIF of the sampler's snapshots moving through the σ levels.

Every figure is written as PNG and PDF (the GIF alone), with labelled axes and a legend; a figure
whose data the study lacks is written with a one-line note (figures._empty), so the workflow's
outputs do not depend on the data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from scorebench.errors import ScorebenchError
from scorebench.figures import _empty, _plt, _save, sample_cell
from scorebench.levels_study import LEVEL_FIGURES, levels_figures
from scorebench.objectives_study import objectives_figure
from scorebench.results import atomic_path

log = logging.getLogger("scorebench")

# Files each `figures:` flag makes (PNG + PDF each; the animation is one GIF). study.py lists the
# workflow's outputs from these names.
FIGURE_NAMES = {
    "score_fields": ("score_fields", "score_error_vs_log_density"),
    "mode_weights": ("sampler_samples", "mode_weights"),
    "sampler_nfe": ("sampler_nfe",),
    "levels": LEVEL_FIGURES,
    "objectives": ("objectives_vs_dim",),
}
ANIMATION_NAME = "annealed_langevin"

AXIS_LABELS = ("x₁ (data units)", "x₂ (data units)")
DENSITY_RANGE = 12.0  # nats below the maximum shown by the density heatmaps
ARROWS_PER_SIDE = 16


# ---------------------------------------------------------------------- small helpers


def levels_to_show(sigmas) -> list[int]:
    """Indices of the σ levels a figure shows for one cell: all of a one- to three-level schedule,
    else the largest, the middle and the smallest (where the model is used far from / near the data)."""
    n = len(sigmas)
    return list(range(n)) if n <= 3 else [0, n // 2, n - 1]


def _fmt_sigma(s: float) -> str:
    return "0" if s == 0 else f"{s:.3g}"


def _first_seed(items, key):
    """Keep, for every key(item) without its seed, the item of the smallest seed."""
    best = {}
    for it in items:
        k, seed = key(it)
        if k not in best or seed < best[k][0]:
            best[k] = (seed, it)
    return [best[k][1] for k in sorted(best)]


def _cell_order(schedule_kind: str, n_levels: int, name: str):
    """Noiseless first, then by number of levels (the story: no noise → one level → many)."""
    return (schedule_kind != "none", n_levels, name)


def load_field(path) -> dict:
    """A score-field .npz as a dict of arrays plus its parsed `meta`."""
    import numpy as np

    try:
        with np.load(path) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ScorebenchError(f"score-field file {path} is unreadable ({exc}); delete it to recompute") from None
    out["meta"] = json.loads(str(out["meta"]))
    return out


# ---------------------------------------------------------------------- score fields


def _grid_image(values, size):
    """(N,) values on the 'ij' grid of evaluation_grid → (size_y, size_x) image for imshow."""
    return values.reshape(size, size).T


def _panel_extent(field) -> list[float]:
    ax, ay = field["axis_x"], field["axis_y"]
    return [float(ax[0]), float(ax[-1]), float(ay[0]), float(ay[-1])]


def _draw_density(ax, field, log_prob):
    """log p_σ as an orange heatmap, each panel scaled to its own range (at most DENSITY_RANGE nats):
    a large σ makes p_σ nearly flat, which a shared scale would paint one colour."""
    size = len(field["axis_x"])
    rel = log_prob - log_prob.max()
    low = max(float(rel.min()), -DENSITY_RANGE)
    return ax.imshow(_grid_image(rel, size), origin="lower", extent=_panel_extent(field), cmap="Oranges",
                     vmin=low, vmax=0, aspect="auto", interpolation="bilinear")  # fmt: skip


def _arrow_subgrid(field):
    size = len(field["axis_x"])
    step = max(1, size // ARROWS_PER_SIDE)
    pts = field["points"].reshape(size, size, 2)[::step, ::step].reshape(-1, 2)
    spacing = float(field["axis_x"][min(step, size - 1)] - field["axis_x"][0])
    return step, pts, spacing


def _draw_arrows(ax, field, score, unit_length: float):
    """Arrows of the score on a sub-grid of about ARROWS_PER_SIDE per side, `unit_length` score units
    drawn as one grid spacing (the same for the exact and the model field of a column, so lengths compare)."""
    import numpy as np

    size = len(field["axis_x"])
    step, pts, spacing = _arrow_subgrid(field)
    vec = score.reshape(size, size, 2)[::step, ::step].reshape(-1, 2).astype(np.float64)
    vec = vec * (spacing / unit_length if unit_length > 0 else 0.0)
    ax.quiver(pts[:, 0], pts[:, 1], vec[:, 0], vec[:, 1], angles="xy", scale_units="xy", scale=1, pivot="mid",
              color="#1f3b73", width=0.005, headwidth=3.5, headlength=4)  # fmt: skip


def _arrow_unit(field, true_score) -> float:
    """Score magnitude drawn as 1.2 grid spacings: the largest exact score on the arrow sub-grid."""
    import numpy as np

    size = len(field["axis_x"])
    step = _arrow_subgrid(field)[0]
    vec = true_score.reshape(size, size, 2)[::step, ::step].reshape(-1, 2).astype(np.float64)
    return float(np.linalg.norm(vec, axis=1).max()) / 1.2


def relative_error_map(model_score, true_score):
    """Per-point ‖s_θ − ∇log p_σ‖² divided by the grid mean of ‖∇log p_σ‖²: a scale-free map whose
    grid mean is the table's relative score error on the grid (comparable across σ)."""
    import numpy as np

    err = ((model_score.astype(np.float64) - true_score.astype(np.float64)) ** 2).sum(-1)
    scale = (true_score.astype(np.float64) ** 2).sum(-1).mean()
    return err / scale if scale > 0 else err * np.nan


def score_fields_figure(field_files, out_dir: Path, name: str = "score_fields", max_columns: int = 8) -> None:
    """Exact vs estimated score fields and the error map per cell and shown σ (first seed).

    Columns: one per (cell, σ level) with the noiseless cell first; rows per dataset: the exact
    ∇log p_σ, the model's s_θ(x, σ) (arrows: direction only, over the density p_σ, darker = denser),
    and log₁₀ of the relative squared error (colour scale shared by every panel, white contours:
    the data density p_0).
    """
    import numpy as np

    plt, _ = _plt()
    fields = [load_field(p) for p in field_files]
    fields = _first_seed(fields, lambda f: ((f["meta"]["dataset"], f["meta"]["schedule"], f["meta"]["objective"]),
                                           f["meta"]["seed"]))  # fmt: skip
    if not fields:
        return _empty(out_dir, name, "no score-field files (needs 2-D toy cells)")
    by_dataset: dict = {}
    for f in fields:
        by_dataset.setdefault(f["meta"]["dataset"], []).append(f)
    datasets = sorted(by_dataset)
    panels = {}
    for ds in datasets:
        cells = sorted(by_dataset[ds], key=lambda f: _cell_order(f["meta"]["schedule_kind"], len(f["sigmas"]),
                                                                  f["meta"]["schedule"] + f["meta"]["objective"]))  # fmt: skip
        cols = [(f, i) for f in cells for i in levels_to_show(f["sigmas"])]
        if len(cols) > max_columns:
            log.warning("score fields of %s: showing %d of %d panels", ds, max_columns, len(cols))
        panels[ds] = cols[:max_columns]
    errors = {(ds, j): np.log10(np.maximum(relative_error_map(f["model_score"][i], f["true_score"][i]), 1e-12))
              for ds in datasets for j, (f, i) in enumerate(panels[ds])}  # fmt: skip
    allv = np.concatenate([e.ravel() for e in errors.values()])
    vmin, vmax = np.floor(np.percentile(allv, 1)), np.ceil(np.percentile(allv, 99.5))
    ncols = max(len(c) for c in panels.values())
    nrows = 3 * len(datasets)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols + 1.2, 3.0 * nrows), squeeze=False,
                             constrained_layout=True)  # fmt: skip
    row_names = ["exact score ∇ₓ log p_σ", "model score s_θ(x, σ)", "log₁₀ relative error"]
    err_im = None
    for b, ds in enumerate(datasets):
        for j in range(ncols):
            for r in range(3):
                ax = axes[3 * b + r, j]
                if j >= len(panels[ds]):
                    ax.axis("off")
                    continue
                f, i = panels[ds][j]
                m = f["meta"]
                size = len(f["axis_x"])
                if r < 2:
                    _draw_density(ax, f, f["log_prob"][i])
                    unit = _arrow_unit(f, f["true_score"][i])
                    _draw_arrows(ax, f, f["true_score"][i] if r == 0 else f["model_score"][i], unit)
                    if r == 0:
                        ax.text(0.02, 0.02, f"arrow of 1 spacing = ‖score‖ {unit:.3g}", transform=ax.transAxes,
                                fontsize=7, color="#1f3b73", bbox={"fc": "white", "alpha": 0.7, "lw": 0})  # fmt: skip
                else:
                    err_im = ax.imshow(_grid_image(errors[(ds, j)], size), origin="lower", extent=_panel_extent(f),
                                       cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")  # fmt: skip
                    lp0 = _grid_image(f["log_prob0"] - f["log_prob0"].max(), size)
                    ax.contour(f["axis_x"], f["axis_y"], lp0, levels=[-8.0, -4.0, -1.0], colors="white",
                               linewidths=0.8, linestyles="solid")  # fmt: skip
                if r == 0:
                    levels = len(f["sigmas"])
                    where = "no noise" if m["schedule_kind"] == "none" else f"level {i + 1}/{levels}"
                    ax.set_title(f"{m['schedule']} / {m['objective']}\nσ = {_fmt_sigma(f['sigmas'][i])} ({where})",
                                 fontsize=9)  # fmt: skip
                ax.set_xlabel(AXIS_LABELS[0] if r == 2 else "")
                ax.set_ylabel(f"{ds}: {row_names[r]}\n{AXIS_LABELS[1]}" if j == 0 else "", fontsize=9)
                ax.tick_params(labelsize=7)
                ax.grid(False)
    for b in range(len(datasets)):
        fig.colorbar(err_im, ax=axes[3 * b + 2, :].tolist(), shrink=0.9, pad=0.01, location="right",
                     label="log₁₀ ‖s_θ − ∇log p_σ‖²\n/ grid mean ‖∇log p_σ‖²\n(lower is better)")  # fmt: skip
    fig.suptitle("Score fields: exact vs estimated score (arrows, same length scale per column) over the density p_σ "
                 "(orange, darker = denser, per-panel scale);\nbottom: relative squared error, white contours: data "
                 "density p₀ (1, 4 and 8 nats below its maximum)", fontsize=11)  # fmt: skip
    _save(fig, out_dir, name)


def shown_grid_rows(df):
    """Grid-bin score-error rows at the σ levels the figures show (levels_to_show per cell)."""
    d = df[(df["region"] == "grid_bin") & df["metric"].isin(["score_error", "score_error_rel"])]
    keep = []
    for _, rows in d.groupby(["dataset", "schedule", "objective"]):
        sig = sorted(rows["sigma"].unique(), reverse=True)
        shown = [sig[i] for i in levels_to_show(sig)]
        keep.append(rows[rows["sigma"].isin(shown)])
    if not keep:
        return d.iloc[0:0]
    import pandas as pd

    return pd.concat(keep)


def score_error_vs_log_density(df, out_dir: Path, name: str = "score_error_vs_log_density") -> None:
    """Score error per bin of the data log-density log p₀ on the uniform grid, one line per cell and
    shown σ (absolute and relative error; bands ± sd over seeds)."""
    plt, sns = _plt()
    d = shown_grid_rows(df)
    if d.empty:
        return _empty(out_dir, name, "no grid score-error rows (needs 2-D toy cells)")
    d = d.copy()
    d["log_p0"] = 0.5 * (d["bin_low"] + d["bin_high"])
    d["cell, σ"] = d["schedule"] + " / " + d["objective"] + ", σ = " + d["sigma"].map(_fmt_sigma)
    grid = df[df["region"] == "grid"]
    n_levels = grid.groupby(["schedule", "objective"])["sigma"].nunique().to_dict()
    kind_of = grid.groupby("schedule")["schedule_kind"].first().to_dict() if "schedule_kind" in grid else {}
    keys = d.drop_duplicates("cell, σ").set_index("cell, σ")[["schedule", "objective", "sigma"]]
    order = sorted(keys.index, key=lambda lab: (
        _cell_order(kind_of.get(keys.at[lab, "schedule"], ""), n_levels.get(tuple(keys.loc[lab, ["schedule", "objective"]]), 1),
                    keys.at[lab, "schedule"] + keys.at[lab, "objective"]), -keys.at[lab, "sigma"]))  # fmt: skip
    datasets = sorted(d["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), 2, figsize=(12, 4.2 * len(datasets)), squeeze=False)
    ylabels = {
        "score_error": "score error in the bin\nE‖s_θ − ∇log p_σ‖²\n(lower is better)",
        "score_error_rel": "relative score error in the bin\nE‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖²\n(lower is better)",
    }
    for b, ds in enumerate(datasets):
        for c, metric in enumerate(["score_error", "score_error_rel"]):
            ax = axes[b, c]
            rows = d[(d["dataset"] == ds) & (d["metric"] == metric)]
            sns.lineplot(data=rows, x="log_p0", y="value", hue="cell, σ", hue_order=[o for o in order if o in set(rows["cell, σ"])],
                         marker="o", errorbar="sd", ax=ax)  # fmt: skip
            ax.set_yscale("log")
            ax.set_xlabel("data log-density log p₀(x) of the grid points (bin midpoint, nats)")
            ax.set_ylabel(ylabels[metric])
            ax.set_title(f"{ds}: {'absolute' if c == 0 else 'relative'} error (← low density | high density →)",
                         fontsize=10)  # fmt: skip
            ax.legend(fontsize=7, title="schedule / objective, σ", title_fontsize=7)
    fig.suptitle("Score error against data density (uniform grid over the data box; bands: ± sd over seeds)", y=1.02)
    fig.tight_layout()
    _save(fig, out_dir, name)


# ---------------------------------------------------------------------- plain vs annealed Langevin


def _mixture_log_density(mixture: dict, xs, ys):
    """log p_0 of an isotropic Gaussian mixture (means, stds, weights) on the grid xs × ys, (len(ys), len(xs))."""
    import numpy as np

    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx, gy], -1)[..., None, :]  # (Y, X, 1, 2)
    means = np.asarray(mixture["means"], dtype=np.float64)
    var = np.asarray(mixture["stds"], dtype=np.float64) ** 2
    w = np.asarray(mixture["weights"], dtype=np.float64)
    logc = np.log(w) - np.log(2 * np.pi * var) - ((pts - means) ** 2).sum(-1) / (2 * var)
    top = logc.max(-1, keepdims=True)
    return (top + np.log(np.exp(logc - top).sum(-1, keepdims=True)))[..., 0]


def _view(mixture: dict, margin: float = 3.5):
    import numpy as np

    means = np.asarray(mixture["means"], dtype=np.float64)
    pad = margin * max(mixture["stds"])
    return means.min(0) - pad, means.max(0) + pad


def _mode_label(mixture: dict, k: int) -> str:
    mu = ", ".join(f"{v:g}" for v in mixture["means"][k])
    return f"mode {k} at ({mu}), true w = {mixture['weights'][k]:.2g}"


def mode_weight_rows(df, mixtures: dict):
    """Sample-metric rows of the mixture datasets: fraction of samples per mode and off-mode."""
    d = df[(df["sampler"] != "") & df["dataset"].isin(list(mixtures))]
    return d[d["metric"].str.fullmatch(r"mode_weight_\d+") | (d["metric"] == "mode_off_fraction")]


def sampler_samples_figure(sample_files, df, mixtures: dict, out_dir: Path, name: str = "sampler_samples") -> None:
    """Samples of each sampler (columns) for each mixture cell (rows), first seed, over the true
    density; titles give the heavy-mode fraction from the table."""
    import numpy as np

    plt, _ = _plt()
    files = [Path(p) for p in sample_files if sample_cell(Path(p))[0] in mixtures]
    files = _first_seed(files, lambda p: ((sample_cell(p)[:3] + (sample_cell(p)[4],)), sample_cell(p)[3]))
    if not files:
        return _empty(out_dir, name, "no samples of a Gaussian-mixture dataset")
    rows_keys = sorted({sample_cell(p)[:3] for p in files})
    samplers = sorted({sample_cell(p)[4] for p in files})
    kinds = df.drop_duplicates("sampler").set_index("sampler")["sampler_kind"].to_dict() if "sampler_kind" in df else {}
    fig, axes = plt.subplots(len(rows_keys), len(samplers), figsize=(3.6 * len(samplers), 3.4 * len(rows_keys)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for p in files:
        dataset, schedule, objective, seed, sampler = sample_cell(p)
        ax = axes[rows_keys.index((dataset, schedule, objective)), samplers.index(sampler)]
        ax.axis("on")
        mix = mixtures[dataset]
        lo, hi = _view(mix)
        xs, ys = np.linspace(lo[0], hi[0], 150), np.linspace(lo[1], hi[1], 150)
        lp = _mixture_log_density(mix, xs, ys)
        ax.contourf(xs, ys, lp - lp.max(), levels=np.linspace(-DENSITY_RANGE, 0, 13), cmap="Oranges", extend="min")
        with np.load(p) as z:
            x = z["samples"].reshape(len(z["samples"]), -1)
        x = x[np.isfinite(x).all(1)][:2000]
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.45, color="#1f3b73", linewidths=0)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        heavy = int(np.argmax(mix["weights"]))
        sel = df[(df["dataset"] == dataset) & (df["schedule"] == schedule) & (df["objective"] == objective)
                 & (df["seed"] == seed) & (df["sampler"] == sampler) & (df["metric"] == f"mode_weight_{heavy}")]  # fmt: skip
        frac = f"heavy mode: {sel['value'].iloc[0]:.2f} of samples (true {mix['weights'][heavy]:.2f})" if len(sel) else ""
        kind = kinds.get(sampler, "")
        ax.set_title(f"{dataset} · {objective} · {sampler}" + (f" ({kind})" if kind and kind != sampler else "")
                     + f"\n{frac}", fontsize=8.5)  # fmt: skip
        ax.set_xlabel(AXIS_LABELS[0], fontsize=8)
        ax.set_ylabel(AXIS_LABELS[1], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(False)
    fig.suptitle("Samples (dots, first seed) over the true density (orange, darker = denser)", y=1.0)
    fig.tight_layout()
    _save(fig, out_dir, name)


def mode_weights_figure(df, mixtures: dict, out_dir: Path, name: str = "mode_weights") -> None:
    """Fraction of samples per mode (and off-mode) for each objective and sampler, against the true
    weights (dashed lines); bars: mean over seeds, error bars: ± sd."""
    plt, sns = _plt()
    d = mode_weight_rows(df, mixtures)
    if d.empty:
        return _empty(out_dir, name, "no mode-weight rows (needs a Gaussian-mixture dataset)")
    d = d.copy()
    panels = sorted(d.groupby(["dataset", "schedule", "objective"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False, sharey=True)
    palette = sns.color_palette("deep")
    for ax, (ds, sch, obj) in zip(axes[0], panels):
        mix = mixtures[ds]
        k_all = len(mix["weights"])
        labels = {f"mode_weight_{k}": _mode_label(mix, k) for k in range(k_all)}
        labels["mode_off_fraction"] = "off-mode (> 3 std from every mean)"
        rows = d[(d["dataset"] == ds) & (d["schedule"] == sch) & (d["objective"] == obj)].copy()
        rows["component"] = rows["metric"].map(labels)
        hue_order = [labels[m] for m in labels]
        colors = dict(zip(hue_order, palette))
        sns.barplot(data=rows, x="sampler", y="value", hue="component", hue_order=hue_order, palette=colors,
                    order=sorted(rows["sampler"].unique()), errorbar="sd", ax=ax)  # fmt: skip
        for k in range(k_all):
            ax.axhline(mix["weights"][k], color=colors[labels[f"mode_weight_{k}"]], ls="--", lw=1.2)
        ax.set_title(f"{ds} · {sch} · {obj}", fontsize=10)
        ax.set_xlabel("sampler")
        ax.set_ylabel("fraction of samples (dashed: true weight)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Mode weights: plain vs annealed Langevin (bars: mean over seeds, ± sd)", y=1.02)
    fig.tight_layout()
    _save(fig, out_dir, name)


# ---------------------------------------------------------------------- samplers at equal NFE

# Sample-quality metrics the NFE figure and summary compare, in panel order, with axis labels.
NFE_METRICS = {
    "mode_weight_error": "mode-weight TV error\n½ Σ_k |ŵ_k − w_k| (lower is better)",
    "mmd_rbf": "MMD² (RBF kernel) to test data\n(lower is better)",
    "sliced_wasserstein": "sliced Wasserstein-2 to test data\n(data units, lower is better)",
    "fid": "FID to test images\n(feature-net features, lower is better)",
}


def sampler_family(row) -> str:
    """The line a sampler preset belongs to: its kind and the setting that is not its cost (annealed
    Langevin's step ratio or step size, the PC corrector's snr), so that T or corrector steps vary
    along the line."""
    kind = row.get("sampler_kind", "")
    size = row.get("sampler_step_size")
    fixed_size = size is not None and not (isinstance(size, float) and size != size)
    if kind == "annealed_langevin":
        ratio = row.get("sampler_step_ratio", 0.1)
        return f"annealed Langevin, ε = {size:g}" if fixed_size else f"annealed Langevin, step ratio {ratio:g}"
    if kind == "pc":
        return f"predictor–corrector, snr {row.get('sampler_snr', 0.16):g}"
    if kind == "langevin":
        return f"plain Langevin, ε = {size:g}" if fixed_size else "plain Langevin"
    return str(kind or row.get("sampler", "?"))


def sampler_nfe_numbers(df):
    """Per (dataset, schedule, objective, sampler): kind, family, NFE and each NFE_METRICS value as
    mean, sd and n over seeds (a DataFrame; empty when the table has no sampler rows)."""
    import numpy as np
    import pandas as pd

    d = df[(df["sampler"] != "") & df["metric"].isin(["nfe", *NFE_METRICS])]
    keys = ["dataset", "schedule", "objective", "sampler"]
    if d.empty:
        return pd.DataFrame(columns=[*keys, "sampler_kind", "family", "nfe"])
    cols = [c for c in ("sampler_kind", "sampler_step_size", "sampler_step_ratio", "sampler_snr") if c in d]
    meta = d.drop_duplicates(keys).set_index(keys)[cols]
    stats = d.groupby([*keys, "metric"])["value"].agg(["mean", "std", "count"]).unstack("metric")
    flat = stats["mean"].copy()
    for m in NFE_METRICS:
        if m in flat:
            flat[m + "_sd"], flat[m + "_n"] = stats["std"][m], stats["count"][m]
    out = meta.join(flat, how="inner").reset_index()  # aligned on the keys, not on row order
    out["family"] = [sampler_family(r) for r in out.to_dict("records")]
    out["nfe"] = out["nfe"].round().astype(int)
    out["sampler_kind"] = out["sampler_kind"] if "sampler_kind" in out else ""
    return out.sort_values([*keys[:3], "family", "nfe"]).reset_index(drop=True).replace({np.inf: np.nan})


def sampler_nfe_figure(df, out_dir: Path, name: str = "sampler_nfe") -> None:
    """Sample quality against NFE (log scale), one line per sampler family, one row of panels per
    (dataset, schedule, objective) — the oracle rows isolate the sampler, the trained rows add the
    model's error; points: mean over seeds, error bars: ± sd."""
    import numpy as np

    plt, sns = _plt()
    nums = sampler_nfe_numbers(df)
    metrics = [m for m in NFE_METRICS if m in nums and nums[m].notna().any()]
    if nums.empty or not metrics:
        return _empty(out_dir, name, "no sample-quality rows with an nfe (needs samplers)")
    panels = sorted(nums.groupby(["dataset", "schedule", "objective"]).groups,
                    key=lambda k: (k[0], k[1], k[2] != "oracle", k[2]))  # fmt: skip
    families = sorted(nums["family"].unique(), key=lambda f: (not f.startswith("annealed"), f))
    colors = dict(zip(families, sns.color_palette("deep", len(families))))
    markers = dict(zip(families, "osD^v<>ph*"))
    fig, axes = plt.subplots(len(panels), len(metrics), figsize=(5.0 * len(metrics), 3.9 * len(panels)),
                             squeeze=False)  # fmt: skip
    for r, (ds, sch, obj) in enumerate(panels):
        cell = nums[(nums["dataset"] == ds) & (nums["schedule"] == sch) & (nums["objective"] == obj)]
        for c, m in enumerate(metrics):
            ax = axes[r, c]
            for fam in families:
                line = cell[cell["family"] == fam].sort_values("nfe")
                if line.empty:
                    continue
                ls = "--" if fam.startswith("predictor") else "-"
                ax.errorbar(line["nfe"], line[m], yerr=line[m + "_sd"].fillna(0), label=fam, color=colors[fam],
                            marker=markers[fam], ls=ls, capsize=3, ms=5, lw=1.5)  # fmt: skip
            ax.set_xscale("log")
            vals = cell[m].to_numpy(dtype=float)
            if np.isfinite(vals).any() and np.nanmin(vals) > 0 and np.nanmax(vals) / np.nanmin(vals) > 30:
                ax.set_yscale("log")
            ax.set_xlabel("score evaluations per sample (NFE, log scale)")
            ax.set_ylabel(NFE_METRICS[m], fontsize=9)
            what = "exact score" if obj == "oracle" else "trained score"
            ax.set_title(f"{ds} · {sch} · {obj} ({what})", fontsize=10)
            if r == 0 and c == 0:
                ax.legend(fontsize=8, title="sampler family", title_fontsize=8)
    fig.suptitle("Sample quality against computation: annealed Langevin (solid; T steps per level varies along a line) "
                 "vs predictor–corrector (dashed; corrector steps vary)\npoints: mean over seeds, bars: ± sd", y=1.0)  # fmt: skip
    fig.tight_layout()
    _save(fig, out_dir, name)


# ---------------------------------------------------------------------- animation


def annealed_animation(sample_files, out_path, *, samplers, sigmas: dict, mixtures=None, fps: int = 8,
                      dpi: int = 90) -> int:
    """A GIF of the snapshots of the given samplers (first seed of each cell), one panel per cell.

    Frame t shows snapshot t of every panel (a panel with fewer snapshots holds its last one), so
    the GIF has as many frames as the longest snapshot sequence. Axes are fixed to the final
    samples' range (shared by the panels of a dataset), over the true density where it is known;
    the title says how many chains are outside the view (large σ spreads them far).

    Args:
        sample_files: samples .npz files (those with `snapshots` arrays are used).
        out_path: the .gif to write (atomically).
        samplers: names of the samplers to animate.
        sigmas: {(dataset, schedule): [σ_1, ..., σ_L]} to name each frame's level.
        mixtures: {dataset: {"means", "stds", "weights"}} for the density behind the points (optional).
        fps: frames per second.

    Returns:
        The number of frames written.
    """
    import numpy as np
    from PIL import Image

    plt, _ = _plt()
    files = [Path(p) for p in sample_files if Path(p).stem in set(samplers)]
    files = _first_seed(files, lambda p: ((sample_cell(p)[:3] + (sample_cell(p)[4],)), sample_cell(p)[3]))
    clips = []
    for p in files:
        with np.load(p) as z:
            if "snapshots" not in z.files or z["snapshots"].ndim != 3 or z["snapshots"].shape[-1] != 2:
                continue
            clips.append((p, z["snapshots"], z["snapshot_level"], z["snapshot_step"], z["samples"]))
    if not clips:
        raise ScorebenchError(
            "animation: no 2-D samples file with snapshots among " + ", ".join(sorted(set(samplers)))
            + " (set sampling/snapshots > 0)"
        )
    mixtures = mixtures or {}
    n_frames = max(len(c[1]) for c in clips)
    fig, axes = plt.subplots(1, len(clips), figsize=(4.3 * len(clips), 4.6), squeeze=False, dpi=dpi)
    ranges: dict = {}
    for p, _, _, _, final in clips:
        ok = final[np.isfinite(final).all(1)]
        lo, hi = np.percentile(ok, 0.5, axis=0), np.percentile(ok, 99.5, axis=0)
        ds = sample_cell(p)[0]
        old = ranges.get(ds, (lo, hi))
        ranges[ds] = (np.minimum(old[0], lo), np.maximum(old[1], hi))
    views = []
    for p, *_ in clips:
        lo, hi = ranges[sample_cell(p)[0]]
        pad = 0.35 * (hi - lo)
        views.append((lo - pad, hi + pad))
    backgrounds = {}
    for ds, (lo, hi) in ranges.items():
        if ds in mixtures:
            pad = 0.35 * (hi - lo)
            xs, ys = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 120), np.linspace(lo[1] - pad[1], hi[1] + pad[1], 120)
            lp = _mixture_log_density(mixtures[ds], xs, ys)
            backgrounds[ds] = (xs, ys, lp - lp.max())
    frames = []
    for t in range(n_frames):
        for ax, (p, snaps, lev, step, _), (lo, hi) in zip(axes[0], clips, views):
            ax.clear()
            i = min(t, len(snaps) - 1)
            x = snaps[i]
            bg = backgrounds.get(sample_cell(p)[0])
            if bg is not None:
                ax.contourf(*bg, levels=np.linspace(-DENSITY_RANGE, 0, 13), cmap="Oranges", extend="min")
            ax.scatter(x[:, 0], x[:, 1], s=6, alpha=0.7, color="#1f3b73", linewidths=0)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            outside = float(np.mean(~((x >= lo) & (x <= hi)).all(1)))
            dataset, schedule, objective, _, sampler = sample_cell(p)
            sig = sigmas.get((dataset, schedule))
            level = int(lev[i])
            known = sig is not None and 0 <= level < len(sig)
            where = f"level {level + 1}/{len(sig)}, σ = {_fmt_sigma(sig[level])}" if known else f"level {level + 1}"
            ax.set_title(f"{dataset} · {objective} · {sampler}\n{where}, step {int(step[i])}\n"
                         f"{100 * outside:.0f}% of chains outside the view", fontsize=10)  # fmt: skip
            ax.set_xlabel(AXIS_LABELS[0], fontsize=9)
            ax.set_ylabel(AXIS_LABELS[1], fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(False)
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    plt.close(fig)
    with atomic_path(out_path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return n_frames


# ---------------------------------------------------------------------- entry point


def make_study_figures(df, out_dir, *, settings: dict, fields=(), samples=(), mixtures=None, sigmas=None,
                       samplers=()) -> list[Path]:  # fmt: skip
    """Every paper figure the `figures:` settings ask for.

    Args:
        df: the study table (metrics.parquet as a DataFrame).
        out_dir: the figures folder.
        settings: the `figures:` block (score_fields, mode_weights, sampler_nfe, animation, fps).
        fields: score-field .npz files; samples: samples .npz files.
        mixtures: {dataset: {"means", "stds", "weights"}} of the Gaussian-mixture datasets.
        sigmas: {(dataset, schedule): σ list} (animation frame titles).
        samplers: names of the samplers to animate (kind annealed_langevin).

    Returns:
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    makers = {
        "score_fields": (lambda: score_fields_figure(fields, out_dir), lambda: score_error_vs_log_density(df, out_dir)),
        "mode_weights": (
            lambda: sampler_samples_figure(samples, df, mixtures or {}, out_dir),
            lambda: mode_weights_figure(df, mixtures or {}, out_dir),
        ),
        "sampler_nfe": (lambda: sampler_nfe_figure(df, out_dir),),
        "levels": (lambda: levels_figures(df, out_dir),),
        "objectives": (lambda: objectives_figure(df, out_dir),),
    }
    written = []
    for flag, names in FIGURE_NAMES.items():
        if settings.get(flag):
            for make in makers[flag]:
                make()
            written += [out_dir / f"{n}.{e}" for n in names for e in ("png", "pdf")]
    if settings.get("animation"):
        path = out_dir / f"{ANIMATION_NAME}.gif"
        annealed_animation(samples, path, samplers=samplers, sigmas=sigmas or {}, mixtures=mixtures,
                           fps=int(settings.get("fps", 8)))  # fmt: skip
        written.append(path)
    return written
