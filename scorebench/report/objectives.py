"""Paper study `objectives`: exact vs sliced vs sliced-VR vs denoising score matching at equal
training steps, against the data dimension D.

Exact score matching (Hyvärinen 2005) needs the full Jacobian trace, one backward pass per
dimension, so its cost per step grows with D; sliced score matching (Song, Garg, Shi & Ermon 2019)
replaces the trace by random projections (one vector-Jacobian product) and denoising score matching
(Vincent 2011) needs no input derivative at all. What each buys at equal steps is measured here:
score error against the exact ∇log p_σ, sample quality, and seconds per training step, per D.

`objective_numbers` turns the study table into one row per (dataset, model, objective, sampler,
quantity) with mean, sd and a 95 % t-interval over seeds; the figure and the summary section both
read it, so what the figure draws is what the summary says. The objectives of one dataset share its
schedule, so their score errors are compared at the schedule's own σ levels; the section's verdicts
are Claims (stats.claims: t-tests over seeds, one Holm family).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from scorebench.data.registry import dataset_dim
from scorebench.report.plotting import NothingToDraw, pyplot, save_figure
from scorebench.report.plotting import draw_each
from scorebench.report.queries import at_common_sigma, at_sigma_min, own_sigma_rows, score_error_rows
from scorebench.report.stats import claims, claims_markdown, compare, describe, loglog_slope, over_seeds
from scorebench.report.tables import markdown_table, mean_ci_text

FIGURES = ("objectives_vs_dim",)
OBJECTIVE_ORDER = ("exact", "sliced", "sliced_vr", "dsm")  # objective kinds: the method's history
OBJECTIVE_NAMES = {"exact": "exact (Hyvärinen)", "sliced": "sliced", "sliced_vr": "sliced-VR", "dsm": "denoising"}
# quantity -> (axis label, y scale, panel title); MMD² is unbiased, so it may be slightly negative: symlog
QUANTITIES = {
    "score_error": ("relative score error (mean over the σ levels)", "log",
                    "Score error E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖²\n(lower is better)"),
    "score_error_sigma_min": ("relative score error at σ_min", "log", "Score error at σ_min (lower is better)"),
    "mmd_rbf": ("MMD² of the samples to held-out data", "symlog", "Sample quality: MMD²\n(lower is better)"),
    "sliced_wasserstein": ("sliced W₂ of the samples to held-out data\n(data units)", "log",
                           "Sample quality: sliced W₂\n(lower is better)"),
    "fid": ("FID of the samples to the reference set", "log", "Sample quality: FID\n(lower is better)"),
    "sec_per_step": ("seconds per training step (s)", "log", "Cost: wall seconds per training step\n(log-log)"),
}
SAMPLE_QUANTITIES = ("mmd_rbf", "sliced_wasserstein", "fid")
SHORT_NAMES = {"score_error": "score error", "mmd_rbf": "MMD²", "sliced_wasserstein": "sliced W₂", "fid": "FID"}
FIGURE_PANELS = ("score_error", "mmd_rbf", "sliced_wasserstein", "fid", "sec_per_step")


def check(study) -> str | None:
    """A D axis needs two known dimensions, and a comparison two trained objective kinds."""
    dims = {dataset_dim(d["kind"], d["options"]) for d in study.config["datasets"].values()}
    trained = {o["kind"] for o in study.config["objectives"].values()} - {"oracle"}
    if len(dims - {None}) < 2 or len(trained) < 2:
        return ("needs datasets of at least two known dimensions and at least two trained objective kinds, got "
                f"dimensions {sorted(dims - {None})} and kinds {sorted(trained)}")  # fmt: skip
    return None


# ---------------------------------------------------------------------- numbers


def data_dims(df) -> dict:
    """{dataset: D} from the table's dataset columns, by the same rule the config check uses."""
    out = {}
    for ds, rows in df.groupby("dataset"):
        r = rows.iloc[0]
        options = {}
        for key in ("dim", "image_size"):
            v = r.get(f"dataset_options_{key}")
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                options[key] = int(v)
        dim = dataset_dim(r.get("dataset_kind", ""), options)
        if dim is not None:
            out[ds] = dim
    return out


