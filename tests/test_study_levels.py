"""The `lambda_levels` study (config/studies/lambda_levels*.yaml, scorebench/report/levels.py): the grid is
3 weightings × 6 numbers of levels, every row knows its L, the summary's numbers are the table's and its
verdicts follow them, and the figures are drawn."""

import math
from pathlib import Path

import pandas as pd
import pytest

from scorebench.errors import ScorebenchError
from scorebench.noise import make_schedule
from scorebench.report.inputs import ReportInputs
from scorebench.report.levels import FIGURES, best_cells, level_rows, level_stats, levels_figure
from scorebench.report.paper import make_paper_figures
from scorebench.report.plotting import NothingToDraw
from scorebench.results import schedule_n_levels, spec_columns
from scorebench.study import Cell, Study, load_config, validate_config
from test_studies import markdown_rows, study_summary

ROOT = Path(__file__).resolve().parents[1]
WEIGHTINGS = ("sigma2", "sigma", "uniform")
LEVELS = (1, 2, 10)
SIGMA_MIN = 0.05
COMMON = (1.0, 0.1)  # the study-wide common σ list; comparisons across L read its smallest, 0.1


def sigmas_of(L: int) -> list[float]:
    return make_schedule("single", sigma=SIGMA_MIN).sigmas.tolist() if L == 1 else \
        make_schedule("geometric", sigma_max=5.0, sigma_min=SIGMA_MIN, levels=L).sigmas.tolist()  # fmt: skip


def level_table(base=None, nfe=None, noise=None) -> pd.DataFrame:
    """Rows shaped like the study's: a toy (MMD², sliced W2) and an image dataset (FID) per (λ, L, seed),
    plus score-error rows at every own σ of the cell (99: must never be read across L) and at the common
    σ list (region `all`, and `grid` rows that must be ignored). `base(dataset, weighting, L)` is each
    cell's mean (sample metrics, and /10 the score error at the common σ 0.1); seeds 0, 1, 2 add −1 %, 0,
    +1 % (sd 0.01·base), or with `noise` an independent N(0, noise²) relative error per cell and seed.
    `nfe(L)`: the sampler's NFE (default 20·L + 1, not matched across L)."""
    import numpy as np

    rng = np.random.default_rng(5)
    base = base or (lambda ds, w, L: (1.0 + WEIGHTINGS.index(w)) * (1.0 + abs(math.log(L / 10.0))))
    nfe = nfe or (lambda L: 20.0 * L + 1)
    rows = []
    for ds, metrics in (("ring", ("mmd_rbf", "sliced_wasserstein")), ("img", ("fid",))):
        for w in WEIGHTINGS:
            for L in LEVELS:
                for s in range(3):
                    cell = {"study": "s", "dataset": ds, "schedule": f"{w}_L{L}", "objective": "dsm", "seed": s,
                            "schedule_weighting": w, "schedule_n_levels": L, "git_commit": "abc"}  # fmt: skip
                    b = base(ds, w, L)
                    jitter = (lambda: noise * rng.standard_normal()) if noise else (lambda: 0.01 * (s - 1))
                    smp = {**cell, "sampler": "annealed", "region": "", "sigma": math.nan, "bin": -1,
                           "sample_nfe": nfe(L)}  # fmt: skip
                    rows.append({**smp, "metric": "nfe", "value": nfe(L)})
                    for m in metrics:
                        rows.append({**smp, "metric": m, "value": b * (1 + jitter()),
                                     "extractor": "feature_net" if m == "fid" else None})  # fmt: skip
                    for sigma in sigmas_of(L):
                        err = {**cell, "sampler": "", "sigma": sigma, "bin": -1, "metric": "score_error_rel",
                               "sigma_set": "own"}  # fmt: skip
                        rows.append({**err, "region": "all", "value": 99.0})
                        rows.append({**err, "region": "grid", "value": 77.0})
                    for sigma in COMMON:
                        err = {**cell, "sampler": "", "sigma": sigma, "bin": -1, "metric": "score_error_rel",
                               "sigma_set": "common"}  # fmt: skip
                        rows.append({**err, "region": "all", "value": b / 10 * (1 + jitter())
                                     if sigma == min(COMMON) else 55.0})  # fmt: skip
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------- L of every cell


