"""The default study (config/config.yaml) run from scratch, and the claims its header makes, checked in
its own table. It is the README's first command, so this is what a newcomer sees (a few minutes on 2
cores; `python bench/study.py` prints its wall time).

Claims (config/config.yaml's header), each with its tolerance:
(a) the naive model (clean data, sliced SM) has a score error many times larger in the low-density
    regions of p than near its modes, and the multi-scale model at its larger σ is accurate in those
    same regions; regions are quantile bins of the CLEAN log-density log p_0 over a grid covering the
    data (rows region = grid_bin), the same partition at every σ;
(b) on 0.2·N((−5,−5), I) + 0.8·N((5,5), I), with the trained 10-level model, plain Langevin puts
    0.5 ± 0.1 of its samples in the heavy mode and annealed Langevin 0.8 ± 0.05 (means over 3 seeds);
(c) λ ∈ {σ², 1} × L ∈ {1, 3, 10} sampled at a matched budget (NFE within 1 %), so the levels figure is real;
(d) digits samples drawn next to held-out digits.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("default_study")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
           "--configfile", str(ROOT / "config" / "config.yaml"), "--config", f"results_dir={work / 'results'}",
           "--cores", "2", "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    again = subprocess.run([*cmd[:-1], "-n"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, "a finished study reruns"
    return work / "results" / "default"


@pytest.fixture(scope="module")
def table(study) -> pd.DataFrame:
    return pd.read_parquet(study / "metrics.parquet")


def per_seed(df: pd.DataFrame, **where) -> pd.Series:
    rows = df
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows.set_index("seed")["value"].sort_index()


def grid_bins(table, schedule, objective, sigma, metric="score_error_rel") -> pd.DataFrame:
    """seed × bin (0 = lowest clean density) at one of the cell's own σ."""
    rows = table[(table.dataset == "two_modes") & (table.schedule == schedule) & (table.objective == objective)
                 & (table.sigma_set == "own") & (table.region == "grid_bin") & (table.metric == metric)]  # fmt: skip
    rows = rows[np.isclose(rows.sigma, sigma)]
    assert set(rows.bin_by) == {"log_density_0"}
    return rows.pivot(index="seed", columns="bin", values="value")


def test_a_naive_error_is_many_times_larger_in_low_density_and_noise_fixes_it_there(table):
    naive = grid_bins(table, "none", "ssm", 0.0, metric="score_error_norm")
    assert len(naive) == 3
    ratio = naive[0] / naive[naive.columns.max()]  # lowest- vs highest-density bin, per seed
    assert (ratio >= 10).all(), ratio  # "many times": measured ≈ 300×
    naive_low_rel = grid_bins(table, "none", "ssm", 0.0)[0]
    own = table[(table.dataset == "two_modes") & (table.schedule == "sigma2_L10") & (table.sigma_set == "own")]
    large = sorted(s for s in own.sigma.unique() if s >= 3.0)  # its larger σ: beyond the modes' spread
    assert len(large) >= 4
    for sigma in large:
        low = grid_bins(table, "sigma2_L10", "dsm", sigma)[0]  # the same lowest-density region
        assert (low <= 0.05).all() and low.mean() <= naive_low_rel.mean() / 10, (sigma, low, naive_low_rel)


def test_b_annealed_langevin_recovers_the_weights_plain_langevin_does_not(table):
    heavy = {s: per_seed(table, dataset="two_modes", schedule="sigma2_L10", objective="dsm", sampler=s,
                         metric="mode_weight_1") for s in ("annealed", "langevin")}  # fmt: skip
    assert all(len(v) == 3 for v in heavy.values())
    assert abs(heavy["annealed"].mean() - 0.8) <= 0.05, heavy["annealed"]
    assert abs(heavy["langevin"].mean() - 0.5) <= 0.1, heavy["langevin"]
    assert (heavy["annealed"] > heavy["langevin"]).all()


def test_c_the_levels_ablation_runs_at_matched_nfe(study, table):
    rows = table[(table.dataset == "two_modes") & (table.sampler == "annealed") & (table.metric == "mode_weight_error")
                 & (table.schedule != "none")]  # fmt: skip
    assert set(rows.schedule_n_levels) == {1, 3, 10} and set(rows.schedule_weighting) == {"sigma2", "uniform"}
    nfe = rows.groupby("schedule_n_levels")["sample_nfe"].agg(["min", "max"])
    assert nfe["max"].max() <= 1000 and nfe["min"].min() >= 990, nfe  # budget 1000: T = 999 // L per level
    steps = rows.groupby("schedule_n_levels")["sample_steps_per_level"].unique().map(list).to_dict()
    assert steps == {1: [999], 3: [333], 10: [99]}
    for name in ("metric_vs_levels", "levels_mmd", "mode_weights", "score_error_vs_log_density"):
        assert (study / "figures" / f"{name}.png").stat().st_size > 20_000


def test_d_digits_samples_beside_held_out_digits(study, table):
    real = np.load(study / "reference" / "digits" / "real.npz")["samples"]
    assert real.shape == (64, 1, 8, 8) and 0 <= real.min() and real.max() <= 1
    fid = table[(table.dataset == "digits") & (table.metric == "fid")]
    assert len(fid) == 2 and np.isfinite(fid.value).all()
    assert (study / "figures" / "samples.png").stat().st_size > 50_000


def test_every_declared_figure_is_drawn_and_no_other(study):
    from scorebench.study import Study, load_config

    declared = Study(load_config(ROOT / "config" / "config.yaml"))
    from scorebench.report import declared_default_figures

    names = {f.shown for f in declared_default_figures(declared)} | {f.shown for f in declared.paper_figures}
    drawn = {p.name for p in (study / "figures").iterdir() if p.suffix in (".png", ".gif")}
    assert drawn == names
    for name in names:
        assert (study / "figures" / name).stat().st_size > 20_000, name
    summary = (study / "summary.md").read_text()
    assert "not resolved" in summary or "Holm" in summary
