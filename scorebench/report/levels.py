"""Paper study `levels` (config/studies/lambda_levels*.yaml): sample quality and score error against
the number of σ levels L, one line per loss weighting λ(σ) (NCSN: λ = σ², L = 10; Song & Ermon
2019, Sec. 4.2).

The grid's schedules are presets, so a cell's λ and L are read from its own table columns
(`schedule_weighting`, `schedule_n_levels`) rather than from preset names. Every figure is a query
over the study table: one per metric family (MMD², sliced W2, FID, score error), x = L on a log axis,
hue = λ, 95 % bootstrap confidence bands over seeds, one panel per dataset. `section` writes the
summary's part: a best-cell table and findings whose verdicts are chosen by comparing the numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

from scorebench.report.plotting import NothingToDraw, pyplot, save_figure, spans_decades
from scorebench.report.queries import CELL_KEYS, at_sigma_min, score_error_rows
from scorebench.report.stats import combined_sd, over_seeds
from scorebench.report.tables import markdown_table, mean_sd_text
from scorebench.results import schedule_n_levels

LEVEL_TICKS = (1, 2, 5, 10, 20, 50)
WEIGHTING_LABELS = {"sigma2": "λ(σ) = σ²", "sigma": "λ(σ) = σ", "uniform": "λ(σ) = 1", "power": "λ(σ) = σ^p"}
# figure name -> (table metric, y-axis label, what the summary calls it); lower is better for all four.
FAMILIES = {
    "levels_mmd": ("mmd_rbf", "MMD² to held-out data\n(lower is better)", "MMD²"),
    "levels_sliced_wasserstein": ("sliced_wasserstein", "sliced Wasserstein-2 (data units)\n(lower is better)",
                                  "sliced W2"),
    "levels_fid": ("fid", "FID (lower is better)", "FID"),
    "levels_score_error": ("score_error_rel", "relative score error at σ_min (lower is better)\n"
                           "E‖s_θ−∇log p_σ‖² / E‖∇log p_σ‖²",
                           "rel. score error at σ_min"),
}  # fmt: skip
FIGURES = tuple(FAMILIES)
STATS_KEYS = ["dataset", "metric", "extractor", "objective", "sampler", "weighting", "L"]


def check(study) -> str | None:
    """An L axis needs every schedule to fix its L, and at least two values of it."""
    levels = {n: schedule_n_levels(s) for n, s in study.config["schedules"].items()}
    unknown = sorted(n for n, v in levels.items() if v is None)
    if unknown:
        return f"schedule {unknown[0]!r} does not fix its number of levels"
    if len(set(levels.values())) < 2:
        return "needs schedules with at least 2 different numbers of levels"
    return None


def weighting_label(name: str) -> str:
    return WEIGHTING_LABELS.get(name, f"λ = {name}")


def level_rows(df):
    """One row per (dataset, objective, sampler, λ, L, seed, metric): the sample metrics of each sampler
    and each cell's relative score error (all evaluation points) at its smallest σ > 0, which every cell of
    the study shares (σ_L of the geometric schedules = σ of the one-level ones). Columns: dataset,
    objective, sampler, weighting, L, seed, metric, value, extractor, nfe."""
    import pandas as pd

    cols = ["dataset", "objective", "sampler", "weighting", "L", "seed", "metric", "value", "extractor", "nfe"]
    if "schedule_n_levels" not in df.columns or "schedule_weighting" not in df.columns:
        return pd.DataFrame(columns=cols)
    d = df[df["schedule_n_levels"].notna()]
    sample_metrics = [m for m, *_ in FAMILIES.values() if m != "score_error_rel"]
    sample = d[(d["sampler"] != "") & d["metric"].isin(sample_metrics)].copy()
    keys = [*CELL_KEYS, "sampler"]
    nfe = d[(d["sampler"] != "") & (d["metric"] == "nfe")].drop_duplicates(keys).set_index(keys)["value"]
    sample["nfe"] = sample.set_index(keys).index.map(nfe).to_numpy() if len(sample) else []
    se = score_error_rows(d)
    se = at_sigma_min(se[se["sigma"] > 0]).copy()
    se["nfe"] = math.nan
    out = pd.concat([sample, se], ignore_index=True)
    if "extractor" not in out.columns:
        out["extractor"] = ""
    out["extractor"] = out["extractor"].fillna("").astype(str)
    out["weighting"] = out["schedule_weighting"].astype(str)
    out["L"] = out["schedule_n_levels"].astype(int)
    return out[cols].reset_index(drop=True)


def level_stats(rows):
    """Mean, sd and n over seeds per (dataset, metric, objective, sampler, λ, L), plus the NFE."""
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=[*STATS_KEYS, "mean", "sd", "n", "nfe"])
    stats = over_seeds(rows, STATS_KEYS)[[*STATS_KEYS, "mean", "sd", "n"]]
    stats = stats.merge(rows.groupby(STATS_KEYS)["nfe"].mean().reset_index(), on=STATS_KEYS, how="left")
    return stats.sort_values(STATS_KEYS).reset_index(drop=True)


def _hue_order(rows) -> list[str]:
    names = list(dict.fromkeys([*WEIGHTING_LABELS, *sorted(rows["weighting"].unique())]))
    return [weighting_label(w) for w in names if w in set(rows["weighting"])]


def levels_figure(df, out_dir: Path, name: str) -> None:
    """One metric family against L (log axis), hue = λ, one panel per dataset (and per objective ·
    sampler when the study has several); lines: mean over seeds, bands: 95 % bootstrap CI over seeds."""
    metric, ylabel, _ = FAMILIES[name]
    rows = level_rows(df)
    rows = rows[rows["metric"] == metric].copy()
    if rows.empty:
        raise NothingToDraw(name, f"no {metric} rows with a known number of σ levels")
    plt, sns = pyplot()
    rows["λ"] = rows["weighting"].map(weighting_label)
    rows["variant"] = rows["objective"] + (" · " + rows["sampler"]).where(rows["sampler"] != "", "")
    panels = sorted(rows.groupby(["dataset", "variant"]).groups)
    order = _hue_order(rows)
    colors = dict(zip(order, sns.color_palette("deep", len(order))))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7.0, 4.6 * len(panels)), 3.8), squeeze=False)
    n_seeds = int(rows["seed"].nunique())
    for ax, (ds, variant) in zip(axes[0], panels):
        sub = rows[(rows["dataset"] == ds) & (rows["variant"] == variant)]
        sns.lineplot(data=sub, x="L", y="value", hue="λ", hue_order=order, palette=colors, marker="o",
                     errorbar=("ci", 95), n_boot=2000, seed=0, ax=ax)  # fmt: skip
        ax.set_xscale("log")
        ticks = sorted(set(LEVEL_TICKS) | set(sub["L"].unique().tolist()))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        label = ylabel
        extractor = sorted(set(sub["extractor"]) - {""})
        if extractor:
            label = label.replace("FID", f"FID [{', '.join(extractor)} features]")
        if spans_decades(sub["value"]):
            ax.set_yscale("log")
            label = label.replace("(lower", "(log scale; lower")
        ax.set_xlabel("number of σ levels L (log scale)")
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(f"{ds} · {variant}", fontsize=10)
        ax.legend(title="weighting", fontsize=8, title_fontsize=8)
    what = FAMILIES[name][2]
    fig.suptitle(f"{what} against the number of noise levels L, one line per loss weighting λ(σ)\n"
                 f"lines: mean over {n_seeds} seeds, bands: 95% bootstrap CI over seeds", y=1.02)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, out_dir, name)


def figures(inputs) -> None:
    """Every figure of FIGURES (a family the table lacks is written as a one-line note)."""
    for name in FIGURES:
        levels_figure(inputs.table, inputs.figures_dir, name)


# ---------------------------------------------------------------------- summary section


def best_cells(stats) -> list[dict]:
    """Per (dataset, metric, objective, sampler): the (λ, L) with the lowest mean and the runner-up.
    `resolved` says whether the gap exceeds the two cells' seed sds combined (√(sd₁² + sd₂²))."""
    out = []
    for key, grp in stats.groupby(["dataset", "metric", "extractor", "objective", "sampler"]):
        ranked = grp.dropna(subset=["mean"]).sort_values(["mean", "L"]).to_dict("records")
        if not ranked:
            continue
        best = ranked[0]
        second = ranked[1] if len(ranked) > 1 else None
        gap = second["mean"] - best["mean"] if second else math.nan
        noise = combined_sd(best["sd"], second["sd"]) if second else math.nan
        out.append(dict(zip(["dataset", "metric", "extractor", "objective", "sampler"], key), best=best, second=second,
                        gap=gap, resolved=bool(second) and gap > noise))  # fmt: skip
    order = {m: i for i, (m, *_) in enumerate(FAMILIES.values())}
    return sorted(out, key=lambda r: (r["dataset"], order.get(r["metric"], 9), r["objective"], r["sampler"]))