@pytest.mark.parametrize(
    "preset",
    [{"kind": "none"}, {"kind": "single", "sigma": 0.3}, {"kind": "explicit", "sigmas": [2.0, 1.0, 0.5]},
     {"kind": "geometric", "sigma_max": 5.0, "sigma_min": 0.1, "levels": 7},
     {"kind": "linear", "sigma_max": 5.0, "sigma_min": 0.1, "levels": 4}],
)  # fmt: skip
def test_n_levels_column_is_the_built_schedules_length(preset):
    built = make_schedule(**{k: v for k, v in preset.items() if k != "kind"}, kind=preset["kind"])
    assert schedule_n_levels(preset) == built.levels
    spec = {"study": "s", "cell": "c", "seed": 0, "dataset": {"name": "d"}, "objective": {"name": "o"},
            "schedule": {"name": "x", **preset}}  # fmt: skip
    assert spec_columns(spec)["schedule_n_levels"] == built.levels
    assert schedule_n_levels({"kind": "ncsnv2", "sigma_min": 0.01}) is None  # L derived from the data


def test_level_rows_read_the_score_error_at_one_common_sigma():
    df = level_table()
    rows = level_rows(df)
    se = rows[rows["metric"] == "score_error_rel"]
    assert len(se) == 2 * len(WEIGHTINGS) * len(LEVELS) * 3  # one per cell
    assert (se["value"] < 50).all() and set(se["sigma"]) == {0.1}  # never an own σ (99), other σ (55) nor grid (77)
    assert set(zip(se["weighting"], se["L"])) == {(w, L) for w in WEIGHTINGS for L in LEVELS}
    assert set(rows.loc[rows["metric"] == "fid", "extractor"]) == {"feature_net"}
    assert set(rows.loc[rows["metric"] == "mmd_rbf", "nfe"]) == {20.0 * L + 1 for L in LEVELS}
    old = level_rows(df.drop(columns=["sigma_set"]))  # an older table: no common σ, no score error across L
    assert (old["metric"] != "score_error_rel").all()


# ---------------------------------------------------------------------- summary


def test_best_cell_table_is_the_tables_argmin_at_matched_nfe():
    df = level_table(nfe=lambda L: 201.0)  # a budget: every L at the same NFE
    text = study_summary(df, levels=True)
    table = markdown_rows(text, "dataset", "metric")
    rows = level_rows(df)
    assert len(table) == 5  # ring: MMD², sliced W2, score error; img: FID, score error
    for r in table:
        metric = {"MMD²": "mmd_rbf", "sliced W2": "sliced_wasserstein", "FID [feature_net]": "fid",
                  "rel. score error at σ = 0.1": "score_error_rel"}[r["metric"]]  # fmt: skip
        sel = rows[(rows["dataset"] == r["dataset"]) & (rows["metric"] == metric)]
        means = sel.groupby(["weighting", "L"])["value"].mean().sort_values()
        (w1, l1), (w2, l2) = means.index[:2]
        assert f"L = {l1}" in r["best λ, L"] and f"L = {l2}" in r["runner-up λ, L"]
        best = sel[(sel["weighting"] == w1) & (sel["L"] == l1)]["value"]
        assert r["best"].startswith(f"{best.mean():.3g} [") and r["best"].endswith("(n = 3)")
        assert r["resolved"] == "yes"  # 2 × apart with a 1 % spread over 3 paired seeds
    assert {r["dataset"] for r in table} == {"ring", "img"}


def test_cells_at_different_nfe_are_never_compared_on_sample_quality():
    stats = level_stats(level_rows(level_table()))  # NFE 21, 41, 201: no two L within ×1.1
    for b in best_cells(stats):
        if b["metric"] != "score_error_rel":
            assert b["second"] is None or b["second"]["L"] == b["best"]["L"]
        else:  # the score error has no NFE: every cell is comparable (at the common σ)
            assert b["second"] is not None
    text = study_summary(level_table(), levels=True)
    assert "not matched across L" in text


def test_claims_resolve_planted_differences_and_refuse_noise():
    helps = study_summary(level_table(nfe=lambda L: 201.0), levels=True)
    claims = [line for line in helps.splitlines() if line.startswith("- ") and "Holm p" in line]
    assert claims and "**Claims**" in helps
    # λ = σ² is half of λ = σ at every L (1 % noise): resolved, named with its test and n
    assert any("λ(σ) = σ², L = 10 (NFE 201) better than λ(σ) = σ, L = 10 (NFE 201) (paired t, n = 3" in c for c in claims)
    # equal means, 20 % independent noise per seed: nothing may be claimed (Holm over the whole family)
    flat = study_summary(level_table(base=lambda ds, w, L: 1.0, nfe=lambda L: 201.0, noise=0.2), levels=True)
    flat_claims = [line for line in flat.splitlines() if line.startswith("- ") and "Holm p" in line]
    assert flat_claims and all("not resolved" in c for c in flat_claims)
    assert not any("better than" in c for c in flat_claims)


def test_levels_section_without_level_rows_says_so():
    df = level_table().drop(columns=["schedule_n_levels"])
    assert "no rows with a known number of σ levels" in study_summary(df, levels=True)


