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

from scorebench.report import DEFAULT_FIGURES, INPUTS, PAPER_STUDIES, SUMMARY_TABLES, declared_default_figures, paper_studies
from scorebench.report.default_figures import make_default_figures, metric_vs_levels, score_error_by_density
from scorebench.report.plotting import NothingToDraw
from scorebench.report.queries import at_common_sigma, at_sigma_min, first_metric_present, score_error_rows
from scorebench.report.stats import describe, over_seeds
from scorebench.report.summary_tables import summary_table, summary_tables, write_summary_tables
from scorebench.study import Study, validate_config
from scorebench.report.tables import markdown_table, mean_ci_n_text, to_latex
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
    inside = {m for m in graph["scorebench.report"] if m.startswith("scorebench.report.")}
    assert inside == {f"scorebench.report.{s}" for s in PAPER_STUDIES} | {"scorebench.report.requirements"}


# ---------------------------------------------------------------------- queries and statistics


def score_error_table():
    """Two cells × 2 seeds with 3 own σ levels each (σ_min 0.5 and 0.2), the common σ list (0, 0.1, 1;
    value 1000 + σ), plus a grid row that must be ignored."""
    rows = []
    for schedule, sigmas in (("a", (4.0, 1.0, 0.5)), ("b", (2.0, 0.2, 0.8))):
        for seed in (0, 1):
            for sigma_set, sig in (("own", sigmas), ("common", (0.0, 0.1, 1.0))):
                for sigma in sig:
                    base = {"dataset": "d", "schedule": schedule, "objective": "o", "seed": seed, "sampler": "",
                            "sigma": sigma, "sigma_set": sigma_set}  # fmt: skip
                    value = sigma + seed if sigma_set == "own" else 1000 + sigma
                    rows.append({**base, "metric": "score_error_rel", "region": "all", "value": value})
                    rows.append({**base, "metric": "score_error_rel", "region": "grid", "value": -1.0})
    return pd.DataFrame(rows)


def test_score_error_at_sigma_min_is_each_cells_smallest_own_level():
    picked = at_sigma_min(score_error_rows(score_error_table()))
    assert sorted(zip(picked["schedule"], picked["seed"], picked["sigma"])) == [
        ("a", 0, 0.5), ("a", 1, 0.5), ("b", 0, 0.2), ("b", 1, 0.2)]  # fmt: skip
    assert ((picked["value"] >= 0) & (picked["value"] < 1000)).all()  # never a grid row nor a common σ


def test_common_sigma_is_the_smallest_positive_sigma_every_cell_shares():
    df = score_error_rows(score_error_table())
    sigma, rows = at_common_sigma(df)
    assert sigma == 0.1 and len(rows) == 4 and set(rows["value"]) == {1000.1}
    partial = df[~((df["schedule"] == "b") & (df["sigma"] == 0.1))]  # b lacks 0.1: the next shared σ
    assert at_common_sigma(partial)[0] == 1.0
    sigma, rows = at_common_sigma(df.drop(columns=["sigma_set"]))  # an older table has no common σ
    assert math.isnan(sigma) and rows.empty


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


# ---------------------------------------------------------------------- tables


def test_mean_ci_n_text():
    assert mean_ci_n_text({"mean": 0.123456, "n": 3, "lo": 0.1, "hi": 0.15}) == "0.123 [0.1, 0.15] (n = 3)"
    assert mean_ci_n_text(describe([2.0])) == "2 (n = 1)"
    assert mean_ci_n_text(describe([])) == "n/a"


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
    """One toy cell, two samplers, 3 seeds: a sample metric per sampler, score error at two own σ levels
    and at the common σ list; and one image cell (FID, KID) with its own rows."""
    rows = []
    for seed in range(3):
        cell = {"study": "s", "dataset": "mix", "dataset_kind": "gmm_2mode", "schedule": "geom", "objective": "dsm",
                "seed": seed, "bin": -1}  # fmt: skip
        for sampler, mmd in (("ald", 0.1), ("pc", 0.2)):
            rows.append({**cell, "sampler": sampler, "metric": "mmd_rbf", "value": mmd + 0.01 * seed,
                         "region": "", "sigma": math.nan})  # fmt: skip
        for sigma_set, sigma, err in (("own", 1.0, 9.0), ("own", 0.05, 0.5), ("common", 0.1, 0.6), ("common", 1.0, 9.0)):
            rows.append({**cell, "sampler": "", "metric": "score_error_rel", "value": err + 0.1 * seed,
                         "region": "all", "sigma": sigma, "sigma_set": sigma_set})  # fmt: skip
        img = {**cell, "dataset": "img", "dataset_kind": "digits", "sampler": "ald", "region": "", "sigma": math.nan}
        rows.append({**img, "metric": "fid", "value": 30.0 + seed, "extractor": "feature_net"})
        rows.append({**img, "metric": "kid_mean", "value": 0.002 + 0.001 * seed, "extractor": "feature_net"})
    return pd.DataFrame(rows)


