"""The `objectives` study: the N-D mixture toy against its math, the dimension-dependent config
checks, and the numbers, figure and summary of scorebench/report/objectives.py on synthetic tables."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_data import central_difference_grad

from scorebench.jobs.evaluate import evaluate_samples_job, score_error_job
from scorebench.jobs.sample import sample_job
from scorebench.jobs.train import train_job
from scorebench.data import load_dataset
from scorebench.errors import ScorebenchError
from scorebench.data.registry import GMM_ND_DEFAULT_DIM
from scorebench.report.inputs import ReportInputs
from scorebench.report.objectives import objective_numbers, objectives_figure, per_seed_values, section
from scorebench.report.stats import describe, loglog_slope
from scorebench.study import Cell, Study, validate_config
from test_studies import markdown_rows

T975_2DF = 4.302652729911275  # Student-t 97.5 % quantile with 2 degrees of freedom (3 seeds)


# ---------------------------------------------------------------------- the gmm_nd dataset


@pytest.mark.parametrize("dim, n_modes", [(1, 2), (3, 5), (8, 4), (32, 4)])
def test_gmm_nd_score_is_gradient_of_log_density(dim, n_modes, gen):
    dist = load_dataset("gmm_nd", dim=dim, n_modes=n_modes, radius=3.0, std=0.7, n_train=10, n_test=10).distribution
    for sigma in (0.0, 0.1, 1.0, 10.0):
        near = dist.sample(12, sigma=sigma, generator=gen)
        near = near + 0.05 * torch.randn(near.shape, dtype=torch.float64, generator=gen)
        far = 20.0 * torch.randn(4, dim, dtype=torch.float64, generator=gen)
        x = torch.cat([near, far])
        h = 1e-4 * math.sqrt(0.7**2 + sigma**2)
        fd = central_difference_grad(lambda y: dist.log_prob(y, sigma), x, h)
        torch.testing.assert_close(dist.score(x, sigma), fd, rtol=1e-5, atol=1e-9, msg=f"D={dim} sigma={sigma}")


def test_gmm_nd_log_density_is_the_mixture_formula(gen):
    """log p_σ(x) = log Σ_k w_k N(x; μ_k, (s² + σ²) I), written out with the means on ±r·e_i."""
    dim, r, s = 6, 4.0, 1.0
    dist = load_dataset("gmm_nd", dim=dim, n_modes=3, radius=r, n_train=10, n_test=10).distribution
    means = np.zeros((3, dim))
    means[0, 0], means[1, 0], means[2, 1] = r, -r, r
    x = torch.randn(20, dim, dtype=torch.float64, generator=gen) * 3
    for sigma in (0.0, 0.5, 5.0):
        v = s**2 + sigma**2
        d2 = ((x.numpy()[:, None, :] - means[None]) ** 2).sum(-1)
        logp = np.log(np.exp(-d2 / (2 * v)).mean(1)) - 0.5 * dim * np.log(2 * np.pi * v)
        np.testing.assert_allclose(dist.log_prob(x, sigma).numpy(), logp, rtol=1e-10)


def test_gmm_nd_samples_have_the_mixture_covariance(gen):
    """Cov[p_σ] = (s² + σ²) I + Σ_k w_k μ_k μ_kᵀ (the means sum to 0): r²/2 extra on the two mode axes."""
    ds = load_dataset("gmm_nd", dim=8, n_train=10, n_test=10)
    for sigma in (0.0, 2.0):
        y = ds.distribution.sample(100000, sigma=sigma, generator=gen)
        expected = torch.diag(torch.tensor([1 + sigma**2 + 8.0] * 2 + [1 + sigma**2] * 6, dtype=torch.float64))
        torch.testing.assert_close(torch.cov(y.T), expected, rtol=0.0, atol=0.04 * (1 + sigma**2 + 8))
    assert ds.shape == (8,) and ds.kind == "toy" and ds.train.dtype == torch.float32
    assert ds.info["family"] == "gaussian_mixture_nd"  # no 2-D mode-weight radius in N-D
    torch.testing.assert_close(load_dataset("gmm_nd", dim=8, seed=3).train, load_dataset("gmm_nd", dim=8, seed=3).train)


def test_gmm_nd_default_dimension_is_the_study_default():
    assert load_dataset("gmm_nd", n_train=4, n_test=4).dim == GMM_ND_DEFAULT_DIM


@pytest.mark.parametrize(
    "options, match",
    [({"dim": 0}, "dim"), ({"dim": 2, "n_modes": 5}, "n_modes"), ({"std": 0.0}, "std"), ({"dims": 3}, "dims")],
)
def test_gmm_nd_bad_options_are_refused_by_name(options, match):
    with pytest.raises(ScorebenchError, match=match):
        load_dataset("gmm_nd", **options)


# ---------------------------------------------------------------------- config checks


def nd_config(dims=(2, 8), objectives=None, **changes):
    cfg = {
        "study": "obj",
        "datasets": {f"d{d}": {"kind": "gmm_nd", "options": {"dim": d, "n_train": 200, "n_test": 100}} for d in dims},
        "schedules": {"geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}},
        "objectives": objectives or {"exact": {"kind": "exact"}, "dsm": {"kind": "dsm"}},
        "training": {"steps": 2, "batch_size": 16, "device": "cpu", "log_every": 1},
        "sampling": {"n_samples": 50, "samplers": {"ald": {"kind": "annealed_langevin", "n_steps": 2, "noiseless_step_size": 0.5}}},
        "evaluation": {"score_error": {"n_points": 40, "n_bins": 2, "grid_size": 8}},
        "figures": {"objectives": True},
    }  # fmt: skip
    cfg.update(changes)
    return Study(validate_config(cfg))


def test_exact_is_refused_above_max_dim_of_the_options_dimension():
    assert len(nd_config(dims=(2, 128)).cells) == 4  # D = 128 is the default max_dim itself
    with pytest.raises(ScorebenchError, match="exact score matching on 129 dimensions exceeds max_dim 128"):
        nd_config(dims=(2, 129))
    with pytest.raises(ScorebenchError, match="exceeds max_dim 16"):
        nd_config(dims=(2, 32), objectives={"exact": {"kind": "exact", "max_dim": 16}, "dsm": {"kind": "dsm"}})
    study = nd_config(dims=(2, 129), exclude=[{"dataset": "d129", "objective": "exact"}])
    assert {(c.dataset, c.objective) for c in study.cells} == {("d2", "exact"), ("d2", "dsm"), ("d129", "dsm")}


def test_nd_toy_is_a_toy_but_not_planar():
    study = nd_config(figures={"objectives": True, "score_fields": True}, schedules={
        "none": {"kind": "none"}, "geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}},
        objectives={"exact": {"kind": "exact"}, "ssm": {"kind": "sliced"}})  # fmt: skip
    assert study.is_toy("d8") and not study.is_2d_toy("d8") and study.is_2d_toy("d2")
    assert study.model_settings("d8")["arch"] == "mlp" and "root" not in study.dataset_spec("d8")["options"]
    assert {c.dataset for c in study.field_cells} == {"d2"}  # score fields are drawn in the plane only


@pytest.mark.parametrize(
    "figures, sampling, match",
    [
        ({"score_fields": True}, {}, "figures/score_fields: needs a 2-D toy dataset"),
        ({"animation": True}, {"snapshots": 4, "samplers": {"a": {"kind": "annealed_langevin"}}}, "figures/animation"),
    ],
)
def test_planar_figures_are_refused_for_nd_only_studies(figures, sampling, match):
    with pytest.raises(ScorebenchError, match=match):
        nd_config(dims=(8, 32), figures=figures, sampling=sampling)


def test_objectives_figure_needs_two_dimensions_and_two_objectives():
    with pytest.raises(ScorebenchError, match="figures/objectives: needs datasets of at least two known dimensions"):
        nd_config(dims=(8,))
    with pytest.raises(ScorebenchError, match="figures/objectives"):
        nd_config(objectives={"dsm": {"kind": "dsm"}, "oracle": {"kind": "oracle"}})
    with pytest.raises(ScorebenchError, match="datasets/d3/options/dim"):
        nd_config(datasets={"d3": {"kind": "gmm_nd", "options": {"dim": "3"}}})


@pytest.mark.slow
def test_nd_cell_trains_samples_and_is_scored_by_mmd_and_sliced_wasserstein(tmp_path):
    """One 8-D cell through train, sample, evaluate and score error: the table has MMD and SW₂ (and no
    2-D mode metrics), score error per σ level, and the training cost the study's seconds/step reads."""
    study = nd_config()
    cell = Cell("d8", "geom", "exact", 0)
    spec = study.train_spec(cell)
    train_job(spec, tmp_path)
    sample_job(study.sample_spec(cell, "ald"), tmp_path / "model.pt", tmp_path / "ald.npz")
    evaluate_samples_job(study.eval_spec(cell, "ald"), tmp_path / "ald.npz", tmp_path / "ald.parquet")
    score_error_job(study.eval_spec(cell), tmp_path / "model.pt", tmp_path / "se.parquet")
    ev, se = pd.read_parquet(tmp_path / "ald.parquet"), pd.read_parquet(tmp_path / "se.parquet")
    metrics = set(ev["metric"])
    assert {"mmd_rbf", "sliced_wasserstein"} <= metrics and not any(m.startswith("mode_") for m in metrics)
    assert np.isfinite(ev.loc[ev["metric"].isin(["mmd_rbf", "sliced_wasserstein"]), "value"]).all()
    rel = se[(se["metric"] == "score_error_rel") & (se["region"] == "all") & (se["sigma_set"] == "own")]
    assert sorted(rel["sigma"]) == pytest.approx(sorted([5.0, math.sqrt(2.5), 0.5]))
    assert se["train_steps"].iloc[0] == 2 and se["train_wall_s"].iloc[0] > 0
    assert se["dataset_options_dim"].iloc[0] == 8
    assert "grid" not in set(se["region"])  # the uniform grid is 2-D only