def _metric_name(metric: str, extractor: str = "") -> str:
    name = next((n for m, _, n in FAMILIES.values() if m == metric), metric)
    return f"{name} [{extractor}]" if extractor else name


def _cell(r: dict) -> str:
    return f"{weighting_label(r['weighting'])}, L = {int(r['L'])}"


def _fmt_row(r: dict) -> str:
    return mean_sd_text(r["mean"], r["sd"], int(r["n"]))


def _weighting_order(w: str):
    names = list(WEIGHTING_LABELS)
    return (names.index(w) if w in names else len(names), w)


def _lowest_per_level(grp) -> str | None:
    """Which weighting is lowest at each L (a lead within the seeds' combined sd names none)."""
    wins: dict = {}
    for L, at in grp.groupby("L"):
        if at["weighting"].nunique() > 1:
            first, second = at.sort_values("mean").to_dict("records")[:2]
            resolved = second["mean"] - first["mean"] > combined_sd(first["sd"], second["sd"])
            wins.setdefault(first["weighting"] if resolved else "", []).append(int(L))
    if not wins:
        return None
    n_l = sum(len(v) for v in wins.values())
    said = [f"{weighting_label(w)} at {len(ls)} of {n_l} (L = {', '.join(map(str, ls))})"
            for w, ls in sorted(wins.items(), key=lambda kv: (-len(kv[1]), _weighting_order(kv[0]))) if w]  # fmt: skip
    if "" in wins:
        said.append(f"no weighting ahead of the next by more than the seeds' combined sd at L = "
                    f"{', '.join(map(str, wins['']))}")  # fmt: skip
    return "  Lowest weighting per L: " + "; ".join(said) + "."


