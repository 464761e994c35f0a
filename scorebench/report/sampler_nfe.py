"""Paper study `sampler_nfe`: annealed Langevin vs the predictor–corrector sampler at equal score
evaluations (Song et al. 2021, Sec. 4.2: PC samplers vs annealed Langevin at equal computation).

- `sampler_nfe_figure`: sample quality against the number of score evaluations (NFE) for each
  sampler family (annealed Langevin per step ratio, predictor–corrector), oracle and trained score apart;
- `section`: every preset's numbers (n, mean, 95 % CI), each PC preset against the best annealed
  preset at matched NFE as a Claim (t-test over seeds, one Holm family for the section).

The presets compared are samplers of one cell (one schedule), so no σ is involved.
"""

from __future__ import annotations

import math
from pathlib import Path

from scorebench.report.plotting import NothingToDraw, draw_each, pyplot, save_figure, spans_decades
from scorebench.report.stats import claims, claims_markdown, compare, over_seeds, seed_values
from scorebench.report.tables import markdown_table, mean_ci_n_text

FIGURES = ("sampler_nfe",)
# Sample-quality metrics the NFE figure and summary compare, in panel order, with axis labels.
NFE_METRICS = {
    "mode_weight_error": "mode-weight TV error\n½ Σ_k |ŵ_k − w_k| (lower is better)",
    "mmd_rbf": "MMD² (RBF kernel) to test data\n(lower is better)",
    "sliced_wasserstein": "sliced Wasserstein-2 to test data\n(data units, lower is better)",
    "fid": "FID to test images\n(feature-net features, lower is better)",
}
NFE_METRIC_NAMES = {"mode_weight_error": "mode-weight TV error", "mmd_rbf": "MMD²",
                    "sliced_wasserstein": "sliced W2", "fid": "FID"}  # fmt: skip
NFE_MATCH = 1.5  # two presets are "at matched NFE" when their NFEs differ by at most this factor
WINNER_NAMES = {"pc": "predictor–corrector", "annealed": "annealed Langevin", "tie": "not resolved"}


def check(study) -> str | None:
    """Any study with samplers can be drawn (a study without both families says so in its section)."""
    return None



def produces(study) -> tuple[str, ...]:
    """Every figure needs samples: none for a study without samplers."""
    return FIGURES if study.samplers else ()

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
    mean, sd, n and 95 % t-interval (lo, hi) over seeds (a DataFrame; empty when the table has no sampler rows)."""
    import numpy as np
    import pandas as pd

    d = df[(df["sampler"] != "") & df["metric"].isin(["nfe", *NFE_METRICS])]
    keys = ["dataset", "schedule", "objective", "sampler"]
    if d.empty:
        return pd.DataFrame(columns=[*keys, "sampler_kind", "family", "nfe"])
    cols = [c for c in ("sampler_kind", "sampler_step_size", "sampler_step_ratio", "sampler_snr") if c in d]
    meta = d.drop_duplicates(keys).set_index(keys)[cols]
    stats = over_seeds(d, [*keys, "metric"]).set_index([*keys, "metric"])[["mean", "sd", "n", "lo", "hi"]]
    stats = stats.unstack("metric")
    flat = stats["mean"].copy()
    for m in NFE_METRICS:
        if m in flat:
            for q in ("sd", "n", "lo", "hi"):
                flat[f"{m}_{q}"] = stats[q][m]
    out = meta.join(flat, how="inner").reset_index()  # aligned on the keys, not on row order
    out["family"] = [sampler_family(r) for r in out.to_dict("records")]
    out["nfe"] = out["nfe"].round().astype(int)
    out["sampler_kind"] = out["sampler_kind"] if "sampler_kind" in out else ""
    return out.sort_values([*keys[:3], "family", "nfe"]).reset_index(drop=True).replace({np.inf: np.nan})


def sampler_nfe_figure(df, out_dir: Path, name: str = "sampler_nfe") -> None:
    """Sample quality against NFE (log scale), one line per sampler family, one row of panels per
    (dataset, schedule, objective) — the oracle rows isolate the sampler, the trained rows add the
    model's error; points: mean over seeds, error bars: 95 % t-interval."""
    import numpy as np

    plt, sns = pyplot()
    nums = sampler_nfe_numbers(df)
    metrics = [m for m in NFE_METRICS if m in nums and nums[m].notna().any()]
    if nums.empty or not metrics:
        raise NothingToDraw(name, "no sample-quality rows with an nfe (needs samplers)")
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
                yerr = np.vstack([line[m] - line[m + "_lo"], line[m + "_hi"] - line[m]])
                yerr = np.where(np.isfinite(yerr), np.maximum(yerr, 0), 0)
                ax.errorbar(line["nfe"], line[m], yerr=yerr, label=fam, color=colors[fam],
                            marker=markers[fam], ls=ls, capsize=3, ms=5, lw=1.5)  # fmt: skip
            ax.set_xscale("log")
            if spans_decades(cell[m]):
                ax.set_yscale("log")
            ax.set_xlabel("score evaluations per sample (NFE, log scale)")
            ax.set_ylabel(NFE_METRICS[m], fontsize=9)
            what = "exact score" if obj == "oracle" else "trained score"
            ax.set_title(f"{ds} · {sch} · {obj} ({what})", fontsize=10)
            if r == 0 and c == 0:
                ax.legend(fontsize=8, title="sampler family", title_fontsize=8)
    fig.suptitle("Sample quality against computation: annealed Langevin (solid; T steps per level varies along a line) "
                 "vs predictor–corrector (dashed; corrector steps vary)\npoints: mean over seeds, bars: 95% t-interval", y=1.0)  # fmt: skip
    fig.tight_layout()
    save_figure(fig, out_dir, name)


