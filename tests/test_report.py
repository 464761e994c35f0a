"""The report's registry and shared pieces (scorebench/report/): every registry entry against the
schema, its captions and its maker functions, study.py reading only the registry; and the queries,
statistics and table writers the figures and sections share."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scorebench.report import DEFAULT_FIGURES, INPUTS, PAPER_STUDIES, SUMMARY_TABLES, paper_studies
from scorebench.report.default_figures import make_default_figures
from scorebench.report.queries import at_sigma_min, first_metric_present, score_error_rows
from scorebench.report.stats import combined_sd, describe, over_seeds
from scorebench.report.summary_tables import summary_table, write_summary_tables
from scorebench.report.tables import markdown_table, mean_sd_text, to_latex
from scorebench.schema import load_schema
from test_layers import import_graph
from test_studies import markdown_rows

ROOT = Path(__file__).resolve().parents[1]
T975_2DF = 4.302652729911275  # Student-t 97.5 % quantile with 2 degrees of freedom (3 seeds)


# ---------------------------------------------------------------------- the registry


def schema_figure_flags() -> set[str]:
    block = load_schema()["properties"]["figures"]["properties"]
    return {name for name, prop in block.items() if prop["type"] == "boolean"}


def test_every_schema_flag_is_a_registered_paper_study_and_back():
    assert set(PAPER_STUDIES) == schema_figure_flags()
    assert all(flag == study.flag for flag, study in PAPER_STUDIES.items())


@pytest.mark.parametrize("study", PAPER_STUDIES.values(), ids=lambda s: s.flag)
def test_paper_study_entry_is_complete(study):
    assert study.figures and set(study.needs) <= set(INPUTS)
    assert all(callable(f) for f in (study.check, study.draw, study.section))
    for figure in study.figure_files:
        assert (ROOT / "workflow" / "report" / figure.caption).is_file(), figure.caption
        assert figure.shown.startswith(figure.name + ".")


def test_figure_names_are_unique_and_captioned():
    names = [f.name for f in DEFAULT_FIGURES] + [n for s in PAPER_STUDIES.values() for n in s.figures]
    assert len(names) == len(set(names))
    for figure in DEFAULT_FIGURES:
        assert (ROOT / "workflow" / "report" / figure.caption).is_file(), figure.caption
    assert [s.flag for s in paper_studies({"animation": True, "levels": True, "sampler_nfe": False})] == ["levels", "animation"]


def test_reading_the_registry_imports_no_plotting_or_table_library():
    """study.py and the Snakefile read the registry (and run every check) on each `snakemake -n`."""
    code = (
        "import sys, scorebench.study as s\n"
        "cfg = s.load_config('config/studies/langevin_vs_annealed.yaml')\n"
        "cfg['figures'].update({flag: True for flag in ('score_fields', 'sampler_nfe', 'levels')})\n"
        "cfg['schedules']['two'] = {'kind': 'geometric', 'sigma_max': 5, 'sigma_min': 0.1, 'levels': 2}\n"
        "study = s.Study(cfg)\n"
        "assert study.paper_figures and study.field_cells\n"
        "print(sorted(m for m in ('matplotlib', 'seaborn', 'pandas', 'scipy', 'numpy', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_study_knows_paper_studies_only_through_the_registry():
    """Layers and cycles are tests/test_layers.py's; here: study.py imports the registry, no study module."""
    graph = import_graph(ROOT / "scorebench")
    assert {m for m in graph["scorebench.study"] if m.startswith("scorebench.report")} == {"scorebench.report"}
    assert {m for m in graph["scorebench.report"]} == {f"scorebench.report.{s}" for s in PAPER_STUDIES}


# ---------------------------------------------------------------------- queries and statistics


def score_error_table():
    """Two cells × 2 seeds with 3 σ levels each (σ_min 0.5 and 0.2), plus a grid row that must be ignored."""
    rows = []
    for schedule, sigmas in (("a", (4.0, 1.0, 0.5)), ("b", (2.0, 0.2, 0.8))):
        for seed in (0, 1):
            for sigma in sigmas:
                base = {"dataset": "d", "schedule": schedule, "objective": "o", "seed": seed, "sampler": "", "sigma": sigma}
                rows.append({**base, "metric": "score_error_rel", "region": "all", "value": sigma + seed})
                rows.append({**base, "metric": "score_error_rel", "region": "grid", "value": -1.0})
    return pd.DataFrame(rows)


def test_score_error_at_sigma_min_is_each_cells_smallest_level():
    picked = at_sigma_min(score_error_rows(score_error_table()))
    assert sorted(zip(picked["schedule"], picked["seed"], picked["sigma"])) == [
        ("a", 0, 0.5), ("a", 1, 0.5), ("b", 0, 0.2), ("b", 1, 0.2)]  # fmt: skip
    assert (picked["value"] >= 0).all()  # never a grid row


