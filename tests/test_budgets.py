"""Sampler budgets (nfe_budget -> T per level), the step rule, per-dataset sampler overrides, the
relaxation check at config time, the bootstrap standard error of toy metrics, and every shipped
study sampling the cells it compares at one budget."""

import copy
import logging
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from scorebench.budgets import nfe_per_chain, relaxation, resolve_step_size, schedule_sigmas, steps_per_level
from scorebench.components import Components
from scorebench.data import load_dataset
from scorebench.data.registry import MIXTURE_DATASETS, POINT_CLOUD_VARIANCE, data_variance
from scorebench.errors import ScorebenchError
from scorebench.jobs.evaluate import evaluate_samples_job
from scorebench.jobs.sample import sample_job
from scorebench.jobs.train import train_job
from scorebench.metrics.toy import toy_sample_metrics
from scorebench.ncsnv2_rules import ncsnv2_step_size
from scorebench.noise import make_schedule
from scorebench.results import schedule_n_levels
from scorebench.study import Study, load_config, validate_config

# A cheap real cell: the exact mixture score (oracle), three geometric levels 5 -> 0.5 (γ = √10).
CONFIG = {
    "study": "budgets",
    "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 400, "n_test": 200}}},
    "schedules": {"geom": {"kind": "geometric", "sigma_max": 5.0, "sigma_min": 0.5, "levels": 3}},
    "objectives": {"oracle": {"kind": "oracle"}},
    "training": {"device": "cpu"},
    "sampling": {
        "n_samples": 40,
        "samplers": {
            "ald": {"kind": "annealed_langevin", "nfe_budget": 20, "denoise": True},
            "pc": {"kind": "pc", "nfe_budget": 20, "denoise": True},
            "per_level": {"kind": "annealed_langevin", "n_steps": 4, "denoise": False},
        },
    },
}


def study_of(cfg) -> Study:
    return Study(validate_config(copy.deepcopy(cfg)))