def figures(inputs) -> list[str]:
    return draw_each({FIGURES[0]: lambda: sampler_nfe_figure(inputs.table, inputs.figures_dir)}, inputs.wanted)


# ---------------------------------------------------------------------- summary section


def _seed_rows(df, q: dict, r: dict, metric: str):
    sel = df[(df["dataset"] == q["dataset"]) & (df["schedule"] == q["schedule"]) & (df["objective"] == q["objective"])
             & (df["sampler"] == r["sampler"]) & (df["metric"] == metric)]  # fmt: skip
    return seed_values(sel)


def matched_nfe_pairs(nums, metric: str, df=None) -> list[dict]:
    """For every predictor–corrector preset of a cell, the best annealed-Langevin preset (lowest mean
    `metric`) whose NFE is within a factor NFE_MATCH of it; pairs without such a preset are skipped.
    With the study table `df`, each pair carries its Comparison over seeds (`comparison`, PC − annealed)."""
    out = []
    for (ds, sch, obj), cell in nums.groupby(["dataset", "schedule", "objective"]):
        cell = cell[cell[metric].notna()]
        ald = cell[cell["sampler_kind"] == "annealed_langevin"]
        for p in cell[cell["sampler_kind"] == "pc"].sort_values("nfe").to_dict("records"):
            near = ald[(ald["nfe"] <= p["nfe"] * NFE_MATCH) & (ald["nfe"] * NFE_MATCH >= p["nfe"])]
            if near.empty:
                continue
            a = near.sort_values(metric).iloc[0].to_dict()
            q = {"dataset": ds, "schedule": sch, "objective": obj, "pc": p, "ald": a}
            if df is not None:
                (vp, sp), (va, sa) = _seed_rows(df, q, p, metric), _seed_rows(df, q, a, metric)
                q["comparison"] = compare(vp, va, sp, sa)
            out.append(q)
    return out


def _val(r: dict, m: str) -> str:
    return mean_ci_n_text({"mean": r[m], "n": r.get(m + "_n", 1) or 1, "lo": r.get(m + "_lo", math.nan),
                           "hi": r.get(m + "_hi", math.nan)})  # fmt: skip


def _pair_label(q: dict, side: str) -> str:
    return f"`{q[side]['sampler']}` (NFE {q[side]['nfe']})"