def per_seed_values(df):
    """One value per (dataset, model, objective, objective kind, sampler, seed, quantity): the cell's
    relative score error averaged over its σ levels and at its smallest σ, its seconds per training
    step (training wall seconds / steps, the cost columns aggregate.py gives every row of a cell) and
    its sample-quality metrics per sampler. `model` is "arch/preset": costs of different networks are
    not one curve."""
    import pandas as pd

    keys = ["dataset", "model", "objective", "objective_kind", "seed"]
    d = df[df["objective_kind"] != "oracle"] if "objective_kind" in df else df.iloc[0:0]
    if {"model_arch", "model_preset"} <= set(d.columns):
        d = d.assign(model=d["model_arch"].astype(str) + "/" + d["model_preset"].astype(str))
    else:
        d = d.assign(model="")
    parts = []
    se = own_sigma_rows(score_error_rows(d))
    if len(se) and (d.groupby("dataset")["schedule"].nunique() > 1).any():
        # the objectives of a dataset do not share one schedule: their own σ differ, so both score-error
        # quantities read the one common σ instead (queries.at_common_sigma; none in an older table)
        se = at_common_sigma(score_error_rows(d), per=keys)[1]
    if len(se):
        mean = se.groupby(keys)["value"].mean().rename("score_error").reset_index()
        at_min = at_sigma_min(se, per=keys).groupby(keys)["value"].mean().rename("score_error_sigma_min").reset_index()
        for part, q in ((mean, "score_error"), (at_min, "score_error_sigma_min")):
            parts.append(part.rename(columns={q: "value"}).assign(quantity=q, sampler=""))
    if {"train_wall_s", "train_steps"} <= set(d.columns):
        cost = d.dropna(subset=["train_wall_s", "train_steps"]).drop_duplicates(keys)
        cost = cost[cost["train_steps"] > 0]
        parts.append(cost[keys].assign(value=cost["train_wall_s"] / cost["train_steps"], quantity="sec_per_step",
                                       sampler=""))  # fmt: skip
    sq = d[d["metric"].isin(SAMPLE_QUANTITIES) & (d["sampler"] != "")]
    if len(sq):
        parts.append(sq[[*keys, "sampler", "metric", "value"]].rename(columns={"metric": "quantity"}))
    cols = [*keys, "sampler", "quantity", "value"]
    return pd.concat([p[cols] for p in parts], ignore_index=True) if parts else pd.DataFrame(columns=cols)


def objective_numbers(df):
    """Mean, sd, n and 95 % CI over seeds per (dataset, D, model, objective, sampler, quantity), sorted
    by D and the objectives' order."""
    import pandas as pd

    v = per_seed_values(df)
    group = ["dataset", "model", "objective", "objective_kind", "sampler", "quantity"]
    cols = ["dataset", "dim", *group[1:], "mean", "sd", "n", "lo", "hi"]
    if v.empty:
        return pd.DataFrame(columns=cols)
    out = over_seeds(v, group)
    out["dim"] = out["dataset"].map(data_dims(df))
    order = {k: i for i, k in enumerate(OBJECTIVE_ORDER)}
    out["_o"] = out["objective_kind"].map(order).fillna(len(order))
    out = out.sort_values(["dim", "dataset", "_o", "objective", "sampler", "quantity"])
    return out[cols].reset_index(drop=True)


def training_steps(df) -> list[int]:
    """The distinct training step counts of the study's trained cells (one value: equal steps)."""
    if "train_steps" not in df:
        return []
    return sorted({int(s) for s in df["train_steps"].dropna() if s > 0})


# ---------------------------------------------------------------------- figure


def _objective_label(row) -> str:
    name = OBJECTIVE_NAMES.get(row["objective_kind"], row["objective_kind"])
    return name if row["objective"] == row["objective_kind"] else f"{row['objective']} ({name})"