# ---------------------------------------------------------------------- numbers, figure, summary

DIMS = {"d2": 2, "d8": 8, "d32": 32}


def synthetic_table(exact_cost_exponent=1.0, seed=0):
    """Score-error rows (3 σ levels), training cost and sample rows for 3 objectives × 3 D × 3 seeds.
    Exact's seconds/step ∝ D^exponent, the others' are flat; dsm has the lowest score error."""
    rng = np.random.default_rng(seed)
    rows = []
    base_err = {"exact": 0.05, "sliced": 0.2, "dsm": 0.01}
    for ds, dim in DIMS.items():
        for obj, err in base_err.items():
            for s in range(3):
                wall = (1e-3 * dim**exact_cost_exponent if obj == "exact" else 2e-3) * 1000 * rng.uniform(0.95, 1.05)
                cell = {"study": "s", "dataset": ds, "dataset_kind": "gmm_nd", "dataset_options_dim": dim,
                        "model_arch": "mlp", "model_preset": "tiny",
                        "schedule": "geom", "objective": obj, "objective_kind": obj, "seed": s,
                        "train_wall_s": wall, "train_steps": 1000, "git_commit": "abc",
                        "cell": f"{ds}/geom/{obj}/seed{s}"}  # fmt: skip
                for i, sigma in enumerate((4.0, 1.0, 0.25)):
                    value = err * (1 + i) * math.sqrt(dim) * rng.uniform(0.9, 1.1)
                    rows.append({**cell, "sampler": "", "metric": "score_error_rel", "region": "all", "bin": -1,
                                 "sigma": sigma, "value": value})  # fmt: skip
                for metric, v in (("mmd_rbf", err * rng.uniform(0.9, 1.1)), ("sliced_wasserstein", 10 * err),
                                  ("nfe", 31.0)):  # fmt: skip
                    rows.append({**cell, "sampler": "ald", "metric": metric, "region": "", "bin": -1,
                                 "sigma": math.nan, "value": v})  # fmt: skip
    return pd.DataFrame(rows)


