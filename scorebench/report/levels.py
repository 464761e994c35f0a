"""Paper study `levels` (config/studies/lambda_levels*.yaml): sample quality and score error against
the number of σ levels L, one line per loss weighting λ(σ) (NCSN: λ = σ², L = 10; Song & Ermon
2019, Sec. 4.2).

The grid's schedules are presets, so a cell's λ and L are read from its own table columns
(`schedule_weighting`, `schedule_n_levels`) rather than from preset names. Every figure is a query
over the study table: one per metric family (MMD², sliced W2, FID, score error), x = L on a log axis
(with each L's NFE under its tick when the cost differs), hue = λ, 95 % t-interval bands over seeds,
one panel per dataset.

Fair comparisons: the sample metrics of cells at different L are compared only at matched NFE
(within ×NFE_MATCH; rows carry their sampler's NFE), and the score error of different schedules only
at one σ of the study-wide common set (queries.at_common_sigma), never at each cell's own σ_min.
`section` writes the summary's part: n, mean and 95 % CI per cell, and Claims (one Holm family).
"""

from __future__ import annotations

import math
from pathlib import Path

from scorebench.report.plotting import NothingToDraw, draw_each, pyplot, save_figure, spans_decades
from scorebench.report.queries import CELL_KEYS, at_common_sigma, score_error_rows, sigma_text
from scorebench.report.requirements import common_sigmas
from scorebench.report.stats import claims, claims_markdown, compare, over_seeds, seed_values, t_interval
from scorebench.report.tables import markdown_table, mean_ci_text
from scorebench.results import schedule_n_levels

LEVEL_TICKS = (1, 2, 5, 10, 20, 50)
WEIGHTING_LABELS = {"sigma2": "λ(σ) = σ²", "sigma": "λ(σ) = σ", "uniform": "λ(σ) = 1", "power": "λ(σ) = σ^p"}
# figure name -> (table metric, y-axis label, what the summary calls it); lower is better for all four.
FAMILIES = {
    "levels_mmd": ("mmd_rbf", "MMD² to held-out data\n(lower is better)", "MMD²"),
    "levels_sliced_wasserstein": ("sliced_wasserstein", "sliced Wasserstein-2 (data units)\n(lower is better)",
                                  "sliced W2"),
    "levels_fid": ("fid", "FID (lower is better)", "FID"),
    "levels_score_error": ("score_error_rel", "relative score error at {sigma} (common σ; lower is better)\n"
                           "E‖s_θ−∇log p_σ‖² / E‖∇log p_σ‖²",
                           "rel. score error at {sigma}"),
}  # fmt: skip
FIGURES = tuple(FAMILIES)
STATS_KEYS = ["dataset", "metric", "extractor", "objective", "sampler", "weighting", "L"]
NFE_MATCH = 1.1  # two cells' samples are compared only when their NFEs differ by at most this factor
TOY_FIGURES = ("levels_mmd", "levels_sliced_wasserstein")


def check(study) -> str | None:
    """An L axis needs every schedule to fix its L, and at least two values of it."""
    levels = {n: schedule_n_levels(s) for n, s in study.config["schedules"].items()}
    unknown = sorted(n for n, v in levels.items() if v is None)
    if unknown:
        return f"schedule {unknown[0]!r} does not fix its number of levels"
    if len(set(levels.values())) < 2:
        return "needs schedules with at least 2 different numbers of levels"
    return None


def produces(study) -> tuple[str, ...]:
    """The families this config can fill: an axis of L needs two or more L for some dataset of that
    family. MMD² and sliced W2 with such a toy and a sampler, FID with such an image dataset and a
    sampler, the score error with such a dataset and a common σ list."""
    def varies(toy: bool) -> bool:
        levels = {}
        for c in study.cells:
            if study.is_toy(c.dataset) == toy:
                levels.setdefault(c.dataset, set()).add(schedule_n_levels(study.config["schedules"][c.schedule]))
        return any(len(v) >= 2 for v in levels.values())

    out = []
    if study.samplers and varies(True):
        out += list(TOY_FIGURES)
    if study.samplers and varies(False):
        out.append("levels_fid")
    if any(s > 0 for s in common_sigmas(study)) and (varies(True) or varies(False)):
        out.append("levels_score_error")
    return tuple(n for n in FIGURES if n in out)


