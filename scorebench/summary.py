"""The Markdown summary of a paper study: what its figures show, with numbers from its own table.

Nothing here is written by hand: every number is a query over the study table (mean over seeds,
± sd when there are several), and every sentence that draws a conclusion is chosen by comparing
those numbers, so a run that contradicts the paper says so.
"""

from __future__ import annotations

import math

from scorebench.study_figures import ANIMATION_NAME, NFE_METRICS, mode_weight_rows, sampler_nfe_numbers, shown_grid_rows

SAMPLER_KINDS = {"langevin": "plain Langevin", "annealed_langevin": "annealed Langevin", "pc": "predictor–corrector"}


def fmt(mean: float, sd: float = math.nan, n: int = 1) -> str:
    """`mean` to 3 significant digits, with `± sd` when it comes from n > 1 seeds."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean:.3g}"
    return text + (f" ± {sd:.2g}" if n > 1 and not math.isnan(sd) else "")


def _stats(values) -> tuple[float, float, int]:
    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan, 0
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else math.nan
    return m, sd, len(v)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- score fields


def score_field_numbers(df) -> list[dict]:
    """Relative score error on the grid per cell and shown σ: lowest- and highest-density bin, and the
    whole grid (each mean, sd, n over seeds), in the order of the figures."""
    d = shown_grid_rows(df)
    d = d[d["metric"] == "score_error_rel"]
    whole = df[(df["region"] == "grid") & (df["metric"] == "score_error_rel")]
    out = []
    for (ds, sch, obj, sigma), rows in d.groupby(["dataset", "schedule", "objective", "sigma"]):
        top = int(rows["bin"].max())
        cell = (df["dataset"] == ds) & (df["schedule"] == sch) & (df["objective"] == obj)
        levels = sorted(df.loc[cell & (df["region"] == "grid"), "sigma"].unique(), reverse=True)
        kind = rows["schedule_kind"].iloc[0] if "schedule_kind" in rows else ""
        w = whole[(whole["dataset"] == ds) & (whole["schedule"] == sch) & (whole["objective"] == obj)
                  & (whole["sigma"] == sigma)]  # fmt: skip
        out.append({
            "dataset": ds, "schedule": sch, "objective": obj, "schedule_kind": kind, "sigma": float(sigma),
            "level": levels.index(sigma) + 1 if sigma in levels else 0, "levels": len(levels), "n_bins": top + 1,
            "low": _stats(rows.loc[rows["bin"] == 0, "value"]), "high": _stats(rows.loc[rows["bin"] == top, "value"]),
            "grid": _stats(w["value"]),
        })  # fmt: skip
    out.sort(key=lambda r: (r["dataset"], r["schedule_kind"] != "none", r["levels"], r["schedule"], r["objective"],
                            -r["sigma"]))  # fmt: skip
    return out


def score_fields_section(df) -> str:
    nums = score_field_numbers(df)
    text = ["## Score fields: where the estimate is poor, and what noise changes\n"]
    text.append(
        "`figures/score_fields.png` draws, for each model, the exact score ∇ₓ log p_σ and the model's "
        "s_θ(x, σ) as arrows over the density p_σ, and below them the squared error relative to the grid "
        "mean of ‖∇ₓ log p_σ‖²; `figures/score_error_vs_log_density.png` gives the same error per bin of the "
        "data log-density log p₀ on a uniform grid over the data's box (Song & Ermon 2019, Fig. 2 and Sec. 3.2.1).\n"
    )
    if not nums:
        return "\n".join(text + ["The study table has no grid score-error rows (no 2-D toy cells).\n"])
    n_bins = nums[0]["n_bins"]
    rows = []
    for r in nums:
        ratio = r["low"][0] / r["high"][0] if r["high"][0] > 0 else math.nan
        where = "no noise" if r["schedule_kind"] == "none" else f"{r['level']}/{r['levels']}"
        rows.append([r["dataset"], r["schedule"], r["objective"], f"{r['sigma']:.3g}", where, fmt(*r["low"]),
                     fmt(*r["high"]), f"{ratio:.3g}", fmt(*r["grid"])])  # fmt: skip
    text.append(f"Relative score error E‖s_θ − ∇log p_σ‖² / E‖∇log p_σ‖² on the grid; bins are {n_bins} equal-count "
                f"quantiles of log p₀ (bin 0 = lowest density):\n")  # fmt: skip
    text.append(_md_table(["dataset", "schedule", "objective", "σ", "level", "lowest-density bin",
                           "highest-density bin", "low / high", "whole grid"], rows))  # fmt: skip
    findings = []
    for ds in sorted({r["dataset"] for r in nums}):
        mine = [r for r in nums if r["dataset"] == ds]
        naive = [r for r in mine if r["schedule_kind"] == "none"]
        noisy = [r for r in mine if r["schedule_kind"] != "none"]
        for r in naive:
            low, high = r["low"][0], r["high"][0]
            verdict = ("larger: the estimate is poor where data is scarce" if low > high
                       else "not larger: this run does not show the low-density failure")  # fmt: skip
            findings.append(
                f"- {ds}, no noise (`{r['schedule']}` / `{r['objective']}`): relative error {fmt(*r['low'])} in the "
                f"lowest-density bin vs {fmt(*r['high'])} in the highest ({low / high:.3g}×), {verdict}."
            )
        naive_low = _stats([r["low"][0] for r in naive])[0] if naive else math.nan
        for key in dict.fromkeys((r["schedule"], r["objective"]) for r in noisy):  # the figure's order
            cell = [r for r in noisy if (r["schedule"], r["objective"]) == key]
            big, small = max(cell, key=lambda r: r["sigma"]), min(cell, key=lambda r: r["sigma"])
            line = (f"- {ds}, `{key[0]}` / `{key[1]}` at σ = {big['sigma']:.3g}: lowest-density error "
                    f"{fmt(*big['low'])}")  # fmt: skip
            if not math.isnan(naive_low):
                line += f", {'below' if big['low'][0] < naive_low else 'not below'} the noiseless {naive_low:.3g}"
            if small is not big:
                line += (f"; at its smallest σ = {small['sigma']:.3g} it is {fmt(*small['low'])} (that level is used "
                         f"only once the samples are near the data)")  # fmt: skip
            findings.append(line + ".")
    filled = [r for r in nums if r["schedule_kind"] != "none"]
    if filled and any(r["schedule_kind"] == "none" for r in nums):
        best = min(filled, key=lambda r: r["low"][0])
        naive_low = min(r["low"][0] for r in nums if r["schedule_kind"] == "none")
        findings.append(
            f"- Noise fills the low-density regions: {'yes' if best['low'][0] < naive_low else 'not in this run'} — "
            f"the lowest-density error falls from {naive_low:.3g} without noise to {best['low'][0]:.3g} "
            f"(`{best['schedule']}` at σ = {best['sigma']:.3g})."
        )
    text.append("Findings:\n")
    text.append("\n".join(findings) + "\n")
    return "\n".join(text)


# ---------------------------------------------------------------------- mode weights


def mode_weight_numbers(df, mixtures: dict) -> list[dict]:
    """Fraction of samples per mode and off-mode, and the mode-weight TV error, per cell and sampler
    (mean, sd, n over seeds)."""
    d = mode_weight_rows(df, mixtures)
    tv = df[(df["metric"] == "mode_weight_error") & (df["sampler"] != "")]
    kinds = df.drop_duplicates("sampler").set_index("sampler")["sampler_kind"].to_dict() if "sampler_kind" in df else {}
    out = []
    for (ds, sch, obj, smp), rows in d.groupby(["dataset", "schedule", "objective", "sampler"]):
        k_all = len(mixtures[ds]["weights"])
        t = tv[(tv["dataset"] == ds) & (tv["schedule"] == sch) & (tv["objective"] == obj) & (tv["sampler"] == smp)]
        out.append({
            "dataset": ds, "schedule": sch, "objective": obj, "sampler": smp, "sampler_kind": kinds.get(smp, ""),
            "weights": [_stats(rows.loc[rows["metric"] == f"mode_weight_{k}", "value"]) for k in range(k_all)],
            "off": _stats(rows.loc[rows["metric"] == "mode_off_fraction", "value"]), "tv": _stats(t["value"]),
        })  # fmt: skip
    return out


def mode_weights_section(df, mixtures: dict) -> str:
    nums = mode_weight_numbers(df, mixtures)
    text = ["## Plain vs annealed Langevin: mode weights\n"]
    text.append(
        "`figures/sampler_samples.png` shows the samples of each sampler over the true density (first seed); "
        "`figures/mode_weights.png` the fraction of samples nearest each mode (within 3 component stds; the rest "
        "is off-mode) against the true weights (Song & Ermon 2019, Fig. 3: Langevin dynamics without annealing "
        "finds the modes but not their weights).\n"
    )
    if not nums:
        return "\n".join(text + ["The study table has no mode-weight rows.\n"])
    findings = []
    for ds in sorted({r["dataset"] for r in nums}):
        mix = mixtures[ds]
        w = [float(v) for v in mix["weights"]]
        heavy = max(range(len(w)), key=lambda k: w[k])
        mine = [r for r in nums if r["dataset"] == ds]
        header = ["schedule", "objective", "sampler", "kind"]
        header += [f"mode {k} ({', '.join(f'{v:g}' for v in mix['means'][k])}), true {w[k]:.2g}" for k in range(len(w))]
        header += ["off-mode", "TV error"]
        rows = [[r["schedule"], r["objective"], r["sampler"], r["sampler_kind"], *[fmt(*s) for s in r["weights"]],
                 fmt(*r["off"]), fmt(*r["tv"])] for r in mine]  # fmt: skip
        text.append(f"{ds}: fraction of all samples per mode (mean over seeds):\n")
        text.append(_md_table(header, rows))
        by_kind: dict = {}
        for r in mine:
            by_kind.setdefault(r["sampler_kind"], []).append(r)
        for kind in sorted(by_kind, key=lambda k: list(SAMPLER_KINDS).index(k) if k in SAMPLER_KINDS else 9):
            parts = [f"{fmt(*r['weights'][heavy])} with `{r['objective']}`" for r in by_kind[kind]]
            findings.append(
                f"- {ds}: {SAMPLER_KINDS.get(kind, kind)} (`{by_kind[kind][0]['sampler']}`) puts "
                + ", ".join(parts) + f" of its samples in the heavy mode (true {w[heavy]:.2g})."
            )
        plain = {(r["schedule"], r["objective"]): r for r in by_kind.get("langevin", [])}
        for r in by_kind.get("annealed_langevin", []):
            p = plain.get((r["schedule"], r["objective"]))
            if p is None:
                continue
            a_err, p_err = abs(r["weights"][heavy][0] - w[heavy]), abs(p["weights"][heavy][0] - w[heavy])
            verdict = "closer to" if a_err < p_err else "not closer to"
            findings.append(
                f"- {ds}, `{r['objective']}`: annealed Langevin is {verdict} the true heavy-mode weight than plain "
                f"Langevin (off by {a_err:.2g} vs {p_err:.2g})."
            )
    text.append("Findings:\n")
    text.append("\n".join(findings) + "\n")
    return "\n".join(text)


# ---------------------------------------------------------------------- samplers at equal NFE

NFE_MATCH = 1.5  # two presets are "at matched NFE" when their NFEs differ by at most this factor
WINNER_NAMES = {"pc": "predictor–corrector", "annealed": "annealed Langevin", "tie": "neither (within ± sd)"}
NFE_METRIC_NAMES = {"mode_weight_error": "mode-weight TV error", "mmd_rbf": "MMD²",
                    "sliced_wasserstein": "sliced W2", "fid": "FID"}  # fmt: skip


def matched_nfe_pairs(nums, metric: str) -> list[dict]:
    """For every predictor–corrector preset of a cell, the best annealed-Langevin preset (lowest mean
    `metric`) whose NFE is within a factor NFE_MATCH of it; pairs without such a preset are skipped.
    `winner` is "tie" when the means differ by no more than the seed sds combined (√(sd_pc² + sd_ald²)):
    a difference the seeds cannot resolve is not a win."""
    out = []
    for (ds, sch, obj), cell in nums.groupby(["dataset", "schedule", "objective"]):
        cell = cell[cell[metric].notna()]
        ald = cell[cell["sampler_kind"] == "annealed_langevin"]
        for p in cell[cell["sampler_kind"] == "pc"].sort_values("nfe").to_dict("records"):
            near = ald[(ald["nfe"] <= p["nfe"] * NFE_MATCH) & (ald["nfe"] * NFE_MATCH >= p["nfe"])]
            if near.empty:
                continue
            a = near.sort_values(metric).iloc[0].to_dict()
            noise = math.hypot(*(0.0 if math.isnan(v) else v for v in (p.get(metric + "_sd", math.nan),
                                                                        a.get(metric + "_sd", math.nan))))  # fmt: skip
            winner = "tie" if abs(p[metric] - a[metric]) <= noise else "pc" if p[metric] < a[metric] else "annealed"
            out.append({"dataset": ds, "schedule": sch, "objective": obj, "pc": p, "ald": a, "winner": winner})
    return out


def _val(r: dict, m: str) -> str:
    return fmt(r[m], r.get(m + "_sd", math.nan), int(r.get(m + "_n", 1) or 1))


def sampler_nfe_section(df) -> str:
    nums = sampler_nfe_numbers(df)
    metrics = [m for m in NFE_METRICS if m in nums and nums[m].notna().any()]
    text = ["## Annealed Langevin vs predictor–corrector at equal score evaluations\n"]
    text.append(
        "`figures/sampler_nfe.png` plots sample quality against the number of score evaluations per sample (NFE) "
        "for annealed Langevin (NCSN Algorithm 1, one line per step ratio, T steps per level along it; NFE = L·T + 1) "
        "and the predictor–corrector sampler (Song et al. 2021: a reverse-diffusion predictor and n Langevin "
        "corrector steps per level; NFE = L·n + L − 1 + 1), with the exact score (`oracle`) and a trained one.\n"
    )
    if nums.empty or not metrics:
        return "\n".join(text + ["The study table has no sample-quality rows with an nfe.\n"])
    header = ["dataset", "schedule", "objective", "sampler", "family", "NFE"] + [NFE_METRIC_NAMES[m] for m in metrics]
    rows = [[r["dataset"], r["schedule"], r["objective"], r["sampler"], r["family"], str(r["nfe"]),
             *[_val(r, m) for m in metrics]] for r in nums.to_dict("records")]  # fmt: skip
    text.append("Every preset (mean over seeds ± sd):\n")
    text.append(_md_table(header, rows))
    findings = []
    for m in metrics:
        pairs = matched_nfe_pairs(nums, m)
        if not pairs:
            continue
        name = NFE_METRIC_NAMES[m]
        text.append(f"Matched NFE on {name} (each PC preset against the best annealed preset within ×{NFE_MATCH:g} "
                    "of its NFE; lower is better; neither when the means differ by less than their sds "
                    "combined):\n")  # fmt: skip
        text.append(_md_table(
            ["dataset", "objective", "PC preset (NFE)", f"PC {name}", "best annealed (NFE)", f"annealed {name}", "better"],
            [[q["dataset"], q["objective"], f"{q['pc']['sampler']} ({q['pc']['nfe']})", _val(q["pc"], m),
              f"{q['ald']['sampler']} ({q['ald']['nfe']})", _val(q["ald"], m),
              WINNER_NAMES[q["winner"]]] for q in pairs],
        ))  # fmt: skip
        for obj in sorted({q["objective"] for q in pairs}, key=lambda o: (o != "oracle", o)):
            mine = [q for q in pairs if q["objective"] == obj]
            wins = sum(q["winner"] == "pc" for q in mine)
            losses = sum(q["winner"] == "annealed" for q in mine)
            verdict = ("predictor–corrector is better" if wins > losses
                       else "annealed Langevin is better" if wins < losses else "neither is better")  # fmt: skip
            low = min(mine, key=lambda q: q["pc"]["nfe"])
            ties = len(mine) - wins - losses
            findings.append(
                f"- {name}, `{obj}`: {verdict} at matched NFE (better: PC in {wins}, annealed in {losses}, neither "
                f"within ± sd in {ties} of {len(mine)} budgets); at the "
                f"smallest budget PC `{low['pc']['sampler']}` (NFE {low['pc']['nfe']}) reaches {_val(low['pc'], m)} vs "
                f"{_val(low['ald'], m)} for annealed `{low['ald']['sampler']}` (NFE {low['ald']['nfe']})."
            )
    for (ds, obj), cell in nums.groupby(["dataset", "objective"]):
        m = metrics[0]
        best = cell.sort_values(m).iloc[0]
        findings.append(f"- {ds}, `{obj}`: lowest {NFE_METRIC_NAMES[m]} overall is {_val(best.to_dict(), m)} "
                        f"(`{best['sampler']}`, {best['family']}, NFE {best['nfe']}).")  # fmt: skip
    text.append("Findings:\n")
    text.append("\n".join(findings) + "\n" if findings else "No PC preset has an annealed preset at matched NFE.\n")
    return "\n".join(text)


# ---------------------------------------------------------------------- the whole summary


def study_summary(df, *, study: str, settings: dict, mixtures: dict | None = None, n_frames: int | None = None) -> str:
    """The summary Markdown of a study: a header with the table's provenance, then one section per
    figure group the `figures:` settings ask for.

    Args:
        df: the study table.
        study: the study name.
        settings: the `figures:` block.
        mixtures: {dataset: {"means", "stds", "weights"}} (mode weights).
        n_frames: frames of the GIF, if one was made.
    """
    seeds = sorted(int(s) for s in df["seed"].unique())
    cells = df[["dataset", "schedule", "objective", "seed"]].drop_duplicates()
    commits = sorted(str(c) for c in df["git_commit"].dropna().unique()) if "git_commit" in df else []
    parts = [
        f"# Study `{study}`\n",
        f"Generated by `scorebench study-figures` from `metrics.parquet`: {len(cells)} trained or oracle cells "
        f"(seeds {', '.join(map(str, seeds))}), git commit {', '.join(c[:12] for c in commits) or 'unknown'}. "
        "Numbers are means over seeds (± sd when there are several).\n",
    ]
    if settings.get("score_fields"):
        parts.append(score_fields_section(df))
    if settings.get("mode_weights"):
        parts.append(mode_weights_section(df, mixtures or {}))
    if settings.get("sampler_nfe"):
        parts.append(sampler_nfe_section(df))
    if settings.get("levels"):
        from scorebench.levels_study import levels_section

        parts.append(levels_section(df))
    if settings.get("objectives"):
        from scorebench.objectives_study import objectives_section

        parts.append(objectives_section(df))
    if settings.get("animation"):
        frames = f"{n_frames} frames, " if n_frames else ""
        parts.append(
            "## Animation\n\n"
            f"`figures/{ANIMATION_NAME}.gif` ({frames}one per snapshot): the first 256 chains of annealed Langevin for "
            "each cell (first seed) moving through the σ levels, largest first.\n"
        )
    return "\n".join(parts)