def _set_y_scale(ax, rows, scale: str) -> None:
    """The panel's y scale: log (with readable minor labels), symlog (linear within ± the smallest
    |mean| rounded down to a power of 10) or linear."""
    from matplotlib.ticker import FuncFormatter

    if scale == "log":
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    elif scale == "symlog":
        small = rows["mean"].abs()[rows["mean"] != 0].min()
        ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(small)) if small == small else 1e-3)
    if scale != "linear":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _draw_panel(ax, rows, q: str, labels, models, samplers, colours) -> bool:
    """One quantity's lines against D, one per objective (× model, × sampler); returns whether an
    interval was cut at mean/10 to fit a log axis."""
    import numpy as np

    scale = QUANTITIES[q][1] if QUANTITIES[q][1] != "log" or (rows["mean"] > 0).all() else "linear"
    clipped = False
    for (i, lab), (k, model), (j, smp) in itertools.product(
        enumerate(labels), enumerate(models), enumerate(samplers if q in SAMPLE_QUANTITIES else [""])
    ):
        r = rows[(rows["label"] == lab) & (rows["model"] == model) & (rows["sampler"] == smp)].sort_values("dim")
        if r.empty:
            continue
        x = r["dim"].to_numpy(float) * 1.04 ** (i - (len(labels) - 1) / 2)  # dodge the error bars
        y = r["mean"].to_numpy(float)
        lo = r["lo"].to_numpy(float)
        if scale == "log":  # a t-interval reaching below 0 cannot be drawn on a log axis: cut at y/10
            clipped |= bool(np.any(lo < y / 10))
            lo = np.maximum(lo, y / 10)
        err = np.vstack([y - lo, r["hi"].to_numpy(float) - y])
        err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
        tag = lab + (f" · {model}" if len(models) > 1 else "") + (f" · {smp}" if len(samplers) > 1 else "")
        ax.errorbar(x, y, yerr=err, marker="os^D"[j % 4], ms=5, capsize=3, lw=1.6, color=colours[lab],
                    ls=("-", "--", ":", "-.")[k % 4], label=tag)
    _set_y_scale(ax, rows, scale)
    ax.set_ylabel(QUANTITIES[q][0] + {"log": ", log scale", "symlog": ", symlog scale"}.get(scale, ""))
    return clipped


def objectives_figure(df, out_dir: Path, name: str = "objectives_vs_dim") -> None:
    """Score error, sample quality and seconds per training step against D, one line per objective
    (points: mean over seeds; bars: 95 % CI), log-scaled D. Datasets whose D is unknown are left out."""
    from matplotlib.ticker import NullLocator

    plt, sns = pyplot()
    nums = objective_numbers(df)
    nums = nums[nums["dim"].notna() & nums["mean"].notna()]
    panels = [q for q in FIGURE_PANELS if (nums["quantity"] == q).any()]
    if nums.empty or not panels:
        raise NothingToDraw(name, "no score-error, sample-quality or training-cost rows")
    nums = nums.assign(label=nums.apply(_objective_label, axis=1))
    labels = list(dict.fromkeys(nums["label"]))
    models = list(dict.fromkeys(nums["model"]))
    colours = dict(zip(labels, sns.color_palette("colorblind", len(labels))))
    samplers = sorted(s for s in nums["sampler"].unique() if s)
    dims = sorted(nums["dim"].unique())
    n_seeds = int(nums["n"].max())
    ncols = 2 if len(panels) <= 4 else 3
    nrows = math.ceil(len(panels) / ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(6.0 * ncols, 4.4 * nrows), squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(panels):]:
        ax.axis("off")
    for ax, q in zip(axes, panels):
        clipped = _draw_panel(ax, nums[nums["quantity"] == q], q, labels, models, samplers, colours)
        ax.set_xscale("log", base=2)
        ax.set_xticks(dims)
        ax.set_xticklabels([str(int(d)) for d in dims])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("data dimension D (log scale)")
        ax.set_title(QUANTITIES[q][2] + (" (bars cut at mean/10)" if clipped else ""))
    handles, labs = axes[0].get_legend_handles_labels()
    for ax in axes[1 : len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labs:
                handles.append(h)
                labs.append(lab)
    title = "objective" + (" · model (arch/preset)" if len(models) > 1 else "")
    title += " · sampler" if len(samplers) > 1 else ""
    fig.legend(handles, labs, title=title, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labs), 4),
               frameon=False)  # fmt: skip
    steps = training_steps(df)
    at = f"{steps[0]} training steps each" if len(steps) == 1 else "equal training steps"
    fig.suptitle(f"Score-matching objectives against data dimension at {at} "
                 f"(points: mean over {n_seeds} seeds; bars: 95 % CI)", y=1.02)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, out_dir, name)