def weighting_label(name: str) -> str:
    return WEIGHTING_LABELS.get(name, f"λ = {name}")


def _nfe_of(d, sample):
    """Each sample row's NFE: its `sample_nfe` column where the table has it, else the cell's `nfe` row."""
    import numpy as np

    keys = [*CELL_KEYS, "sampler"]
    nfe = d[(d["sampler"] != "") & (d["metric"] == "nfe")].drop_duplicates(keys).set_index(keys)["value"]
    from_rows = sample.set_index(keys).index.map(nfe).to_numpy(dtype=float) if len(sample) else np.array([])
    if "sample_nfe" in sample.columns:
        col = sample["sample_nfe"].to_numpy(dtype=float)
        return np.where(np.isfinite(col), col, from_rows)
    return from_rows


def level_rows(df):
    """One row per (dataset, objective, sampler, λ, L, seed, metric): the sample metrics of each sampler
    (with the NFE it spent) and each cell's relative score error over all evaluation points at ONE σ of
    the common set (the same for every L; `sigma`). Columns: dataset, objective, sampler, weighting, L,
    seed, metric, value, extractor, nfe, sigma."""
    import pandas as pd

    cols = ["dataset", "objective", "sampler", "weighting", "L", "seed", "metric", "value", "extractor", "nfe", "sigma"]
    if "schedule_n_levels" not in df.columns or "schedule_weighting" not in df.columns:
        return pd.DataFrame(columns=cols)
    d = df[df["schedule_n_levels"].notna()]
    sample_metrics = [m for m, *_ in FAMILIES.values() if m != "score_error_rel"]
    sample = d[(d["sampler"] != "") & d["metric"].isin(sample_metrics)].copy()
    sample["nfe"] = _nfe_of(d, sample)
    sample["sigma"] = math.nan
    _, se = at_common_sigma(score_error_rows(d))
    se = se.copy()
    se["nfe"] = math.nan
    out = pd.concat([sample, se], ignore_index=True)
    if out.empty:
        return pd.DataFrame(columns=cols)
    if "extractor" not in out.columns:
        out["extractor"] = ""
    out["extractor"] = out["extractor"].fillna("").astype(str)
    out["weighting"] = out["schedule_weighting"].astype(str)
    out["L"] = out["schedule_n_levels"].astype(int)
    return out[cols].reset_index(drop=True)


def level_stats(rows):
    """n, mean, sd and 95 % t-interval over seeds per (dataset, metric, objective, sampler, λ, L), plus the NFE."""
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=[*STATS_KEYS, "mean", "sd", "n", "lo", "hi", "nfe"])
    stats = over_seeds(rows, STATS_KEYS)[[*STATS_KEYS, "mean", "sd", "n", "lo", "hi"]]
    stats = stats.merge(rows.groupby(STATS_KEYS)["nfe"].mean().reset_index(), on=STATS_KEYS, how="left")
    return stats.sort_values(STATS_KEYS).reset_index(drop=True)


def _hue_order(rows) -> list[str]:
    names = list(dict.fromkeys([*WEIGHTING_LABELS, *sorted(rows["weighting"].unique())]))
    return [weighting_label(w) for w in names if w in set(rows["weighting"])]


