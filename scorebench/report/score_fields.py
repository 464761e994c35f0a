"""Paper study `score_fields`: where a score estimate is poor, and what noise changes (Song & Ermon
2019, Fig. 2 and Sec. 3.2.1: estimates are poor where data is scarce; noise fills those regions).

- `score_fields_figure`: the exact score ∇ₓ log p_σ and the model's s_θ(x, σ) as arrows over the
  density, and a map of their difference, for the naive, one-level and multi-level models. Reads the
  score-field .npz files (`scorebench score-field`).
- `score_error_vs_log_density`: the grid's score error per log-density bin (table rows
  `region == "grid_bin"`), the same claim as a number per bin: absolute, and normalised
  (`score_error_norm`: divided by the mean ‖∇log p_σ‖² over the whole grid at that σ, the one
  normalisation of density-split numbers), at each cell's own shown σ levels.
- `section`: the summary's table per cell and shown σ (within a cell: own σ), and Claims (one Holm
  family): the noiseless cell's low- against high-density error, and each noisy cell's low-density
  error against the noiseless one at ONE common σ (different schedules are never compared at their
  own, different σ).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from scorebench.report.job_files import first_seed, load_field
from scorebench.report.plotting import AXIS_LABELS, DENSITY_RANGE, NothingToDraw, draw_each, fmt_sigma, pyplot, save_figure
from scorebench.report.queries import at_common_sigma, own_sigma_rows, score_error_rows, sigma_text
from scorebench.report.requirements import missing_planar_toy
from scorebench.report.stats import claims, claims_markdown, compare, describe, seed_values, t_interval
from scorebench.report.tables import markdown_table, mean_ci_n_text

log = logging.getLogger("scorebench")

FIGURES = ("score_fields", "score_error_vs_log_density")
ARROWS_PER_SIDE = 16


def check(study) -> str | None:
    """Score fields are drawn in the plane: the study needs a 2-D toy."""
    return missing_planar_toy(study)


def levels_to_show(sigmas) -> list[int]:
    """Indices of the σ levels a figure shows for one cell: all of a one- to three-level schedule,
    else the largest, the middle and the smallest (where the model is used far from / near the data)."""
    n = len(sigmas)
    return list(range(n)) if n <= 3 else [0, n // 2, n - 1]


def _cell_order(schedule_kind: str, n_levels: int, name: str):
    """Noiseless first, then by number of levels (the story: no noise → one level → many)."""
    return (schedule_kind != "none", n_levels, name)


# ---------------------------------------------------------------------- score-field panels


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


def _panels_per_dataset(fields, max_columns: int) -> dict:
    """{dataset: [(field, σ index), ...]}: one column per (cell, shown σ level), noiseless cell first."""
    by_dataset: dict = {}
    for f in fields:
        by_dataset.setdefault(f["meta"]["dataset"], []).append(f)
    panels = {}
    for ds in sorted(by_dataset):
        cells = sorted(by_dataset[ds], key=lambda f: _cell_order(f["meta"]["schedule_kind"], len(f["sigmas"]),
                                                                  f["meta"]["schedule"] + f["meta"]["objective"]))  # fmt: skip
        cols = [(f, i) for f in cells for i in levels_to_show(f["sigmas"])]
        if len(cols) > max_columns:
            log.warning("score fields of %s: showing %d of %d panels", ds, max_columns, len(cols))
        panels[ds] = cols[:max_columns]
    return panels


def _draw_field_panel(ax, f, i, row: int, err_image, err_range):
    """Row 0: the exact score, row 1: the model's (arrows over p_σ); row 2: the error map (returns its image)."""
    size = len(f["axis_x"])
    if row < 2:
        _draw_density(ax, f, f["log_prob"][i])
        unit = _arrow_unit(f, f["true_score"][i])
        _draw_arrows(ax, f, f["true_score"][i] if row == 0 else f["model_score"][i], unit)
        if row == 0:
            ax.text(0.02, 0.02, f"arrow of 1 spacing = ‖score‖ {unit:.3g}", transform=ax.transAxes,
                    fontsize=7, color="#1f3b73", bbox={"fc": "white", "alpha": 0.7, "lw": 0})  # fmt: skip
        return None
    im = ax.imshow(_grid_image(err_image, size), origin="lower", extent=_panel_extent(f), cmap="viridis",
                   vmin=err_range[0], vmax=err_range[1], aspect="auto")  # fmt: skip
    lp0 = _grid_image(f["log_prob0"] - f["log_prob0"].max(), size)
    ax.contour(f["axis_x"], f["axis_y"], lp0, levels=[-8.0, -4.0, -1.0], colors="white", linewidths=0.8,
               linestyles="solid")  # fmt: skip
    return im