def figures(inputs) -> list[str]:
    return draw_each({FIGURES[0]: lambda: objectives_figure(inputs.table, inputs.figures_dir)}, inputs.wanted)


# ---------------------------------------------------------------------- summary section


def _lookup(nums):
    return {(r["dataset"], r["objective"], r["sampler"], r["quantity"]): r for r in nums.to_dict("records")}


def _seed_slopes(values, dims: dict, model: str, objective: str) -> tuple[list[float], list]:
    """(slopes, seeds): per seed, the log-log slope of its seconds per step against D over the
    datasets it has cells on (seeds with fewer than 2 D give none)."""
    r = values[(values["quantity"] == "sec_per_step") & (values["model"] == model) & (values["objective"] == objective)]
    r = r.assign(dim=r["dataset"].map(dims)).dropna(subset=["dim", "value"])
    slopes, seeds = [], []
    for seed, g in r.groupby("seed"):
        if g["dim"].nunique() >= 2:
            slopes.append(loglog_slope(g["dim"], g["value"]))
            seeds.append(seed)
    return slopes, seeds


def cost_findings(nums, values, dims: dict, family: list) -> list[str]:
    """Seconds per step against D per objective (per model, when the study has several): each
    objective's log-log slope (1: linear in D, 0: flat) with its 95 % t-interval over seeds (one slope
    per seed); whether exact's cost grows faster than each other objective's is a paired t-test on
    those slopes in the section's Holm family (`family`)."""
    cost = nums[nums["quantity"] == "sec_per_step"]
    several = cost["model"].nunique() > 1
    out = []
    for model, per_model in cost.groupby("model", sort=False):
        where = f" ({model})" if several else ""
        slopes = {}
        for obj, rows in per_model.groupby("objective", sort=False):  # nums is in the objectives' order
            rows = rows.sort_values("dim")
            if rows["dim"].nunique() < 2:
                continue
            per_seed, seeds = _seed_slopes(values, dims, model, obj)
            slopes[obj] = (rows["objective_kind"].iloc[0], per_seed, seeds)
            st = describe(per_seed)
            a, b = rows.iloc[0], rows.iloc[-1]
            out.append(
                f"- Cost, `{obj}`{where}: {a['mean']:.3g} s/step at D = {int(a['dim'])} → {b['mean']:.3g} s/step "
                f"at D = {int(b['dim'])} (×{b['mean'] / a['mean']:.3g}); log-log slope {st.mean + 0.0:.2f} "
                f"[{st.lo + 0.0:.2f}, {st.hi + 0.0:.2f}] (n = {st.n} seeds; 1 = linear in D, 0 = flat)."
            )
        exact = [o for o, (k, _, _) in slopes.items() if k == "exact"]
        for other, (kind, per_seed, seeds) in slopes.items():
            if exact and kind != "exact":
                e = slopes[exact[0]]
                family.append((f"`{other}`", f"`{exact[0]}`", f"growth of s/step with D (log-log slope per seed{where})",
                               compare(per_seed, e[1], seeds, e[2]), True))  # fmt: skip
        if not exact:
            continue
        top = int(per_model.loc[per_model["objective"] == exact[0], "dim"].max())
        here = per_model[per_model["dim"] == top].set_index("objective")["mean"]
        cheap = here.drop(exact[0], errors="ignore")
        if len(cheap):
            out.append(
                f"- At D = {top}, the largest D with exact cells{where}, one exact step takes as long as "
                f"{here[exact[0]] / cheap.max():.3g}–{here[exact[0]] / cheap.min():.3g} steps of the others "
                "(ratios of the seed means)."
            )
    return out


