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
from scorebench.report.levels import FIGURES, best_cells, level_rows
from scorebench.report.paper import make_paper_figures
from scorebench.results import schedule_n_levels, spec_columns
from scorebench.study import Cell, Study, load_config, validate_config
from test_studies import markdown_rows, study_summary

ROOT = Path(__file__).resolve().parents[1]
WEIGHTINGS = ("sigma2", "sigma", "uniform")
LEVELS = (1, 2, 10)
SIGMA_MIN = 0.05


def sigmas_of(L: int) -> list[float]:
    return make_schedule("single", sigma=SIGMA_MIN).sigmas.tolist() if L == 1 else \
        make_schedule("geometric", sigma_max=5.0, sigma_min=SIGMA_MIN, levels=L).sigmas.tolist()  # fmt: skip


def level_table(base=None) -> pd.DataFrame:
    """Rows shaped like the study's: a toy (MMD², sliced W2) and an image dataset (FID) per (λ, L, seed),
    plus score-error rows at every σ of the cell (region `all`, and `grid` rows that must be ignored).
    `base(dataset, weighting, L)` is each cell's mean; seeds 0, 1, 2 add −1 %, 0, +1 % (sd 0.01·base)."""
    base = base or (lambda ds, w, L: (1.0 + WEIGHTINGS.index(w)) * (1.0 + abs(math.log(L / 10.0))))
    rows = []
    for ds, metrics in (("ring", ("mmd_rbf", "sliced_wasserstein")), ("img", ("fid",))):
        for w in WEIGHTINGS:
            for L in LEVELS:
                for s in range(3):
                    cell = {"study": "s", "dataset": ds, "schedule": f"{w}_L{L}", "objective": "dsm", "seed": s,
                            "schedule_weighting": w, "schedule_n_levels": L, "git_commit": "abc"}  # fmt: skip
                    b = base(ds, w, L)
                    smp = {**cell, "sampler": "annealed", "region": "", "sigma": math.nan, "bin": -1}
                    rows.append({**smp, "metric": "nfe", "value": 20.0 * L + 1})
                    for m in metrics:
                        rows.append({**smp, "metric": m, "value": b * (1 + 0.01 * (s - 1)),
                                     "extractor": "feature_net" if m == "fid" else None})  # fmt: skip
                    for sigma in sigmas_of(L):
                        err = {**cell, "sampler": "", "sigma": sigma, "bin": -1, "metric": "score_error_rel"}
                        rows.append({**err, "region": "all", "value": b / 10 * (1 + 0.01 * (s - 1))
                                     if sigma == min(sigmas_of(L)) else 99.0})  # fmt: skip
                        rows.append({**err, "region": "grid", "value": 77.0})
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


def test_level_rows_take_each_cells_score_error_at_its_smallest_sigma():
    df = level_table()
    rows = level_rows(df)
    se = rows[rows["metric"] == "score_error_rel"]
    assert len(se) == 2 * len(WEIGHTINGS) * len(LEVELS) * 3  # one per cell
    assert (se["value"] < 50).all()  # never a larger σ (99) nor a grid row (77)
    assert set(zip(se["weighting"], se["L"])) == {(w, L) for w in WEIGHTINGS for L in LEVELS}
    assert set(rows.loc[rows["metric"] == "fid", "extractor"]) == {"feature_net"}
    assert set(rows.loc[rows["metric"] == "mmd_rbf", "nfe"]) == {20.0 * L + 1 for L in LEVELS}


# ---------------------------------------------------------------------- summary