def _findings(stats) -> list[str]:
    """Per (dataset, metric): each weighting's value at the smallest L against its lowest (a drop larger than
    the two cells' combined seed sd is "more levels help"), then which weighting is lowest at each L."""
    out = []
    order = {m: i for i, (m, *_) in enumerate(FAMILIES.values())}
    groups = stats.groupby(["dataset", "metric", "extractor", "objective", "sampler"])
    for (ds, metric, ext, obj, smp), grp in sorted(groups, key=lambda kv: (kv[0][0], order.get(kv[0][1], 9), kv[0][2:])):
        parts = []
        for w in sorted(grp["weighting"].unique(), key=_weighting_order):
            line = grp[grp["weighting"] == w].sort_values("L").to_dict("records")
            first, last = line[0], line[-1]
            lowest = min(line, key=lambda r: r["mean"])
            head = f"{weighting_label(w)}: {_fmt_row(first)} at L = {int(first['L'])}"
            if lowest is first:
                parts.append(f"{head} is already its lowest (largest L: {_fmt_row(last)} at L = {int(last['L'])})")
                continue
            verdict = ("more levels help" if first["mean"] - lowest["mean"] > combined_sd(first["sd"], lowest["sd"])
                       else "no drop beyond the seeds' spread")  # fmt: skip
            tail = "" if lowest is last else f", then {_fmt_row(last)} at L = {int(last['L'])}"
            parts.append(f"{head} → lowest {_fmt_row(lowest)} at L = {int(lowest['L'])}{tail} ({verdict})")
        what = f"{ds}, {_metric_name(metric, ext)} (`{obj}`" + (f", `{smp}`)" if smp else ")")
        out.append(f"- {what}: " + "; ".join(parts) + ".")
        per_level = _lowest_per_level(grp)
        if per_level:
            out.append(per_level)
    return out