def _seed_values(values, dataset, model, objective, sampler, quantity):
    r = values[(values["dataset"] == dataset) & (values["model"] == model) & (values["objective"] == objective)
               & (values["sampler"] == sampler) & (values["quantity"] == quantity)].sort_values("seed")  # fmt: skip
    r = r.dropna(subset=["value"])
    return r["value"].to_numpy(float), r["seed"].tolist()


def _compare_rows(values, a, b, quantity: str, sampler: str):
    va = _seed_values(values, a["dataset"], a["model"], a["objective"], sampler, quantity)
    vb = _seed_values(values, b["dataset"], b["model"], b["objective"], sampler, quantity)
    return compare(va[0], vb[0], va[1], vb[1])


def best_findings(nums, values, quantity: str, sampler: str, family: list) -> str | None:
    """Which objective has the lowest mean `quantity` at each D (a description of the means); its
    comparison with the runner-up joins the section's Holm family (`family`), which decides it."""
    rows = nums[(nums["quantity"] == quantity) & (nums["sampler"] == sampler)]
    parts, wins = [], {}
    for (ds, dim, model), g in rows.groupby(["dataset", "dim", "model"], sort=False):
        g = g.sort_values("mean")
        if len(g) < 2:
            continue
        best, second = g.iloc[0], g.iloc[1]
        wins[best["objective"]] = wins.get(best["objective"], 0) + 1
        what = f"{SHORT_NAMES[quantity]} at D = {int(dim)} ({ds}" + (f", `{sampler}`)" if sampler else ")")
        family.append((f"`{best['objective']}`", f"`{second['objective']}`", what,
                       _compare_rows(values, best, second, quantity, sampler), True))  # fmt: skip
        parts.append(f"D = {int(dim)}: `{best['objective']}` {mean_ci_text(best)} (n = {int(best['n'])}; next "
                     f"`{second['objective']}` {mean_ci_text(second)} (n = {int(second['n'])}))")  # fmt: skip
    if not parts:
        return None
    tally = ", ".join(f"`{o}` at {n} of {len(parts)} D" for o, n in sorted(wins.items(), key=lambda t: -t[1]))
    return (f"- Lowest mean {SHORT_NAMES[quantity]}: {tally} (whether each lead is resolved: Claims). "
            + "; ".join(parts) + ".")  # fmt: skip


def _error_findings(nums, values, smp: str, sample_qs, family: list) -> list[str]:
    """The lowest score error and sample metrics per D, the error's change with D, and sliced-VR vs
    sliced; the comparisons go into `family` (the section's Holm family)."""
    findings = []
    for q in ("score_error", *sample_qs):
        line = best_findings(nums, values, q, smp if q in SAMPLE_QUANTITIES else "", family)
        if line:
            findings.append(line)
    se = nums[nums["quantity"] == "score_error"]
    growth = []
    for (obj, model), rows in se.groupby(["objective", "model"], sort=False):
        rows = rows.sort_values("dim")
        if rows["dim"].nunique() >= 2:
            a, b = rows.iloc[0], rows.iloc[-1]
            where = f", {model}" if se["model"].nunique() > 1 else ""
            growth.append(f"`{obj}` ×{b['mean'] / a['mean']:.3g} (D = {int(a['dim'])} → {int(b['dim'])}{where})")
    if growth:
        findings.append("- Change of the mean relative score error with D: " + ", ".join(growth) + ".")
    vr = se[se["objective_kind"].isin(["sliced", "sliced_vr"])]
    for (ds, dim, model), g in vr.groupby(["dataset", "dim", "model"]):
        if len(g) == g["objective_kind"].nunique() == 2:
            g = g.set_index("objective_kind")
            a, b = g.loc["sliced_vr"].to_dict(), g.loc["sliced"].to_dict()
            a.update(dataset=ds, model=model)
            b.update(dataset=ds, model=model)
            family.append((f"`{a['objective']}`", f"`{b['objective']}`", f"variance reduction, score error at D = {int(dim)} ({ds})",
                           _compare_rows(values, a, b, "score_error", ""), True))  # fmt: skip
    return findings