def test_best_cell_table_is_the_tables_argmin_with_its_numbers():
    df = level_table()
    text = study_summary(df, levels=True)
    table = markdown_rows(text, "dataset")
    rows = level_rows(df)
    assert len(table) == 5  # ring: MMD², sliced W2, score error; img: FID, score error
    for r in table:
        metric = {"MMD²": "mmd_rbf", "sliced W2": "sliced_wasserstein", "FID [feature_net]": "fid",
                  "rel. score error at σ_min": "score_error_rel"}[r["metric"]]  # fmt: skip
        sel = rows[(rows["dataset"] == r["dataset"]) & (rows["metric"] == metric)]
        means = sel.groupby(["weighting", "L"])["value"].mean().sort_values()
        (w1, l1), (w2, l2) = means.index[:2]
        assert r["best λ, L"].endswith(f"L = {l1}") and r["runner-up λ, L"].endswith(f"L = {l2}")
        best = sel[(sel["weighting"] == w1) & (sel["L"] == l1)]["value"]
        assert r["best"] == f"{best.mean():.3g} ± {best.std():.2g}"
        assert float(r["gap"]) == pytest.approx(means.iloc[1] - means.iloc[0], rel=1e-2)
    assert {r["dataset"] for r in table} == {"ring", "img"}


def test_best_cells_resolve_a_gap_only_beyond_the_seeds_sd():
    stats = pd.DataFrame(
        [{"dataset": "d", "metric": "fid", "extractor": "", "objective": "dsm", "sampler": "a", "weighting": w,
          "L": L, "mean": m, "sd": sd, "n": 3, "nfe": math.nan} for w, L, m, sd in
         [("sigma2", 10, 1.0, 0.1), ("sigma", 10, 1.2, 0.1), ("uniform", 1, 5.0, 0.1)]]
    )  # fmt: skip
    (b,) = best_cells(stats)
    assert (b["best"]["weighting"], b["second"]["weighting"], b["gap"]) == ("sigma2", "sigma", pytest.approx(0.2))
    assert b["resolved"]  # 0.2 > √(0.1² + 0.1²) ≈ 0.141
    stats.loc[1, "mean"] = 1.1
    assert not best_cells(stats)[0]["resolved"]  # 0.1 < 0.141


def test_findings_follow_the_numbers():
    helps = study_summary(level_table(), levels=True)
    assert "(more levels help)" in helps and "no drop" not in helps
    assert "Lowest weighting per L: λ(σ) = σ² at 3 of 3 (L = 1, 2, 10)." in helps  # base: σ² < σ < 1 by 2×
    assert "Best sample-quality cells (3 dataset × metric pairs): λ(σ) = σ² in 3; at L = 10; never the smallest L = 1." in helps
    first_best = level_table(base=lambda ds, w, L: 1.0 + L)  # L = 1 lowest everywhere
    text = study_summary(first_best, levels=True)
    assert "λ(σ) = σ²: 2 ± 0.02 at L = 1 is already its lowest" in text and "more levels help" not in text
    flat = level_table(base=lambda ds, w, L: 1.0 + 0.001 * (L == 1))  # differences inside the seed noise
    text = study_summary(flat, levels=True)
    assert "(no drop beyond the seeds' spread)" in text and "(more levels help)" not in text
    assert "no weighting ahead of the next by more than the seeds' combined sd at L = 1, 2, 10" in text


def test_levels_section_without_level_rows_says_so():
    df = level_table().drop(columns=["schedule_n_levels"])
    assert "no rows with a known number of σ levels" in study_summary(df, levels=True)


# ---------------------------------------------------------------------- figures


def test_levels_figures_are_drawn(tmp_path):
    df = level_table()
    written = make_paper_figures(ReportInputs(df, settings={"levels": True}, figures_dir=tmp_path))
    assert [p.name for p in written] == [f"{n}.{e}" for n in FIGURES for e in ("png", "pdf")]
    for name in FIGURES:
        assert (tmp_path / f"{name}.png").stat().st_size > 20000, name  # drawn, not the one-line empty note
    make_paper_figures(ReportInputs(df[df["dataset"] == "ring"], settings={"levels": True}, figures_dir=tmp_path / "toy"))
    assert (tmp_path / "toy" / "levels_fid.png").stat().st_size < 20000  # no FID rows: the note


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
    assert [f.name for f in study.paper_figures] == list(FIGURES)
    assert spec_columns(study.train_spec(Cell("mix", "a", "dsm", 0)))["schedule_n_levels"] == 1
