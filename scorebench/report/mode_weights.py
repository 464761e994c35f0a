"""Paper study `mode_weights`: plain vs annealed Langevin on a Gaussian mixture (Song & Ermon 2019,
Fig. 3: without annealing the samples find the modes but not their weights).

- `sampler_samples_figure`: each sampler's samples over the true density, first seed;
- `mode_weights_figure`: the fraction of samples per mode (and off-mode) against the true weights;
- `section`: the fractions per cell and sampler (n, mean, 95 % CI), and as Claims (one Holm family)
  whether annealing gets the heavy mode's weight closer than plain Langevin (paired by seed).
"""

from __future__ import annotations

import math

from pathlib import Path

from scorebench.data.registry import MIXTURE_DATASETS
from scorebench.report.job_files import first_seed_samples, sample_cell
from scorebench.report.plotting import (AXIS_LABELS, DENSITY_RANGE, NothingToDraw, draw_each, mixture_log_density,
                                        pyplot, save_figure)  # fmt: skip
from scorebench.report.queries import sampler_kinds
from scorebench.report.stats import claims, claims_markdown, compare, describe, seed_values, t_interval
from scorebench.report.tables import markdown_table, mean_ci_n_text

FIGURES = ("sampler_samples", "mode_weights")
SAMPLER_KINDS = {"langevin": "plain Langevin", "annealed_langevin": "annealed Langevin", "pc": "predictor–corrector"}


def check(study) -> str | None:
    """Mode weights exist only for mixtures with known components."""
    kinds = {d["kind"] for d in study.config["datasets"].values()}
    if not kinds & set(MIXTURE_DATASETS):
        return "needs a Gaussian-mixture dataset (" + ", ".join(MIXTURE_DATASETS) + ")"
    return None



def produces(study) -> tuple[str, ...]:
    """Every figure needs samples: none for a study without samplers."""
    return FIGURES if study.samplers else ()

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

    plt, _ = pyplot()
    files = first_seed_samples(p for p in sample_files if sample_cell(Path(p))[0] in mixtures)
    if not files:
        raise NothingToDraw(name, "no samples of a Gaussian-mixture dataset")
    rows_keys = sorted({sample_cell(p)[:3] for p in files})
    samplers = sorted({sample_cell(p)[4] for p in files})
    kinds = sampler_kinds(df)
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
        lp = mixture_log_density(mix, xs, ys)
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
    save_figure(fig, out_dir, name)


def mode_weights_figure(df, mixtures: dict, out_dir: Path, name: str = "mode_weights") -> None:
    """Fraction of samples per mode (and off-mode) for each objective and sampler, against the true
    weights (dashed lines); bars: mean over seeds, error bars: 95 % t-interval."""
    plt, sns = pyplot()
    d = mode_weight_rows(df, mixtures)
    if d.empty:
        raise NothingToDraw(name, "no mode-weight rows (needs a Gaussian-mixture dataset)")
    d = d.copy()
    panels = sorted(d.groupby(["dataset", "schedule", "objective"]).groups)
    cols = min(4, len(panels))
    n_rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.6 * cols, 4.2 * n_rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    palette = sns.color_palette("deep")
    for ax, (ds, sch, obj) in zip(axes.flat, panels):
        mix = mixtures[ds]
        k_all = len(mix["weights"])
        labels = {f"mode_weight_{k}": _mode_label(mix, k) for k in range(k_all)}
        labels["mode_off_fraction"] = "off-mode (> 3 std from every mean)"
        rows = d[(d["dataset"] == ds) & (d["schedule"] == sch) & (d["objective"] == obj)].copy()
        rows["component"] = rows["metric"].map(labels)
        hue_order = [labels[m] for m in labels]
        colors = dict(zip(hue_order, palette))
        sns.barplot(data=rows, x="sampler", y="value", hue="component", hue_order=hue_order, palette=colors,
                    order=sorted(rows["sampler"].unique()), errorbar=t_interval, ax=ax)  # fmt: skip
        for k in range(k_all):
            ax.axhline(mix["weights"][k], color=colors[labels[f"mode_weight_{k}"]], ls="--", lw=1.2)
        ax.set_title(f"{ds} · {sch} · {obj}", fontsize=10)
        ax.set_xlabel("sampler")
        ax.set_ylabel("fraction of samples (dashed: true weight)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Mode weights: plain vs annealed Langevin (bars: mean over seeds, 95% t-interval)", y=1.02)
    fig.tight_layout()
    save_figure(fig, out_dir, name)


def figures(inputs) -> list[str]:
    return draw_each({
        "sampler_samples": lambda: sampler_samples_figure(inputs.samples, inputs.table, inputs.mixtures, inputs.figures_dir),
        "mode_weights": lambda: mode_weights_figure(inputs.table, inputs.mixtures, inputs.figures_dir),
    }, inputs.wanted)  # fmt: skip


# ---------------------------------------------------------------------- summary section