def test_first_metric_present_follows_the_preference_order():
    rows = pd.DataFrame({"metric": ["mmd_rbf", "fid", "fid"], "value": [1.0, 2.0, 3.0]})
    metric, found = first_metric_present(rows, ["kid_mean", "fid", "mmd_rbf"])
    assert metric == "fid" and list(found["value"]) == [2.0, 3.0]
    assert first_metric_present(rows, ["kid_mean"]) is None


def test_over_seeds_is_mean_sd_and_t_interval_skipping_missing_values():
    rows = pd.DataFrame({"g": ["x"] * 4 + ["y"], "value": [1.0, 2.0, 4.0, math.nan, 7.0]})
    x, y = over_seeds(rows, ["g"]).to_dict("records")
    v = np.array([1.0, 2.0, 4.0])
    half = T975_2DF * v.std(ddof=1) / math.sqrt(3)
    assert (x["mean"], x["sd"], x["n"]) == (pytest.approx(v.mean()), pytest.approx(v.std(ddof=1)), 3)
    assert (x["lo"], x["hi"]) == (pytest.approx(v.mean() - half), pytest.approx(v.mean() + half))
    assert y["n"] == 1 and math.isnan(y["sd"]) and math.isnan(y["lo"])
    assert describe([]).n == 0 and math.isnan(describe([]).mean)
    assert describe([1.0, 2.0, 4.0, math.nan]) == tuple(x[k] for k in ("mean", "sd", "n", "lo", "hi"))


def test_combined_sd_counts_a_single_seed_as_zero():
    assert combined_sd(0.3, 0.4) == pytest.approx(0.5)
    assert combined_sd(0.3, math.nan) == pytest.approx(0.3)


# ---------------------------------------------------------------------- tables


def test_mean_sd_text():
    assert mean_sd_text(0.123456, 0.01234, 3) == "0.123 ± 0.012"
    assert mean_sd_text(0.123456, 0.01234, 1) == "0.123"
    assert mean_sd_text(1234.5678, 12.0, 2, digits=4) == "1235 ± 12"
    assert mean_sd_text(math.nan) == "n/a"


def test_markdown_keeps_cells_as_written():
    text = markdown_table(["metric", "value"], [["a_b", "1.50"], ["c", "1e-05 ± 2e-06"]])
    rows = markdown_rows(text, "metric")
    assert rows == [{"metric": "a_b", "value": "1.50"}, {"metric": "c", "value": "1e-05 ± 2e-06"}]
    assert text.endswith("\n") and text.count("\n") == 4


def test_latex_escapes_and_writes_symbols_as_math():
    df = pd.DataFrame({"dataset": ["a_b"], "s": ["x"], "o": ["y"], "sampler": ["z"], "MMD² (σ_min)": ["1 ± 0.1"]})
    tex = to_latex(df)
    assert r"\begin{tabular}{llllr}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"a\_b" in tex and r"MMD$^2$ ($\sigma$\_min)" in tex and r"1 $\pm$ 0.1 \\" in tex


# ---------------------------------------------------------------------- the tables and figures every study gets


def headline_table():
    """One cell, two samplers, 3 seeds: a sample metric per sampler and score error at two σ levels."""
    rows = []
    for seed in range(3):
        cell = {"study": "s", "dataset": "mix", "schedule": "geom", "objective": "dsm", "seed": seed, "bin": -1}
        for sampler, mmd in (("ald", 0.1), ("pc", 0.2)):
            rows.append({**cell, "sampler": sampler, "metric": "mmd_rbf", "value": mmd + 0.01 * seed,
                         "region": "", "sigma": math.nan})  # fmt: skip
        for sigma, err in ((1.0, 9.0), (0.1, 0.5)):
            rows.append({**cell, "sampler": "", "metric": "score_error_rel", "value": err + 0.1 * seed,
                         "region": "all", "sigma": sigma})  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_table_is_mean_sd_of_each_cell_and_sampler(tmp_path):
    df = headline_table()
    table = summary_table(df)
    assert list(table.columns) == ["dataset", "schedule", "objective", "sampler", "MMD²", "rel. score error (σ_min)"]
    by_sampler = table.set_index("sampler")
    for sampler, mmd in (("ald", 0.1), ("pc", 0.2)):
        v = pd.Series([mmd, mmd + 0.01, mmd + 0.02])
        assert by_sampler.loc[sampler, "MMD²"] == f"{v.mean():.4g} ± {v.std():.2g}"
        assert by_sampler.loc[sampler, "rel. score error (σ_min)"] == "0.6 ± 0.1"  # σ_min's rows, on every sampler
    write_summary_tables(df, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert [r["sampler"] for r in markdown_rows(md, "dataset")] == ["ald", "pc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SUMMARY_TABLES)
    assert r"MMD$^2$" in (tmp_path / "summary.tex").read_text()


@pytest.mark.slow
def test_default_figures_are_the_registrys(tmp_path):
    make_default_figures(headline_table(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        name for f in DEFAULT_FIGURES for name in (f.shown, *f.other_files))