def section(inputs) -> str:
    """The summary section: a table per D and objective, and findings chosen by comparing the numbers."""
    df = inputs.table
    nums = objective_numbers(df)
    text = ["## Objectives against data dimension\n"]
    text.append(
        "`figures/objectives_vs_dim.png` compares exact score matching (Hyvärinen 2005: the full Jacobian trace, "
        "one backward pass per dimension), sliced and variance-reduced sliced score matching (Song et al. 2019: "
        "random projections, one vector-Jacobian product) and denoising score matching (Vincent 2011: no input "
        "derivative) trained for the same number of steps, against the data dimension D: the relative score "
        "error against the exact ∇log p_σ (mean over the σ levels), sample quality of the annealed-Langevin "
        "samples, and seconds per training step (training wall seconds / steps: they depend on the machine and "
        "on how busy it was). Brackets are 95 % t-intervals over seeds; each comparison is a Claim of one Holm family.\n"
    )
    if "dataset_kind" in df and ((df["dataset_kind"] == "gmm_nd") & (df.get("dataset_options_dim", 2) > 2)).any():
        text.append(
            "On `gmm_nd` the modes lie on the first coordinate axes (±radius·e_i) and the other coordinates are "
            "Gaussian, whose score is linear. MMD² and sliced W₂ compare whole D-dimensional samples, so at large D "
            "they are dominated by the Gaussian coordinates and see little of how well the modes are resolved; "
            "`figures/samples.png` plots coordinates 1 and 2, where the modes are.\n"
        )
    nums = nums[nums["dim"].notna()]
    if nums.empty:
        return "\n".join(text + ["The study table has no rows of trained cells with a known data dimension.\n"])
    at = _lookup(nums)
    samplers = sorted(s for s in nums["sampler"].unique() if s)
    smp = samplers[0] if samplers else ""
    sample_qs = [q for q in SAMPLE_QUANTITIES if ((nums["quantity"] == q) & (nums["sampler"] == smp)).any()]
    cells = nums[["dataset", "dim", "model", "objective"]].drop_duplicates()
    header = ["dataset", "D", "model", "objective", "rel. score error (mean over σ)", "rel. score error at σ_min"]
    header += [f"{SHORT_NAMES[q]} ({smp})" for q in sample_qs] + ["s / step"]
    table = []
    for c in cells.to_dict("records"):
        k = (c["dataset"], c["objective"])
        table.append([c["dataset"], str(int(c["dim"])), c["model"], c["objective"],
                      mean_ci_text(at.get((*k, "", "score_error"))), mean_ci_text(at.get((*k, "", "score_error_sigma_min"))),
                      *[mean_ci_text(at.get((*k, smp, q))) for q in sample_qs],
                      mean_ci_text(at.get((*k, "", "sec_per_step")))])  # fmt: skip
    text.append(markdown_table(header, table))
    values = per_seed_values(df)
    family: list = []
    findings = cost_findings(nums, values, data_dims(df), family)
    exact_dims = set(nums.loc[nums["objective_kind"] == "exact", "dim"])
    missing = sorted({int(d) for d in nums["dim"]} - {int(d) for d in exact_dims})
    if exact_dims and missing:
        findings.append(f"- Exact score matching has no cells at D = {', '.join(map(str, missing))} (refused above its "
                        "max_dim, or excluded).")  # fmt: skip
    findings += _error_findings(nums, values, smp, sample_qs, family)
    text.append("Findings:\n")
    text.append("\n".join(findings) + "\n" if findings else "No comparison possible (one objective or one D).\n")
    text.append(claims_markdown(claims(_unique(family))))
    return "\n".join(text)


def _unique(family: list) -> list:
    seen, out = set(), []
    for f in family:
        if (f[0], f[1], f[2]) not in seen:
            seen.add((f[0], f[1], f[2]))
            out.append(f)
    return out