def test_numbers_are_seed_means_with_t_intervals():
    df = synthetic_table()
    nums = objective_numbers(df)
    for r in nums.to_dict("records"):
        cell = df[(df["dataset"] == r["dataset"]) & (df["objective"] == r["objective"])]
        if r["quantity"] == "score_error":
            per_seed = cell[cell["metric"] == "score_error_rel"].groupby("seed")["value"].mean()
        elif r["quantity"] == "score_error_sigma_min":
            per_seed = cell[(cell["metric"] == "score_error_rel") & (cell["sigma"] == 0.25)]["value"]
        elif r["quantity"] == "sec_per_step":
            per_seed = cell.drop_duplicates("seed").eval("train_wall_s / train_steps")
        else:
            per_seed = cell[cell["metric"] == r["quantity"]]["value"]
        v = per_seed.to_numpy(float)
        assert r["n"] == 3 and r["dim"] == DIMS[r["dataset"]]
        assert r["mean"] == pytest.approx(v.mean(), rel=1e-12)
        half = T975_2DF * v.std(ddof=1) / math.sqrt(3)
        assert (r["lo"], r["hi"]) == pytest.approx((v.mean() - half, v.mean() + half), rel=1e-9)
    assert set(nums["quantity"]) == {"score_error", "score_error_sigma_min", "sec_per_step", "mmd_rbf",
                                     "sliced_wasserstein"}  # fmt: skip
    assert list(nums[nums["dataset"] == "d2"]["objective"].drop_duplicates()) == ["exact", "sliced", "dsm"]
    assert describe([1.0])[:3] == (1.0, pytest.approx(math.nan, nan_ok=True), 1)


def test_loglog_slope_recovers_a_power_law():
    assert loglog_slope([2, 8, 32, 128], [3 * d**1.5 for d in (2, 8, 32, 128)]) == pytest.approx(1.5)
    assert math.isnan(loglog_slope([8, 8], [1.0, 2.0]))


def objectives_section(df) -> str:
    return section(ReportInputs(df))


def table_row(text: str, **cells) -> dict:
    """The row of the summary's table (first header `dataset`) with these cells."""
    (row,) = [r for r in markdown_rows(text, "dataset") if all(r[k] == v for k, v in cells.items())]
    return row