# ---------------------------------------------------------------------- figures


def test_levels_figures_are_drawn_and_none_is_a_placeholder(tmp_path):
    df = level_table()
    written = make_paper_figures(ReportInputs(df, settings={"levels": True}, figures_dir=tmp_path))
    assert [p.name for p in written] == [f"{n}.{e}" for n in FIGURES for e in ("png", "pdf")]
    for name in FIGURES:
        assert (tmp_path / f"{name}.png").stat().st_size > 20000, name
    toy = df[df["dataset"] == "ring"]
    written = make_paper_figures(ReportInputs(toy, settings={"levels": True}, figures_dir=tmp_path / "toy"))
    assert "levels_fid.png" not in {p.name for p in written} and not (tmp_path / "toy" / "levels_fid.png").exists()
    with pytest.raises(NothingToDraw, match="levels_fid"):  # declared but without rows: an error, not a card
        make_paper_figures(ReportInputs(toy, settings={"levels": True}, figures_dir=tmp_path / "t2",
                                        wanted=("levels_fid",)))  # fmt: skip


def test_levels_score_error_figure_plots_only_the_common_sigma_rows(tmp_path, monkeypatch):
    import seaborn as sns

    seen = []
    original = sns.lineplot
    monkeypatch.setattr(sns, "lineplot", lambda data, **kw: seen.append(data.copy()) or original(data=data, **kw))
    levels_figure(level_table(), tmp_path, "levels_score_error")
    plotted = pd.concat(seen)
    assert len(plotted) == 2 * len(WEIGHTINGS) * len(LEVELS) * 3 and (plotted["value"] < 50).all()
    assert set(plotted["sigma"]) == {0.1}


# ---------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["lambda_levels", "lambda_levels_cluster"])
def test_configs_are_the_full_weighting_by_levels_grid(name):
    study = Study(load_config(ROOT / "config" / "studies" / f"{name}.yaml"))
    c = study.config
    grid = [(s["weighting"], schedule_n_levels(s)) for s in c["schedules"].values()]
    assert sorted(grid) == sorted((w, L) for w in WEIGHTINGS for L in (1, 2, 5, 10, 20, 50))
    smallest = {s["sigma"] if s["kind"] == "single" else s["sigma_min"] for s in c["schedules"].values()}
    assert len(smallest) == 1  # every cell shares σ_min: score error and the last sampling level compare
    assert len(c["seeds"]) >= 3 and [o["kind"] for o in c["objectives"].values()] == ["dsm"]
    assert [s["kind"] for s in c["sampling"]["samplers"].values()] == ["annealed_langevin"]
    kinds = {d["kind"] for d in c["datasets"].values()}
    assert kinds & {"gmm_ring8", "gmm_2mode"} and kinds & {"digits", "mnist", "cifar10"}
    for ds in c["datasets"]:
        seeds = {cell.seed for cell in study.cells if cell.dataset == ds}
        assert len(seeds) >= 3 and len({cell.schedule for cell in study.cells if cell.dataset == ds}) == 18
    if name.endswith("_cluster"):
        assert c["sampling"]["n_samples"] >= 50000 and c["evaluation"]["fid"]["extractor"] == "inception"
        assert study.model_settings("mnist")["arch"] in ("ncsn", "unet")
    else:
        assert study.training_settings("digits")["pack"] and study.model_settings("digits")["arch"] == "mlp"


def tiny(schedules):
    cfg = {"study": "t", "datasets": {"mix": {"kind": "gmm_2mode"}}, "schedules": schedules,
           "objectives": {"dsm": {"kind": "dsm"}}, "figures": {"levels": True},
           "sampling": {"samplers": {"annealed": {"kind": "annealed_langevin", "step_ratio": 1.0}}}}  # fmt: skip
    return Study(validate_config(cfg))


def test_levels_figures_need_two_known_numbers_of_levels():
    one = {"a": {"kind": "single", "sigma": 0.1}, "b": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.1, "levels": 1}}
    with pytest.raises(ScorebenchError, match="figures/levels: needs schedules with at least 2"):
        tiny(one)
    with pytest.raises(ScorebenchError, match="figures/levels: schedule 'v2' does not fix"):
        tiny({**one, "v2": {"kind": "ncsnv2", "sigma_min": 0.1}})
    study = tiny({**one, "c": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.1, "levels": 3}})
    names = [f.name for f in study.paper_figures]  # a toy-only study: no FID figure is declared
    assert names[:2] == ["levels_mmd", "levels_sliced_wasserstein"] and "levels_fid" not in names
    assert spec_columns(study.train_spec(Cell("mix", "a", "dsm", 0)))["schedule_n_levels"] == 1