def test_summary_tables_split_toys_and_images_with_ci_and_the_common_sigma(tmp_path):
    df = headline_table()
    tables = summary_tables(df)
    assert set(tables) == {"toy", "image"}
    toy, image = tables["toy"], tables["image"]
    assert list(toy.columns) == ["dataset", "schedule", "objective", "sampler", "seeds n", "MMD² (RBF kernel)",
                                 "rel. score error at σ = 0.1 (common)"]  # fmt: skip
    assert list(image.columns) == ["dataset", "schedule", "objective", "sampler", "seeds n", "FID [feature_net]",
                                   "KID ×10³ [feature_net]"]  # no empty toy column among the image's  # fmt: skip
    by_sampler = toy.set_index("sampler")
    for sampler, mmd in (("ald", 0.1), ("pc", 0.2)):
        s = describe([mmd, mmd + 0.01, mmd + 0.02])
        assert by_sampler.loc[sampler, "MMD² (RBF kernel)"] == f"{s.mean:.3g} [{s.lo:.3g}, {s.hi:.3g}]"
        assert by_sampler.loc[sampler, "rel. score error at σ = 0.1 (common)"].startswith("0.7 [")  # common σ, not σ_min
        assert by_sampler.loc[sampler, "seeds n"] == "3"
    assert image.loc[0, "KID ×10³ [feature_net]"].startswith("3 [")  # 0.003 × 10³
    write_summary_tables(df, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert md.index("## Toy datasets") < md.index("## Image datasets")
    assert [r["sampler"] for r in markdown_rows(md, "dataset")] == ["ald", "pc"]
    assert "nan" not in md.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SUMMARY_TABLES)
    assert r"MMD$^2$" in (tmp_path / "summary.tex").read_text()
    assert len(summary_table(df)) == 3


def test_modes_covered_column_holds_the_fraction_its_header_names():
    """mode_coverage is a count (2 of 2 modes), mode_coverage_frac the fraction: the header says fraction."""
    cell = {"study": "s", "dataset": "mix", "dataset_kind": "gmm_2mode", "schedule": "geom", "objective": "dsm",
            "sampler": "ald", "bin": -1, "region": "", "sigma": math.nan}  # fmt: skip
    rows = [{**cell, "seed": seed, "metric": m, "value": v}
            for seed in range(3) for m, v in (("mode_coverage", 2.0), ("mode_coverage_frac", 1.0))]  # fmt: skip
    toy = summary_tables(pd.DataFrame(rows))["toy"]
    (col,) = [c for c in toy.columns if c.startswith("modes covered")]
    assert "fraction" in col and toy.loc[0, col] == "1"


# ---------------------------------------------------------------------- which figures a config declares


def config_study(**changes):
    cfg = {
        "study": "t", "datasets": {"mix": {"kind": "gmm_2mode"}},
        "schedules": {"geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.1, "levels": 3}},
        "objectives": {"dsm": {"kind": "dsm"}},
    }  # fmt: skip
    cfg.update(changes)
    return Study(validate_config(cfg))


def test_registry_declares_only_the_figures_a_config_can_fill():
    one_l = {f.name for f in declared_default_figures(config_study())}
    assert "metric_vs_levels" not in one_l  # a single L: no placeholder, not declared
    assert {"score_error_vs_sigma", "score_error_by_density", "training_curves"} <= one_l
    two_l = config_study(schedules={"a": {"kind": "single", "sigma": 1.0},
                                    "b": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.1, "levels": 4}})
    assert "metric_vs_levels" in {f.name for f in declared_default_figures(two_l)}
    oracle = config_study(objectives={"o": {"kind": "oracle"}})
    assert "training_curves" not in {f.name for f in declared_default_figures(oracle)}
    no_common = config_study(evaluation={"score_error": {"common_sigmas": []}})
    assert "score_error_by_density" not in {f.name for f in declared_default_figures(no_common)}
    assert [f.name for f in declared_default_figures(config_study())] == [f.name for f in DEFAULT_FIGURES if f.name in one_l]