def _matched_part(nums, m: str, df) -> tuple[str, list]:
    """The matched-NFE table of one metric and its pairs' comparisons for the section's Holm family."""
    pairs = matched_nfe_pairs(nums, m, df)
    if not pairs:
        return "", []
    name = NFE_METRIC_NAMES[m]
    family = [(_pair_label(q, "pc"), _pair_label(q, "ald"), f"{name}, {q['dataset']} `{q['objective']}`",
               q["comparison"], True) for q in pairs]  # fmt: skip
    return name, list(zip(pairs, family))


def _matched_table(name: str, m: str, pairs_claims) -> str:
    table = (f"Matched NFE on {name} (each PC preset against the best annealed preset within ×{NFE_MATCH:g} of its "
             "NFE; lower is better; better: the Claim's verdict, Holm-corrected over the section):\n\n")  # fmt: skip
    rows = []
    for q, c in pairs_claims:
        better = WINNER_NAMES["tie" if not c.resolved else "pc" if c.direction == "a" else "annealed"]
        rows.append([q["dataset"], q["objective"], f"{q['pc']['sampler']} ({q['pc']['nfe']})", _val(q["pc"], m),
                     f"{q['ald']['sampler']} ({q['ald']['nfe']})", _val(q["ald"], m), better,
                     f"{c.p_holm:.3g}" if c.p_holm == c.p_holm else "n/a"])  # fmt: skip
    return table + markdown_table(["dataset", "objective", "PC preset (NFE)", f"PC {name}", "best annealed (NFE)",
                                   f"annealed {name}", "better", "Holm p"], rows)  # fmt: skip


def _tally(name: str, pairs_claims) -> list[str]:
    out = []
    for obj in sorted({q["objective"] for q, _ in pairs_claims}, key=lambda o: (o != "oracle", o)):
        mine = [(q, c) for q, c in pairs_claims if q["objective"] == obj]
        wins = sum(c.resolved and c.direction == "a" for _, c in mine)
        losses = sum(c.resolved and c.direction == "b" for _, c in mine)
        unresolved = len(mine) - wins - losses
        # a headline only where every budget is resolved one way; otherwise the count is the finding
        verdict = ("predictor–corrector is better at every matched budget" if wins == len(mine)
                   else "annealed Langevin is better at every matched budget" if losses == len(mine)
                   else "no single verdict across budgets")  # fmt: skip
        out.append(f"- {name}, `{obj}`: {verdict}: predictor–corrector better at {wins}, annealed Langevin better at "
                   f"{losses}, not resolved at {unresolved} of {len(mine)} matched budgets (Claims below).")  # fmt: skip
    return out


def section(inputs) -> str:
    df = inputs.table
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
    text.append("Every preset (mean [95 % t-interval] (n) over seeds):\n")
    text.append(markdown_table(header, rows))
    parts = [(m, *_matched_part(nums, m, df)) for m in metrics]
    parts = [p for p in parts if p[1]]
    found = claims([f for _, _, pc in parts for _, f in pc])  # one Holm family: every metric's pairs
    it = iter(found)
    findings = []
    for m, name, pc in parts:
        pairs_claims = [(q, next(it)) for q, _ in pc]
        text.append(_matched_table(name, m, pairs_claims))
        findings += _tally(name, pairs_claims)
    for (ds, obj), cell in nums.groupby(["dataset", "objective"]):
        m = metrics[0]
        best = cell.sort_values(m).iloc[0]
        findings.append(f"- {ds}, `{obj}`: lowest mean {NFE_METRIC_NAMES[m]} overall is {_val(best.to_dict(), m)} "
                        f"(`{best['sampler']}`, {best['family']}, NFE {best['nfe']}; a description, not a claim).")  # fmt: skip
    text.append("Findings:\n")
    text.append("\n".join(findings) + "\n" if findings else "No PC preset has an annealed preset at matched NFE.\n")
    text.append(claims_markdown(found))
    return "\n".join(text)