def _headline(best: list[dict], smallest_l: int) -> list[str]:
    """Where the best cells sit: the weightings and L of the best sample-quality and score-error cells."""
    out = []
    for label, unit, mine in (
        ("sample-quality", "dataset × metric pairs", [b for b in best if b["metric"] != "score_error_rel"]),
        ("score-error (σ_min)", "datasets", [b for b in best if b["metric"] == "score_error_rel"]),
    ):
        if not mine:
            continue
        counts: dict = {}
        for b in mine:
            counts[b["best"]["weighting"]] = counts.get(b["best"]["weighting"], 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], _weighting_order(kv[0])))
        ls = sorted({int(b["best"]["L"]) for b in mine})
        never = "" if smallest_l in ls else f"; never the smallest L = {smallest_l}"
        out.append(f"- Best {label} cells ({len(mine)} {unit}): " + ", ".join(f"{weighting_label(w)} in {n}" for w, n
                   in ranked) + f"; at L = {', '.join(map(str, ls))}{never}.")  # fmt: skip
    return out


def _grid_table(stats) -> str:
    """Every (dataset, objective, λ, L) with one column per metric (mean ± sd over seeds)."""
    family = {m: i for i, (m, *_) in enumerate(FAMILIES.values())}
    named = stats.assign(name=[_metric_name(m, e) for m, e in zip(stats["metric"], stats["extractor"])])
    metrics = list(dict.fromkeys(named.sort_values("metric", key=lambda s: s.map(family))["name"]))
    grid = []
    for (ds, obj, w, L), grp in sorted(named.groupby(["dataset", "objective", "weighting", "L"]),
                                       key=lambda kv: (kv[0][:2], _weighting_order(kv[0][2]), kv[0][3])):  # fmt: skip
        vals = {r["name"]: _fmt_row(r) for r in grp.to_dict("records")}  # one sampler: one value per metric
        grid.append([ds, obj, weighting_label(w), str(int(L)), *[vals.get(m, "") for m in metrics]])
    return markdown_table(["dataset", "objective", "weighting", "L", *metrics], grid)


def section(inputs) -> str:
    """The summary's λ × L section: what the figures show, the best cell per dataset and metric, the
    full grid of means, and findings; every number is a query over the table."""
    stats = level_stats(level_rows(inputs.table))
    figures_list = ", ".join(f"`figures/{n}.png`" for n in FIGURES)
    text = ["## Loss weighting λ(σ) × number of noise levels L\n"]
    text.append(
        f"{figures_list} plot each metric family against the number of σ levels L (log axis), one line per loss "
        "weighting λ(σ), one panel per dataset; lines are means over seeds and bands 95 % bootstrap confidence "
        "intervals over seeds. Sample quality is MMD² and sliced Wasserstein-2 to held-out data for the 2-D toys "
        "and FID for images; the score error is the relative error E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖² over all "
        "evaluation points at each cell's smallest σ (σ_min, shared by every L). Lower is better everywhere.\n"
    )
    if stats.empty:
        return "\n".join(text + ["The study table has no rows with a known number of σ levels.\n"])
    nfe = stats.dropna(subset=["nfe"]).groupby(["sampler", "L"])["nfe"].mean()
    for smp in dict.fromkeys(nfe.index.get_level_values(0)):
        cost = ", ".join(f"{v:.0f} at L = {L}" for L, v in nfe[smp].items())
        text.append(f"Sampler `{smp}` runs the same number of steps at every level, so its cost grows with L: score "
                    f"evaluations per sample (NFE) {cost}.\n")  # fmt: skip
    best = best_cells(stats)
    text.append("\n".join(_headline(best, int(stats["L"].min()))) + "\n")
    text.append("Best cell per dataset and metric (mean ± sd over seeds; gap = runner-up mean − best mean; "
                "resolved: the gap exceeds the two cells' seed sds combined, √(sd₁² + sd₂²)):\n")  # fmt: skip
    text.append(markdown_table(
        ["dataset", "metric", "objective · sampler", "best λ, L", "best", "runner-up λ, L", "runner-up", "gap",
         "resolved"],
        [[b["dataset"], _metric_name(b["metric"], b["extractor"]), b["objective"] + (f" · {b['sampler']}" if b["sampler"] else ""),
          _cell(b["best"]), _fmt_row(b["best"]), _cell(b["second"]) if b["second"] else "—",
          _fmt_row(b["second"]) if b["second"] else "—", f"{b['gap']:.3g}" if b["second"] else "—",
          "yes" if b["resolved"] else "no"] for b in best],
    ))  # fmt: skip
    text.append("Every cell (mean ± sd over seeds):\n")
    text.append(_grid_table(stats))
    text.append("Findings (per weighting: the smallest L against its lowest; then the lowest weighting per L):\n")
    text.append("\n".join(_findings(stats)) + "\n")
    return "\n".join(text)