def levels_figure(df, out_dir: Path, name: str) -> None:
    """One metric family against L (log axis; each L's NFE under its tick when the NFE differ), hue = λ,
    one panel per dataset (and per objective · sampler); lines: mean over seeds, bands: 95 % t-intervals.
    The score error is read at one common σ, named on the axis."""
    metric, ylabel, _ = FAMILIES[name]
    rows = level_rows(df)
    rows = rows[rows["metric"] == metric].copy()
    if rows.empty:
        raise NothingToDraw(name, f"no {metric} rows with a known number of σ levels" +
                            (" at a common σ" if metric == "score_error_rel" else ""))  # fmt: skip
    sigma = float(rows["sigma"].iloc[0]) if metric == "score_error_rel" else math.nan
    plt, sns = pyplot()
    rows["λ"] = rows["weighting"].map(weighting_label)
    rows["variant"] = rows["objective"] + (" · " + rows["sampler"]).where(rows["sampler"] != "", "")
    panels = sorted(rows.groupby(["dataset", "variant"]).groups)
    order = _hue_order(rows)
    colors = dict(zip(order, sns.color_palette("deep", len(order))))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 4.6 * len(panels)), 4.0), squeeze=False)
    n_seeds = int(rows["seed"].nunique())
    for ax, (ds, variant) in zip(axes[0], panels):
        sub = rows[(rows["dataset"] == ds) & (rows["variant"] == variant)]
        sns.lineplot(data=sub, x="L", y="value", hue="λ", hue_order=order, palette=colors, marker="o",
                     errorbar=t_interval, ax=ax)  # fmt: skip
        ax.set_xscale("log")
        ticks = sorted(set(sub["L"].unique().tolist()))
        ax.set_xticks(ticks)
        nfe = sub.groupby("L")["nfe"].mean()
        if nfe.notna().any() and nfe.nunique() > 1:  # the NFE differ with L: name each under its L
            ax.set_xticklabels([f"{t}\nNFE {nfe.get(t, math.nan):.0f}" for t in ticks], fontsize=7)
        else:
            ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        label = ylabel.format(sigma=sigma_text(sigma))
        extractor = sorted(set(sub["extractor"]) - {""})
        if extractor:
            label = label.replace("FID", f"FID [{', '.join(extractor)} features]")
        if spans_decades(sub["value"]):
            ax.set_yscale("log")
            label = label.replace("(lower", "(log scale; lower")
        matched = nfe.notna().any() and nfe.nunique() == 1
        ax.set_xlabel("number of σ levels L (log scale)" + (f", all at NFE {nfe.iloc[0]:.0f}" if matched else ""))
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(f"{ds} · {variant}", fontsize=10)
        ax.legend(title="weighting", fontsize=8, title_fontsize=8)
    what = FAMILIES[name][2].format(sigma=sigma_text(sigma))
    fig.suptitle(f"{what} against the number of noise levels L, one line per loss weighting λ(σ)\n"
                 f"lines: mean over {n_seeds} seeds, bands: 95% t-interval over seeds", y=1.02)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, out_dir, name)


def figures(inputs) -> list[str]:
    """The figures of FIGURES in inputs.wanted (or every one the table can fill)."""
    return draw_each({n: (lambda n=n: levels_figure(inputs.table, inputs.figures_dir, n)) for n in FIGURES},
                     inputs.wanted)  # fmt: skip


# ---------------------------------------------------------------------- summary section


def nfe_matched(a, b) -> bool:
    """Two cells' sample metrics may be compared: both NFE unknown (score error), or within ×NFE_MATCH."""
    x, y = a.get("nfe", math.nan), b.get("nfe", math.nan)
    if x != x and y != y:
        return True
    return x == x and y == y and max(x, y) <= NFE_MATCH * min(x, y)


def best_cells(stats) -> list[dict]:
    """Per (dataset, metric, objective, sampler): the (λ, L) with the lowest mean and the runner-up among
    the cells at matched NFE with it (None when no other cell is)."""
    out = []
    for key, grp in stats.groupby(["dataset", "metric", "extractor", "objective", "sampler"]):
        ranked = grp.dropna(subset=["mean"]).sort_values(["mean", "L"]).to_dict("records")
        if not ranked:
            continue
        best = ranked[0]
        second = next((r for r in ranked[1:] if nfe_matched(best, r)), None)
        out.append(dict(zip(["dataset", "metric", "extractor", "objective", "sampler"], key), best=best, second=second,
                        gap=second["mean"] - best["mean"] if second else math.nan))  # fmt: skip
    order = {m: i for i, (m, *_) in enumerate(FAMILIES.values())}
    return sorted(out, key=lambda r: (r["dataset"], order.get(r["metric"], 9), r["objective"], r["sampler"]))