def score_fields_figure(field_files, out_dir: Path, name: str = "score_fields", max_columns: int = 8) -> None:
    """Exact vs estimated score fields and the error map per cell and shown σ (first seed).

    Columns: one per (cell, σ level) with the noiseless cell first; rows per dataset: the exact
    ∇log p_σ, the model's s_θ(x, σ) (arrows: direction only, over the density p_σ, darker = denser),
    and log₁₀ of the relative squared error (colour scale shared by every panel, white contours:
    the data density p_0).
    """
    import numpy as np

    plt, _ = pyplot()
    fields = [load_field(p) for p in field_files]
    fields = first_seed(fields, lambda f: ((f["meta"]["dataset"], f["meta"]["schedule"], f["meta"]["objective"]),
                                          f["meta"]["seed"]))  # fmt: skip
    if not fields:
        raise NothingToDraw(name, "no score-field files (needs 2-D toy cells)")
    panels = _panels_per_dataset(fields, max_columns)
    datasets = list(panels)
    errors = {(ds, j): np.log10(np.maximum(relative_error_map(f["model_score"][i], f["true_score"][i]), 1e-12))
              for ds in datasets for j, (f, i) in enumerate(panels[ds])}  # fmt: skip
    allv = np.concatenate([e.ravel() for e in errors.values()])
    err_range = (np.floor(np.percentile(allv, 1)), np.ceil(np.percentile(allv, 99.5)))
    ncols = max(len(c) for c in panels.values())
    fig, axes = plt.subplots(3 * len(datasets), ncols, figsize=(3.1 * ncols + 1.2, 9.0 * len(datasets)), squeeze=False,
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
                im = _draw_field_panel(ax, f, i, r, errors[(ds, j)], err_range)
                err_im = im if im is not None else err_im
                if r == 0:
                    where = "no noise" if f["meta"]["schedule_kind"] == "none" else f"level {i + 1}/{len(f['sigmas'])}"
                    ax.set_title(f"{f['meta']['schedule']} / {f['meta']['objective']}\n"
                                 f"σ = {fmt_sigma(f['sigmas'][i])} ({where})", fontsize=9)  # fmt: skip
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
    save_figure(fig, out_dir, name)


# ---------------------------------------------------------------------- score error against log-density


NORM = "score_error_norm"  # a bin's mean error / the grid's mean ‖∇log p_σ‖² at that σ


def shown_grid_rows(df):
    """Grid-bin score-error rows (absolute and normalised) at the own σ levels the figures show
    (levels_to_show per cell)."""
    d = own_sigma_rows(df)
    d = d[(d["region"] == "grid_bin") & d["metric"].isin(["score_error", NORM])]
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
    plt, sns = pyplot()
    d = shown_grid_rows(df)
    if d.empty:
        raise NothingToDraw(name, "no grid score-error rows (needs 2-D toy cells)")
    d = d.copy()
    d["log_p0"] = 0.5 * (d["bin_low"] + d["bin_high"])
    d["cell, σ"] = d["schedule"] + " / " + d["objective"] + ", σ = " + d["sigma"].map(fmt_sigma)
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
        NORM: "score error in the bin / mean ‖∇log p_σ‖²\nover the whole grid at that σ\n(lower is better)",
    }
    for b, ds in enumerate(datasets):
        for c, metric in enumerate(["score_error", NORM]):
            ax = axes[b, c]
            rows = d[(d["dataset"] == ds) & (d["metric"] == metric)]
            sns.lineplot(data=rows, x="log_p0", y="value", hue="cell, σ", hue_order=[o for o in order if o in set(rows["cell, σ"])],
                         marker="o", errorbar=t_interval, ax=ax)  # fmt: skip
            ax.set_yscale("log")
            ax.set_xlabel("data log-density log p₀(x) of the grid points (bin midpoint, nats)")
            ax.set_ylabel(ylabels[metric])
            ax.set_title(f"{ds}: {'absolute' if c == 0 else 'normalised'} error (← low density | high density →)",
                         fontsize=10)  # fmt: skip
            if c == 1:  # one legend per dataset, outside the axes so it hides no line
                ax.legend(fontsize=7, title="schedule / objective, σ", title_fontsize=7, loc="upper left",
                          bbox_to_anchor=(1.02, 1.0))  # fmt: skip
            elif ax.get_legend() is not None:
                ax.get_legend().remove()
    fig.suptitle("Score error against data density at each cell's own σ levels (uniform grid over the data box; "
                 "bands: 95% t-interval over seeds)", y=1.02)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, out_dir, name)