def test_summary_claims_follow_the_numbers():
    text = objectives_section(synthetic_table(exact_cost_exponent=1.0))
    # exact's s/step ∝ D, the others' flat (±5 % noise): the per-seed slopes resolve it, paired by seed
    assert "growth of s/step with D (log-log slope per seed): `dsm` better than `exact` (paired t, n = 3" in text
    assert "growth of s/step with D (log-log slope per seed): `sliced` better than `exact` (paired t, n = 3" in text
    assert "Lowest mean score error: `dsm` at 3 of 3 D" in text
    assert "- score error at D = 8 (d8): `dsm` better than `exact` (paired t, n = 3" in text  # a resolved Claim
    assert "sliced W₂ at D = 2 (d2, `ald`): `dsm` vs `exact`: not resolved" in text  # no spread over seeds: untestable
    assert "see little of how well the modes are resolved" in text  # the caveat of whole-vector metrics
    nums = objective_numbers(synthetic_table(exact_cost_exponent=1.0))
    cost = nums[(nums["quantity"] == "sec_per_step") & (nums["objective"] == "exact")].sort_values("dim")
    assert f"{cost['mean'].iloc[0]:.3g} s/step at D = 2 → {cost['mean'].iloc[-1]:.3g} s/step at D = 32" in text
    values = per_seed_values(synthetic_table(exact_cost_exponent=1.0))
    per_seed = [loglog_slope(list(DIMS.values()), [values.query(f"quantity == 'sec_per_step' and objective == "
                                                                 f"'exact' and seed == {s} and dataset == '{d}'")["value"].item()
                                                    for d in DIMS]) for s in range(3)]  # fmt: skip
    st = describe(per_seed)
    assert f"log-log slope {st.mean:.2f} [{st.lo:.2f}, {st.hi:.2f}] (n = 3 seeds" in text  # exact's, ≈ 1
    assert 0.9 < st.mean < 1.1
    flat = objectives_section(synthetic_table(exact_cost_exponent=0.0))
    assert "growth of s/step with D (log-log slope per seed): `dsm` vs `exact`: not resolved" in flat
    assert not [line for line in flat.splitlines() if "growth of s/step" in line and "better than" in line]
    row = table_row(text, dataset="d8", D="8", model="mlp/tiny", objective="dsm")
    se = nums[(nums["dataset"] == "d8") & (nums["objective"] == "dsm") & (nums["quantity"] == "score_error")].iloc[0]
    assert row["rel. score error (mean over σ)"] == f"{se['mean']:.3g} [{se['lo']:.3g}, {se['hi']:.3g}]"


def test_objectives_figure_is_drawn(tmp_path):
    objectives_figure(synthetic_table(), tmp_path)
    assert (tmp_path / "objectives_vs_dim.png").stat().st_size > 30000  # drawn, not the one-line empty note
    assert (tmp_path / "objectives_vs_dim.pdf").exists()


def test_costs_of_different_networks_are_separate_curves():
    """A second network (say images with a U-Net) is its own cost curve: slopes are per model, so a big
    network at a large D does not pass for exact-like growth of a cheap objective."""
    df = synthetic_table(exact_cost_exponent=1.0)
    big = df[df["dataset"] == "d32"].assign(dataset="img", dataset_kind="mnist", dataset_options_dim=math.nan,
                                            model_arch="unet", model_preset="base")  # fmt: skip
    big = big[big["objective"] != "exact"]
    big["train_wall_s"] *= 50
    text = objectives_section(pd.concat([df, big], ignore_index=True))
    assert "growth of s/step with D (log-log slope per seed (mlp/tiny)): `dsm` better than `exact`" in text
    assert "Cost, `dsm` (unet/base)" not in text  # one D for the U-Net: no slope
    assert table_row(text, dataset="img", D="784", model="unet/base", objective="dsm")
    assert "Exact score matching has no cells at D = 784" in text


def test_objectives_on_different_schedules_compare_score_errors_at_one_common_sigma():
    df = synthetic_table().assign(sigma_set="own")
    common = df[(df["metric"] == "score_error_rel") & (df["sigma"] == 0.25)].assign(sigma=0.1, sigma_set="common",
                                                                                    value=7.0)  # fmt: skip
    df = pd.concat([df, common], ignore_index=True)
    same = objective_numbers(df)
    assert (same.loc[same["quantity"] == "score_error", "mean"] != 7.0).all()  # one schedule: own σ levels
    df.loc[df["objective"] == "dsm", "schedule"] = "other"  # dsm on another schedule: own σ no longer comparable
    mixed = objective_numbers(df)
    se = mixed[mixed["quantity"].isin(["score_error", "score_error_sigma_min"])]
    assert len(se) and (se["mean"] == 7.0).all()