def _metric_name(metric: str, extractor: str = "", sigma: float = math.nan) -> str:
    name = next((n for m, _, n in FAMILIES.values() if m == metric), metric).format(sigma=sigma_text(sigma))
    return f"{name} [{extractor}]" if extractor else name


def _cell(r: dict) -> str:
    nfe = r.get("nfe", math.nan)
    return f"{weighting_label(r['weighting'])}, L = {int(r['L'])}" + (f" (NFE {nfe:.0f})" if nfe == nfe else "")


def _fmt_row(r: dict) -> str:
    return f"{mean_ci_text(r)} (n = {int(r['n'])})"


def _weighting_order(w: str):
    names = list(WEIGHTING_LABELS)
    return (names.index(w) if w in names else len(names), w)


def _cell_rows(rows, key: dict, r: dict):
    sel = rows
    for k in ("dataset", "metric", "extractor", "objective", "sampler"):
        sel = sel[sel[k] == key[k]]
    return sel[(sel["weighting"] == r["weighting"]) & (sel["L"] == r["L"])]


def level_family(stats, rows) -> list[tuple]:
    """The section's Holm family, as (a, b, what, Comparison, lower is better): per (dataset, metric,
    objective, sampler) the best cell against the runner-up at matched NFE; per weighting its smallest L
    against its lowest-mean L (when at matched NFE); and per L the lowest weighting against the next."""
    sigma = float(rows.loc[rows["metric"] == "score_error_rel", "sigma"].iloc[0]) \
        if (rows["metric"] == "score_error_rel").any() else math.nan  # fmt: skip
    family = []

    def add(key, a, b):
        what = f"{key['dataset']}, {_metric_name(key['metric'], key['extractor'], sigma)} (`{key['objective']}`" + \
               (f", `{key['sampler']}`)" if key["sampler"] else ")")  # fmt: skip
        va, vb = seed_values(_cell_rows(rows, key, a)), seed_values(_cell_rows(rows, key, b))
        c = compare(va[0], vb[0], va[1], vb[1])
        family.append((_cell(a), _cell(b), what, c, True))

    for b in best_cells(stats):
        if b["second"] is not None:
            add(b, b["best"], b["second"])
    for key, grp in stats.groupby(["dataset", "metric", "extractor", "objective", "sampler"]):
        k = dict(zip(["dataset", "metric", "extractor", "objective", "sampler"], key))
        for w in sorted(grp["weighting"].unique(), key=_weighting_order):
            line = grp[grp["weighting"] == w].sort_values("L").to_dict("records")
            first, lowest = line[0], min(line, key=lambda r: r["mean"])
            if lowest is not first and nfe_matched(first, lowest):
                add(k, lowest, first)
        for L, at in grp.groupby("L"):
            ranked = at.sort_values("mean").to_dict("records")
            if len(ranked) > 1 and nfe_matched(ranked[0], ranked[1]):
                add(k, ranked[0], ranked[1])
    seen, out = set(), []
    for f in family:  # one comparison once, however many rules asked for it
        if (f[0], f[1], f[2]) not in seen:
            seen.add((f[0], f[1], f[2]))
            out.append(f)
    return out


def _grid_table(stats) -> str:
    """Every (dataset, objective, λ, L) with one column per metric: mean [95 % CI] (n)."""
    family = {m: i for i, (m, *_) in enumerate(FAMILIES.values())}
    named = stats.assign(name=[_metric_name(m, e, s) for m, e, s in zip(stats["metric"], stats["extractor"],
                                                                      stats["sigma"])])  # fmt: skip
    metrics = list(dict.fromkeys(named.sort_values("metric", key=lambda s: s.map(family))["name"]))
    grid = []
    for (ds, obj, w, L), grp in sorted(named.groupby(["dataset", "objective", "weighting", "L"]),
                                       key=lambda kv: (kv[0][:2], _weighting_order(kv[0][2]), kv[0][3])):  # fmt: skip
        vals = {r["name"]: _fmt_row(r) for r in grp.to_dict("records")}  # one sampler: one value per metric
        nfe = grp["nfe"].dropna()
        grid.append([ds, obj, weighting_label(w), str(int(L)), f"{nfe.mean():.0f}" if len(nfe) else "—",
                     *[vals.get(m, "—") for m in metrics]])  # fmt: skip
    return markdown_table(["dataset", "objective", "weighting", "L", "NFE", *metrics], grid)