def test_workflow_declares_the_registrys_figures_and_the_summary_in_the_report():
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    rule = (ROOT / "workflow" / "rules" / "aggregate.smk").read_text()
    assert "FIGURES = declared_default_figures(STUDY)" in common
    assert "--only {params.figures}" in rule and 'study_path("tables/summary.md")' in rule
    assert "category=SUMMARY_CATEGORY" in rule
    assert (ROOT / "workflow" / "report" / "summary_tables.rst").is_file()


# ---------------------------------------------------------------------- the figures every study gets


def two_schedule_table():
    """Two schedules whose own σ differ (σ_min 0.5 and 0.05, values 1000+) and the common σ list (0.1, 1)
    with values < 10; both at 2 numbers of levels, with density bins of score_error_norm."""
    rows = []
    for schedule, L, own in (("a", 2, (5.0, 0.5)), ("b", 10, (5.0, 0.05))):
        for seed in range(3):
            cell = {"dataset": "mix", "dataset_kind": "gmm_2mode", "schedule": schedule, "objective": "dsm",
                    "seed": seed, "sampler": "", "schedule_n_levels": L, "schedule_weighting": "sigma2"}  # fmt: skip
            for sigma_set, sigmas, v in (("own", own, 1000.0), ("common", (0.1, 1.0), 1.0)):
                for sigma in sigmas:
                    at = {**cell, "sigma": sigma, "sigma_set": sigma_set}
                    rows.append({**at, "metric": "score_error_rel", "region": "all", "bin": -1, "value": v + seed})
                    for b in range(3):
                        rows.append({**at, "metric": "score_error_norm", "region": "bin", "bin": b,
                                     "bin_by": "log_density_0", "value": v * (3 - b) + seed})  # fmt: skip
    return pd.DataFrame(rows)


def spy(monkeypatch, name):
    """Record the `data` of every seaborn.`name` call (the rows a figure plots)."""
    import seaborn as sns

    seen = []
    original = getattr(sns, name)
    monkeypatch.setattr(sns, name, lambda *a, data=None, **kw: seen.append(data.copy()) or original(*a, data=data, **kw))
    return seen


def test_figures_comparing_schedules_read_one_common_sigma(tmp_path, monkeypatch):
    df = two_schedule_table()
    seen = spy(monkeypatch, "catplot")
    score_error_by_density(df, tmp_path)
    (plotted,) = seen
    assert set(plotted["sigma_set"]) == {"common"} and set(plotted["sigma"]) == {0.1}
    assert set(plotted["schedule"]) == {"a", "b"} and (plotted["value"] < 10).all()
    seen = spy(monkeypatch, "lineplot")
    metric_vs_levels(df, tmp_path)
    (plotted,) = seen
    assert set(plotted["sigma"]) == {0.1} and (plotted["value"] < 10).all()
    with pytest.raises(NothingToDraw):  # an older table without common σ rows: no figure, not a card
        score_error_by_density(df.drop(columns=["sigma_set"]), tmp_path / "old")


@pytest.mark.slow
def test_default_figures_draw_what_is_declared_and_no_placeholder(tmp_path):
    df = headline_table()
    drawn = make_default_figures(df, tmp_path)  # what the table can fill: one L, no curves, no samples
    assert set(drawn) == {"score_error_vs_sigma", "sample_quality"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.{e}" for n in drawn for e in ("png", "pdf"))
    for name in drawn:
        assert (tmp_path / f"{name}.png").stat().st_size > 20000, name  # a drawn figure, not a text card
    with pytest.raises(NothingToDraw, match="metric_vs_levels"):  # declared for a single L: an error
        make_default_figures(df, tmp_path / "x", only=["metric_vs_levels"])
    assert make_default_figures(df, tmp_path / "y", only=[]) == []