def figures(inputs) -> list[str]:
    return draw_each({
        "score_fields": lambda: score_fields_figure(inputs.fields, inputs.figures_dir),
        "score_error_vs_log_density": lambda: score_error_vs_log_density(inputs.table, inputs.figures_dir),
    }, inputs.wanted)  # fmt: skip


# ---------------------------------------------------------------------- summary section


def score_field_numbers(df) -> list[dict]:
    """Normalised score error on the grid per cell and shown own σ: lowest- and highest-density bin
    (SeedStats over seeds, and the per-seed (values, seeds) for comparisons), and the whole grid's
    relative error, in the order of the figures."""
    d = shown_grid_rows(df)
    d = d[d["metric"] == NORM]
    whole = own_sigma_rows(score_error_rows(df, regions=("grid",)))
    out = []
    for (ds, sch, obj, sigma), rows in d.groupby(["dataset", "schedule", "objective", "sigma"]):
        top = int(rows["bin"].max())
        cell = (df["dataset"] == ds) & (df["schedule"] == sch) & (df["objective"] == obj)
        levels = sorted(own_sigma_rows(df[cell & (df["region"] == "grid")])["sigma"].unique(), reverse=True)
        kind = rows["schedule_kind"].iloc[0] if "schedule_kind" in rows else ""
        w = whole[(whole["dataset"] == ds) & (whole["schedule"] == sch) & (whole["objective"] == obj)
                  & (whole["sigma"] == sigma)]  # fmt: skip
        low, high = rows[rows["bin"] == 0], rows[rows["bin"] == top]
        out.append({
            "dataset": ds, "schedule": sch, "objective": obj, "schedule_kind": kind, "sigma": float(sigma),
            "level": levels.index(sigma) + 1 if sigma in levels else 0, "levels": len(levels), "n_bins": top + 1,
            "low": describe(low["value"]), "high": describe(high["value"]), "grid": describe(w["value"]),
            "low_seeds": seed_values(low), "high_seeds": seed_values(high),
        })  # fmt: skip
    out.sort(key=lambda r: (r["dataset"], r["schedule_kind"] != "none", r["levels"], r["schedule"], r["objective"],
                            -r["sigma"]))  # fmt: skip
    return out


def _text(s) -> str:
    return mean_ci_n_text(s)


def common_low_density(df):
    """(σ, {(dataset, schedule, objective): (values, seeds)}): each cell's normalised error in its
    lowest-density grid bin at ONE σ of the common set shared by every cell (NaN, {} without one)."""
    rows = score_error_rows(df, NORM, regions=("grid_bin",))
    sigma, at = at_common_sigma(rows)
    at = at[at["bin"] == 0]
    return sigma, {k: seed_values(g) for k, g in at.groupby(["dataset", "schedule", "objective"])}