def mode_weight_numbers(df, mixtures: dict) -> list[dict]:
    """Fraction of samples per mode and off-mode, and the mode-weight TV error, per cell and sampler
    (SeedStats over seeds; `heavy_seeds`: the per-seed heavy-mode fractions, for comparisons)."""
    d = mode_weight_rows(df, mixtures)
    tv = df[(df["metric"] == "mode_weight_error") & (df["sampler"] != "")]
    kinds = sampler_kinds(df)
    out = []
    for (ds, sch, obj, smp), rows in d.groupby(["dataset", "schedule", "objective", "sampler"]):
        k_all = len(mixtures[ds]["weights"])
        t = tv[(tv["dataset"] == ds) & (tv["schedule"] == sch) & (tv["objective"] == obj) & (tv["sampler"] == smp)]
        out.append({
            "dataset": ds, "schedule": sch, "objective": obj, "sampler": smp, "sampler_kind": kinds.get(smp, ""),
            "weights": [describe(rows.loc[rows["metric"] == f"mode_weight_{k}", "value"]) for k in range(k_all)],
            "off": describe(rows.loc[rows["metric"] == "mode_off_fraction", "value"]), "tv": describe(t["value"]),
            "heavy_seeds": seed_values(rows[rows["metric"] == f"mode_weight_{_heavy(mixtures[ds])}"]),
        })  # fmt: skip
    return out


def _heavy(mix: dict) -> int:
    w = [float(v) for v in mix["weights"]]
    return max(range(len(w)), key=lambda k: w[k])


def _text(s) -> str:
    return mean_ci_n_text(s)


def _dataset_part(ds: str, mix: dict, mine: list[dict], family: list) -> tuple[str, list[str]]:
    """One mixture dataset's table and findings: the heavy mode's fraction per sampler kind; annealed
    against plain Langevin per objective (|heavy fraction − true weight| per seed) joins `family`."""
    w = [float(v) for v in mix["weights"]]
    heavy = max(range(len(w)), key=lambda k: w[k])
    header = ["schedule", "objective", "sampler", "kind"]
    header += [f"mode {k} ({', '.join(f'{v:g}' for v in mix['means'][k])}), true {w[k]:.2g}" for k in range(len(w))]
    header += ["off-mode", "TV error"]
    rows = [[r["schedule"], r["objective"], r["sampler"], r["sampler_kind"], *[_text(s) for s in r["weights"]],
             _text(r["off"]), _text(r["tv"])] for r in mine]  # fmt: skip
    table = f"{ds}: fraction of all samples per mode (mean [95 % t-interval] (n) over seeds):\n\n" + markdown_table(header, rows)
    findings = []
    by_kind: dict = {}
    for r in mine:
        by_kind.setdefault(r["sampler_kind"], []).append(r)
    for kind in sorted(by_kind, key=lambda k: list(SAMPLER_KINDS).index(k) if k in SAMPLER_KINDS else 9):
        parts = [f"{_text(r['weights'][heavy])} with `{r['schedule']}` / `{r['objective']}`" for r in by_kind[kind]]
        findings.append(
            f"- {ds}: {SAMPLER_KINDS.get(kind, kind)} (`{by_kind[kind][0]['sampler']}`) puts "
            + ", ".join(parts) + f" of its samples in the heavy mode (true {w[heavy]:.2g})."
        )
    plain = {(r["schedule"], r["objective"]): r for r in by_kind.get("langevin", [])}
    for r in by_kind.get("annealed_langevin", []):
        p = plain.get((r["schedule"], r["objective"]))
        if p is None:
            continue
        a_err, p_err = abs(r["weights"][heavy].mean - w[heavy]), abs(p["weights"][heavy].mean - w[heavy])
        findings.append(
            f"- {ds}, `{r['schedule']}` / `{r['objective']}`: the mean heavy-mode fraction is off the true weight by {a_err:.2g} with "
            f"annealed Langevin and {p_err:.2g} with plain Langevin (whether annealing is closer: Claims)."
        )
        (va, sa), (vp, sp) = r["heavy_seeds"], p["heavy_seeds"]
        family.append((f"annealed `{r['sampler']}`", f"plain `{p['sampler']}`",
                       f"{ds}, `{r['schedule']}` / `{r['objective']}`, |heavy-mode fraction − true {w[heavy]:.2g}|",
                       compare(abs(va - w[heavy]), abs(vp - w[heavy]), sa, sp), True))  # fmt: skip
    return table, findings


def section(inputs) -> str:
    nums = mode_weight_numbers(inputs.table, inputs.mixtures)
    text = ["## Plain vs annealed Langevin: mode weights\n"]
    text.append(
        "`figures/sampler_samples.png` shows the samples of each sampler over the true density (first seed); "
        "`figures/mode_weights.png` the fraction of samples nearest each mode (within 3 component stds; the rest "
        "is off-mode) against the true weights (Song & Ermon 2019, Fig. 3: Langevin dynamics without annealing "
        "finds the modes but not their weights).\n"
    )
    if not nums:
        return "\n".join(text + ["The study table has no mode-weight rows.\n"])
    findings, family = [], []
    for ds in sorted({r["dataset"] for r in nums}):
        table, found = _dataset_part(ds, inputs.mixtures[ds], [r for r in nums if r["dataset"] == ds], family)
        text.append(table)
        findings += found
    text.append("Findings:\n")
    text.append("\n".join(findings) + "\n")
    text.append(claims_markdown(claims(family)))
    return "\n".join(text)