def refusal(cfg) -> str:
    with pytest.raises(ScorebenchError) as e:
        study_of(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------- T from the budget


def test_steps_per_level_from_a_budget_written_out():
    # annealed: ⌊(B − d)/L⌋; pc: ⌊(B − (L − 1) − d)/L⌋; langevin: B − d; null: n_steps
    assert steps_per_level("annealed_langevin", 3, 7, 100, True) == 33  # 99 / 3
    assert steps_per_level("annealed_langevin", 3, 7, 100, False) == 33  # 100 / 3 = 33.3
    assert steps_per_level("annealed_langevin", 10, 7, 1001, True) == 100
    assert steps_per_level("pc", 3, 7, 100, True) == 32  # (100 − 2 − 1) / 3 = 32.3
    assert steps_per_level("pc", 10, 7, 1001, False) == 99  # (1001 − 9) / 10 = 99.2
    assert steps_per_level("langevin", 10, 7, 100, True) == 99
    assert steps_per_level("annealed_langevin", 3, 7, None, True) == 7
    assert steps_per_level("annealed_langevin", 50, 7, 30, True) == 0  # too small: the callers refuse


def test_a_budget_too_small_for_a_schedule_is_refused_naming_key_and_schedule():
    cfg = copy.deepcopy(CONFIG)
    cfg["schedules"]["fine"] = {"kind": "geometric", "sigma_max": 5.0, "sigma_min": 0.5, "levels": 30}
    msg = refusal(cfg)
    assert "config sampling/samplers/ald/nfe_budget:" in msg and "schedule fine" in msg and "T = 0" in msg
    assert "at least 31" in msg  # L·1 + denoise


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """The sample and evaluation jobs of one oracle cell for each sampler: (study, {sampler: (meta, rows)})."""
    study = study_of(CONFIG)
    (cell,) = study.cells
    out = tmp_path_factory.mktemp("budget")
    train_job(study.train_spec(cell), out)
    got = {}
    for name in study.samplers:
        meta = sample_job(study.sample_spec(cell, name), out / "model.pt", out / f"{name}.npz")
        evaluate_samples_job(study.eval_spec(cell, name), out / f"{name}.npz", out / f"{name}.parquet")
        got[name] = (meta, pd.read_parquet(out / f"{name}.parquet"))
    return study, got


def test_the_sample_job_runs_the_derived_steps_and_the_rows_say_so(sampled):
    _, got = sampled
    # ald: L = 3, budget 20, denoise: T = ⌊19/3⌋ = 6, nfe = 3·6 + 1 = 19
    # pc: T = ⌊(20 − 2 − 1)/3⌋ = 5, nfe = 3·5 + 2 + 1 = 18; per_level: T = n_steps = 4, nfe = 12
    expected = {"ald": (6, 19, 20), "pc": (5, 18, 20), "per_level": (4, 12, None)}
    s = make_schedule("geometric", sigma_max=5.0, sigma_min=0.5, levels=3).sigmas
    gamma = float(s[0] / s[-1]) ** 0.5  # (σ_1/σ_L)^(1/(L−1)) = √10, as the schedule's float64 levels give it
    assert gamma == pytest.approx(math.sqrt(10.0), rel=1e-12)
    for name, (T, nfe, budget) in expected.items():
        meta, rows = got[name]
        assert meta["steps_per_level"] == T and meta["nfe"] == nfe
        assert (rows["sample_steps_per_level"] == T).all() and (rows["sample_nfe"] == nfe).all()
        if budget is not None:
            assert (rows["sample_nfe"] <= budget).all() and (rows["sampler_nfe_budget"] == budget).all()
        else:
            assert rows["sampler_nfe_budget"].isna().all()
        assert (rows.loc[rows["metric"] == "nfe", "value"] == nfe).all()
        eps = ncsnv2_step_size(0.5, gamma, T, "code")  # the default rule, at the T actually run
        assert rows["sample_step_rule"].eq("ncsnv2").all() and meta["step_rule"] == "ncsnv2"
        assert rows["sample_step_size"].iloc[0] == pytest.approx(eps, rel=1e-12) == meta["step_size"]
    assert got["ald"][0]["step_size"] != got["per_level"][0]["step_size"]  # T enters the rule


def test_toy_rows_carry_a_standard_error(sampled):
    _, got = sampled
    rows = got["ald"][1].set_index("metric")
    for metric in ("mmd_rbf", "sliced_wasserstein", "mode_weight_error", "mode_weight_0", "mode_weight_1"):
        assert rows.loc[metric, "se"] > 0, metric
    assert math.isnan(rows.loc["nfe", "se"])  # a count, not an estimate


# ---------------------------------------------------------------------- the step rule


def spec(sampler: dict, schedule: dict) -> dict:
    cfg = copy.deepcopy(CONFIG)
    cfg["schedules"] = {"s": schedule}
    cfg["sampling"]["samplers"] = {"x": sampler}
    study = Study(validate_config(cfg))
    return study.sample_spec(study.cells[0], "x")


GEOM = {"kind": "geometric", "sigma_max": 8.0, "sigma_min": 0.5, "levels": 5}


@pytest.mark.parametrize("convention", ["code", "algorithm1"])
@pytest.mark.parametrize("kind", ["annealed_langevin", "pc"])
def test_the_default_rule_is_ncsnv2_eq4_for_the_schedule(kind, convention):
    c = Components(spec({"kind": kind, "n_steps": 7, "step_convention": convention}, GEOM))
    s = c.schedule.sigmas
    gamma = float(s[0] / s[-1]) ** (1 / 4)  # (σ_1/σ_L)^(1/(L−1)), L = 5
    assert gamma == pytest.approx(2.0, rel=1e-12)  # (8/0.5)^(1/4)
    assert c.step == (pytest.approx(ncsnv2_step_size(0.5, gamma, 7, convention), rel=1e-12), "ncsnv2")


@pytest.mark.parametrize(
    "sampler, schedule, expected",
    [
        ({"kind": "langevin", "step_ratio": 0.3}, GEOM, (0.3 * 0.25, "ratio")),  # plain Langevin: the ratio
        ({"kind": "annealed_langevin", "step_ratio": 2.0}, {"kind": "single", "sigma": 0.5}, (0.5, "ratio")),  # L = 1
        ({"kind": "annealed_langevin", "step_rule": "ratio", "step_ratio": 0.2}, GEOM, (0.05, "ratio")),
        ({"kind": "annealed_langevin", "step_size": 0.02}, GEOM, (0.02, "explicit")),
        ({"kind": "annealed_langevin", "noiseless_step_size": 0.4, "n_steps": 10}, {"kind": "none"}, (0.4, "noiseless")),
    ],
)
def test_the_other_rules(sampler, schedule, expected):
    eps, rule = Components(spec(sampler, schedule)).step
    assert (eps, rule) == (pytest.approx(expected[0], rel=1e-12), expected[1])


def test_the_ncsnv2_schedule_keeps_its_own_rule_at_the_derived_steps():
    c = Components(spec({"kind": "annealed_langevin", "nfe_budget": 61, "denoise": True}, {"kind": "ncsnv2", "sigma_min": 0.5}))
    L = c.schedule.levels
    assert c.steps_per_level == 60 // L
    eps = ncsnv2_step_size(0.5, c.schedule.info["gamma"], 60 // L, "code")
    assert c.step == (pytest.approx(eps, rel=1e-12), "ncsnv2")


def test_config_time_sigmas_match_the_schedules():
    for sch in (GEOM, {**GEOM, "kind": "linear"}, {"kind": "explicit", "sigmas": [3.0, 1.0, 0.2]}, {"kind": "single", "sigma": 0.3}):
        made = make_schedule(sch["kind"], **{k: v for k, v in sch.items() if k != "kind"}).sigmas.tolist()
        assert schedule_sigmas(sch) == pytest.approx(made, rel=1e-12)
    assert schedule_sigmas({**GEOM, "sigma_max": "auto"}) is None and schedule_sigmas({"kind": "ncsnv2"}) is None


# ---------------------------------------------------------------------- relaxation at config time


def test_relaxation_written_out():
    # annealed, σ = (1, 0.5), T = 10, ε = 0.01, s² = 1: α = (0.04, 0.01); R = 10·0.04/2 + 10·0.01/1.25 = 0.28
    smp = {"kind": "annealed_langevin", "step_convention": "code", "snr": 0.16}
    assert relaxation(smp, [1.0, 0.5], 10, 0.01, 1.0) == pytest.approx(0.28)
    assert relaxation({**smp, "step_convention": "algorithm1"}, [1.0, 0.5], 10, 0.01, 1.0) == pytest.approx(0.14)
    assert relaxation({**smp, "kind": "langevin"}, [1.0, 0.5], 10, 0.01, 1.0) == pytest.approx(0.08)
    # pc: corrector 2·snr² per step, predictor (σ_1² − σ_2²)/(σ_1² + s²)
    assert relaxation({**smp, "kind": "pc"}, [1.0, 0.5], 10, 0.01, 1.0) == pytest.approx(2 * 10 * 2 * 0.0256 + 0.75 / 2)


FROZEN = {
    "study": "frozen",
    "datasets": {"mix": {"kind": "gmm_2mode"}},
    "schedules": {"one": {"kind": "single", "sigma": 0.1}},
    "objectives": {"dsm": {"kind": "dsm"}},
    "sampling": {"samplers": {"stuck": {"kind": "annealed_langevin", "step_ratio": 0.1, "n_steps": 30}}},
}


def test_a_frozen_sampler_is_refused_in_one_line(caplog):
    msg = refusal(FROZEN)
    # ε = 0.1·0.01 = 0.001, R = 30·0.001/(0.01 + 17) = 0.00176
    assert msg.startswith("config sampling/samplers/stuck: with schedule one on dataset mix")
    assert "R = 0.00176" in msg and "cannot move over the data's scale" in msg and "raise" in msg


def test_a_sampler_that_moves_passes_and_a_slow_one_warns(caplog):
    good = copy.deepcopy(FROZEN)
    good["schedules"] = {"geom": {"kind": "geometric", "sigma_max": 10.0, "sigma_min": 0.1, "levels": 10}}
    with caplog.at_level(logging.WARNING, logger="scorebench"):
        assert study_of(good).cells
    assert not caplog.records
    slow = copy.deepcopy(FROZEN)
    slow["sampling"]["samplers"]["stuck"]["step_ratio"] = 10.0  # R = 30·0.1/17.01 = 0.176
    with caplog.at_level(logging.WARNING, logger="scorebench"):
        assert study_of(slow).cells
    (record,) = caplog.records
    assert "sampling/samplers/stuck" in record.getMessage() and "R = 0.176" in record.getMessage()


def test_variances_known_before_loading_are_the_loaded_ones():
    for kind in MIXTURE_DATASETS:
        mix = load_dataset(kind, n_train=10, n_test=10).distribution
        w, m = mix.weights, mix.means
        mean = (w[:, None] * m).sum(0)
        exact = float((w * mix.stds**2).sum() + ((w[:, None] * (m - mean) ** 2).sum(0)).mean())
        assert data_variance(kind, {}) == pytest.approx(exact, rel=1e-12), kind
    nd = load_dataset("gmm_nd", dim=3, n_modes=3, n_train=10, n_test=10).distribution
    mean = nd.means.mean(0)
    assert data_variance("gmm_nd", {"dim": 3, "n_modes": 3}) == pytest.approx(1.0 + float(((nd.means - mean) ** 2).mean(0).mean()))
    for kind in POINT_CLOUD_VARIANCE:  # stated values lie below the loaded ones (the check never overstates s²)
        ds = load_dataset(kind, n_train=4000, n_test=10)
        assert data_variance(kind, {}) < float(ds.train.var(0).mean())
    assert data_variance("digits", {}) is None


# ---------------------------------------------------------------------- per-dataset sampler overrides


def test_a_dataset_override_reaches_only_that_datasets_specs():
    cfg = copy.deepcopy(CONFIG)
    cfg["datasets"]["ring"] = {"kind": "gmm_ring8", "options": {"n_train": 400, "n_test": 200},
                               "sampling": {"samplers": {"ald": {"step_size": 0.003, "nfe_budget": 31}}}}  # fmt: skip
    study = study_of(cfg)
    by_ds = {c.dataset: c for c in study.cells}
    ring, mix = study.sample_spec(by_ds["ring"], "ald")["sampler"], study.sample_spec(by_ds["mix"], "ald")["sampler"]
    assert (ring["step_size"], ring["nfe_budget"], ring["kind"], ring["denoise"]) == (0.003, 31, "annealed_langevin", True)
    assert (mix["step_size"], mix["nfe_budget"]) == (None, 20)
    assert study.sample_spec(by_ds["ring"], "pc")["sampler"] == {"name": "pc", **study.config["sampling"]["samplers"]["pc"]}
    assert Components(study.sample_spec(by_ds["ring"], "ald")).step == (0.003, "explicit")
    members = study.eval_pack_spec("ring/oracle", "shard0")["members"]  # grouped evaluation: the same specs
    assert all(m["sample"]["ald"]["sampler"]["step_size"] == 0.003 for m in members.values())


def test_an_override_of_an_unknown_sampler_is_refused():
    cfg = copy.deepcopy(CONFIG)
    cfg["datasets"]["mix"]["sampling"] = {"samplers": {"nope": {"step_size": 0.1}}}
    assert refusal(cfg).startswith("config datasets/mix/sampling/samplers/nope: not a sampler preset")


def test_an_override_that_freezes_a_dataset_is_refused_naming_it():
    cfg = copy.deepcopy(FROZEN)
    cfg["sampling"]["samplers"]["stuck"]["step_ratio"] = 10.0
    cfg["datasets"]["mix"]["sampling"] = {"samplers": {"stuck": {"step_ratio": 0.1}}}
    assert refusal(cfg).startswith("config datasets/mix/sampling/samplers/stuck (over sampling/samplers/stuck):")


# ---------------------------------------------------------------------- bootstrap standard error


def test_bootstrap_se_of_a_mode_weight_is_the_binomial_one():
    ds = load_dataset("gmm_2mode", n_train=100, n_test=2000)
    for seed, n in ((0, 500), (1, 1000)):
        x = ds.distribution.sample(n, generator=torch.Generator().manual_seed(seed)).float()
        rows = {r["metric"]: r for r in toy_sample_metrics(x, ds, torch.Generator().manual_seed(seed))}
        for k in (0, 1):
            p = rows[f"mode_weight_{k}"]["value"]
            binomial = math.sqrt(p * (1 - p) / n)
            assert binomial / 1.5 < rows[f"mode_weight_{k}"]["se"] < 1.5 * binomial


ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [ROOT / "config" / "config.yaml", *sorted((ROOT / "config" / "studies").glob("*.yaml"))]
NFE_IS_THE_AXIS = {"samplers", "samplers_cluster"}  # their figures and Claims compare at each NFE of the x axis


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_study_samples_a_datasets_cells_at_one_budget(path):
    """A study's tables put a dataset's (schedule, sampler) rows side by side, so their chains take the
    same network evaluations: at most B, and no fewer than B − L (the floor of a budget B split over L
    levels). Before: score_fields ran 101 vs 1,001, langevin_vs_annealed 1,001 vs 2,001."""
    if path.stem in NFE_IS_THE_AXIS:
        pytest.skip(f"{path.stem}: NFE is what it varies")
    study = Study(load_config(path))
    for dataset in study.preset_names("datasets"):
        cells = [c for c in study.cells if c.dataset == dataset]
        if len({c.schedule for c in cells}) * len(study.samplers) < 2:
            continue  # one schedule, one sampler: nothing to match (and a paper preset's data may be absent)
        nfe, levels = {}, {}
        for cell in cells:
            for name in study.samplers:
                spec = study.sample_spec(cell, name)
                smp, L = spec["sampler"], schedule_n_levels(spec["schedule"])
                if L is None:  # kind ncsnv2: L is the data's
                    L = Components(spec).schedule.levels
                T = steps_per_level(smp["kind"], L, smp["n_steps"], smp["nfe_budget"], smp["denoise"])
                nfe[f"{cell.schedule}/{name}"] = nfe_per_chain(smp["kind"], L, T, smp["denoise"])
                levels[f"{cell.schedule}/{name}"] = L
        assert min(nfe.values()) >= max(nfe.values()) - max(levels.values()), f"{path.stem} {dataset}: NFE {nfe}"