def _findings(nums, df) -> tuple[list[str], list]:
    """Per dataset: the noiseless cell's low- vs high-density error at its own σ, and each noisy cell's
    low-density error against the noiseless one's at one common σ; returns (descriptions, Holm family)."""
    findings, family = [], []
    sigma, common = common_low_density(df)
    for ds in sorted({r["dataset"] for r in nums}):
        mine = [r for r in nums if r["dataset"] == ds]
        naive = [r for r in mine if r["schedule_kind"] == "none"]
        noisy = [r for r in mine if r["schedule_kind"] != "none"]
        for r in naive:
            low, high = r["low"].mean, r["high"].mean
            findings.append(
                f"- {ds}, no noise (`{r['schedule']}` / `{r['objective']}`, σ = {r['sigma']:.3g}): normalised error "
                f"{_text(r['low'])} in the lowest-density bin vs {_text(r['high'])} in the highest ({low / high:.3g}×)."
            )
            (va, sa), (vb, sb) = r["high_seeds"], r["low_seeds"]
            family.append(("the highest-density bin", "the lowest-density bin",
                           f"{ds}, no noise (`{r['schedule']}`), score error at σ = {r['sigma']:.3g}",
                           compare(va, vb, sa, sb), True))  # fmt: skip
        base = list(dict.fromkeys((r["schedule"], r["objective"]) for r in naive))  # a cell once, not per own σ
        for key in dict.fromkeys((r["schedule"], r["objective"]) for r in noisy):  # the figure's order
            cell = [r for r in noisy if (r["schedule"], r["objective"]) == key]
            big, small = max(cell, key=lambda r: r["sigma"]), min(cell, key=lambda r: r["sigma"])
            line = f"- {ds}, `{key[0]}` / `{key[1]}` at its own σ = {big['sigma']:.3g}: lowest-density error {_text(big['low'])}"
            if small is not big:
                line += f"; at its smallest σ = {small['sigma']:.3g}: {_text(small['low'])}"
            findings.append(line + ".")
            for b in base:
                if (ds, *key) in common and (ds, *b) in common:
                    (va, sa), (vb, sb) = common[(ds, *key)], common[(ds, *b)]
                    family.append((f"`{key[0]}`", f"no noise (`{b[0]}`)",
                                   f"{ds}, lowest-density score error at {sigma_text(sigma)} (common)",
                                   compare(va, vb, sa, sb), True))  # fmt: skip
    if any(r["schedule_kind"] == "none" for r in nums) and any(r["schedule_kind"] != "none" for r in nums) \
            and not common:  # fmt: skip
        findings.append("- The table has no common-σ grid rows: noisy and noiseless cells are not compared (their "
                        "own σ differ).")  # fmt: skip
    return findings, family


def section(inputs) -> str:
    nums = score_field_numbers(inputs.table)
    text = ["## Score fields: where the estimate is poor, and what noise changes\n"]
    text.append(
        "`figures/score_fields.png` draws, for each model, the exact score ∇ₓ log p_σ and the model's "
        "s_θ(x, σ) as arrows over the density p_σ, and below them the squared error relative to the grid "
        "mean of ‖∇ₓ log p_σ‖²; `figures/score_error_vs_log_density.png` gives the error per bin of the "
        "data log-density log p₀ on a uniform grid over the data's box (Song & Ermon 2019, Fig. 2 and Sec. 3.2.1). "
        "Per-bin errors are normalised by the mean ‖∇log p_σ‖² over the whole grid at the same σ; a cell's own σ "
        "levels are compared within the cell, and different schedules only at one σ of the common set.\n"
    )
    if not nums:
        return "\n".join(text + ["The study table has no grid score-error rows (no 2-D toy cells).\n"])
    rows = []
    for r in nums:
        ratio = r["low"].mean / r["high"].mean if r["high"].mean > 0 else math.nan
        where = "no noise" if r["schedule_kind"] == "none" else f"{r['level']}/{r['levels']}"
        rows.append([r["dataset"], r["schedule"], r["objective"], f"{r['sigma']:.3g}", where, _text(r["low"]),
                     _text(r["high"]), f"{ratio:.3g}", _text(r["grid"])])  # fmt: skip
    text.append(f"Score error in a bin / mean ‖∇log p_σ‖² over the whole grid at the cell's own σ (mean [95 % "
                f"t-interval] (n) over seeds); bins are {nums[0]['n_bins']} equal-count quantiles of log p₀ (bin 0 = "
                "lowest density); whole grid: relative error E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖²:\n")  # fmt: skip
    text.append(markdown_table(["dataset", "schedule", "objective", "own σ", "level", "lowest-density bin",
                                "highest-density bin", "low / high", "whole grid"], rows))  # fmt: skip
    findings, family = _findings(nums, inputs.table)
    text.append("Findings (descriptions; the verdicts are the Claims):\n")
    text.append("\n".join(findings) + "\n")
    text.append(claims_markdown(claims(family)))
    return "\n".join(text)