def section(inputs) -> str:
    """The summary's λ × L section: what the figures show, the best cell per dataset and metric, the
    full grid (n, mean, 95 % CI), and Claims (one Holm family); every number is a query over the table."""
    rows = level_rows(inputs.table)
    stats = level_stats(rows)
    sigma = float(rows.loc[rows["metric"] == "score_error_rel", "sigma"].iloc[0]) \
        if (rows["metric"] == "score_error_rel").any() else math.nan  # fmt: skip
    stats["sigma"] = sigma
    drawn = [n for n in FIGURES if (rows["metric"] == FAMILIES[n][0]).any()
             and (inputs.wanted is None or n in inputs.wanted)]  # fmt: skip
    figures_list = ", ".join(f"`figures/{n}.png`" for n in drawn) or "The figures"
    text = ["## Loss weighting λ(σ) × number of noise levels L\n"]
    text.append(
        f"{figures_list} plot each metric family against the number of σ levels L (log axis), one line per loss "
        "weighting λ(σ), one panel per dataset; lines are means over seeds and bands 95 % t-intervals over seeds. "
        "Sample quality is MMD² and sliced Wasserstein-2 to held-out data for the 2-D toys and FID for images, "
        f"compared between cells only at matched NFE (within ×{NFE_MATCH:g}; the NFE is named beside L where it "
        "differs); the score error is the relative error E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖² over all evaluation "
        + (f"points at {sigma_text(sigma)}, one σ of the study-wide common set, the same for every L. "
           if sigma == sigma else "points at a common σ (this table has none: no score-error comparison). ")
        + "Lower is better everywhere.\n"
    )  # fmt: skip
    if stats.empty:
        return "\n".join(text + ["The study table has no rows with a known number of σ levels.\n"])
    nfe = stats.dropna(subset=["nfe"]).groupby(["sampler", "L"])["nfe"].mean()
    for smp in dict.fromkeys(nfe.index.get_level_values(0)):
        cost = ", ".join(f"{v:.0f} at L = {L}" for L, v in nfe[smp].items())
        same = nfe[smp].nunique() == 1
        text.append(f"Sampler `{smp}`: score evaluations per sample (NFE) {cost}" +
                    (" — matched across L.\n" if same else " — not matched across L: only cells within "
                     f"×{NFE_MATCH:g} of each other's NFE are compared.\n"))  # fmt: skip
    best = best_cells(stats)
    found = claims(level_family(stats, rows))
    verdict = {(c.what, c.a, c.b): c for c in found}
    text.append("Best cell per dataset and metric (n, mean and 95 % t-interval over seeds; runner-up: the next "
                "lowest mean at matched NFE; resolved: the Claims below):\n")  # fmt: skip
    table = []
    for b in best:
        what = f"{b['dataset']}, {_metric_name(b['metric'], b['extractor'], sigma)} (`{b['objective']}`" + \
               (f", `{b['sampler']}`)" if b["sampler"] else ")")  # fmt: skip
        c = verdict.get((what, _cell(b["best"]), _cell(b["second"]))) if b["second"] else None
        table.append([b["dataset"], _metric_name(b["metric"], b["extractor"], sigma),
                      b["objective"] + (f" · {b['sampler']}" if b["sampler"] else ""), _cell(b["best"]),
                      _fmt_row(b["best"]), _cell(b["second"]) if b["second"] else "— (none at matched NFE)",
                      _fmt_row(b["second"]) if b["second"] else "—", f"{c.p_holm:.3g}" if c else "—",
                      "yes" if c and c.resolved else "no"])  # fmt: skip
    text.append(markdown_table(["dataset", "metric", "objective · sampler", "best λ, L", "best", "runner-up λ, L",
                                "runner-up", "Holm p", "resolved"], table))  # fmt: skip
    text.append("Every cell (mean [95 % t-interval] (n) over seeds):\n")
    text.append(_grid_table(stats))
    text.append(claims_markdown(found))
    return "\n".join(text)
