"""Paper studies (config/studies/*.yaml, scorebench/report/): configs that validate and dry-run, the
score-field job against the closed-form mixture score, a summary whose numbers are the table's, and
a GIF with one frame per snapshot."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from scorebench.components import Components
from scorebench.jobs.evaluate import score_field_job
from scorebench.jobs.report import study_figures_job
from scorebench.jobs.train import train_job
from scorebench.errors import ScorebenchError
from scorebench.report.animation import annealed_animation
from scorebench.report.inputs import ReportInputs
from scorebench.report.paper import make_paper_figures, paper_summary
from scorebench.report.score_fields import levels_to_show, relative_error_map
from scorebench.study import Cell, Study, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
STUDY_CONFIGS = sorted((ROOT / "config" / "studies").glob("*.yaml"))
MEANS = np.array([[-5.0, -5.0], [5.0, 5.0]])
WEIGHTS = np.array([0.2, 0.8])
MIXTURES = {"mix": {"means": MEANS.tolist(), "stds": [1.0, 1.0], "weights": WEIGHTS.tolist()}}


def two_mode_score(x: np.ndarray, sigma: float) -> np.ndarray:
    """∇log p_σ of 0.2·N((-5,-5), I) + 0.8·N((5,5), I), written out: Σ_k r_k(x)(μ_k − x)/(1 + σ²)."""
    var = 1.0 + sigma**2
    logc = np.log(WEIGHTS) - ((x[:, None, :] - MEANS) ** 2).sum(-1) / (2 * var)
    r = np.exp(logc - logc.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return (r[..., None] * (MEANS - x[:, None, :])).sum(1) / var


def study_summary(df, mixtures=None, **flags) -> str:
    """summary.md of study "s" with the given `figures:` flags on."""
    return paper_summary(ReportInputs(df, study="s", settings=flags, mixtures=mixtures or {}))


def tiny_config(**changes):
    cfg = {
        "study": "tiny",
        "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 500, "n_test": 100}}},
        "schedules": {"none": {"kind": "none"}, "geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}},
        "objectives": {"oracle": {"kind": "oracle"}, "ssm": {"kind": "sliced_vr"}},
        "training": {"steps": 2, "batch_size": 16, "device": "cpu", "log_every": 1},
        "figures": {"score_fields": True, "grid_size": 12},
    }  # fmt: skip
    cfg.update(changes)
    return Study(validate_config(cfg))


# ---------------------------------------------------------------------- configs


@pytest.mark.parametrize("path", STUDY_CONFIGS, ids=lambda p: p.stem)
def test_study_configs_validate_and_ask_for_their_figures(path):
    study = Study(load_config(path))
    assert study.name == path.stem  # results/{study}/ matches the file, as workflow/scripts/paper.sh assumes
    # the paper_* presets reproduce a paper's numbers (FID, score error), not one of its figures
    assert study.paper_figures or path.stem.startswith("paper_")
    if study.figure_settings["score_fields"]:
        assert study.field_cells and any(study.config["schedules"][c.schedule]["kind"] == "none" for c in study.cells)
    if study.figure_settings["sampler_nfe"]:
        assert_pc_presets_have_annealed_at_matched_nfe(study)
    if study.figure_settings["mode_weights"]:
        kinds = {s["kind"] for s in study.config["sampling"]["samplers"].values()}
        assert {"langevin", "annealed_langevin"} <= kinds
        assert "oracle" in {o["kind"] for o in study.config["objectives"].values()}


def assert_pc_presets_have_annealed_at_matched_nfe(study):
    """Both sampler families, and every PC preset has an annealed preset within NFE_MATCH of its NFE,
    the NFE counted by running each preset's sampler (one 2-D chain, score −x) on the study's L levels."""
    from scorebench.sampling import SAMPLERS
    from scorebench.report.sampler_nfe import NFE_MATCH

    presets = study.config["sampling"]["samplers"]
    assert {"annealed_langevin", "pc"} <= {p["kind"] for p in presets.values()}
    for sch in study.config["schedules"].values():
        sigmas = torch.logspace(1, -1, sch["levels"], dtype=torch.float64)
        nfe = {}
        for name, p in presets.items():
            run = SAMPLERS[p["kind"]](lambda x, s: -x, torch.zeros(1, 2), sigmas, n_steps=p["n_steps"], step_size=0.01,
                                      generator=torch.Generator().manual_seed(0), denoise=p["denoise"])  # fmt: skip
            nfe[name] = (p["kind"], run.nfe)
        ald = [n for k, n in nfe.values() if k == "annealed_langevin"]
        for kind, n in nfe.values():
            if kind == "pc":
                assert any(n / NFE_MATCH <= a <= n * NFE_MATCH for a in ald), (n, sorted(ald))


def job_counts(text: str) -> dict:
    table = text.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
def test_every_study_dry_runs_with_its_paper_jobs(tmp_path):
    for path in [*STUDY_CONFIGS, ROOT / "config" / "config.yaml"]:
        cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "-s", str(ROOT / "Snakefile"),
               "--directory", str(tmp_path), "--configfile", str(path)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, path.name + out.stderr[-3000:]
        counts = job_counts(out.stdout)
        study = Study(load_config(path))
        packed = sum(len(cells) for cells in study.packs.values())  # training.pack: one job per pack
        assert counts.get("train", 0) == len(study.cells) - packed, path.name  # the study alone, not the default
        assert counts.get("train_pack", 0) == len(study.packs), path.name
        # toy cells, packed or not, are sampled and evaluated in groups (evaluation.group_size)
        grouped = sum(len(cells) for cells in study.eval_groups.values())
        assert counts.get("evaluate_pack", 0) == sum(len(study.eval_shards(n)) for n in study.eval_groups), path.name
        assert counts.get("score_error", 0) == len(study.cells) - grouped, path.name
        assert counts.get("score_field", 0) == len(study.field_cells), path.name
        assert counts.get("study_figures", 0) == (1 if study.paper_figures else 0), path.name


@pytest.mark.parametrize(
    "figures, sampling, needle",
    [
        ({"animation": True}, {}, "snapshots"),
        ({"animation": True}, {"snapshots": 5, "samplers": {"l": {"kind": "langevin"}}}, "annealed_langevin"),
        ({"mode_weights": True, "colour": "red"}, {}, "colour"),
    ],
)
def test_figures_the_study_cannot_make_are_refused(figures, sampling, needle):
    with pytest.raises(ScorebenchError, match=needle):
        tiny_config(figures=figures, sampling=sampling)


def test_score_fields_need_a_toy():
    with pytest.raises(ScorebenchError, match="figures/score_fields"):
        tiny_config(datasets={"digits": {"kind": "digits"}}, objectives={"dsm": {"kind": "dsm"}},
                    schedules={"geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}})  # fmt: skip


# ---------------------------------------------------------------------- score field


@pytest.mark.parametrize("schedule", ["none", "geom"])
def test_oracle_score_field_is_the_closed_form_mixture_score(tmp_path, schedule):
    study = tiny_config()
    spec = study.score_field_spec(Cell("mix", schedule, "oracle", 0))
    train_job(spec, tmp_path)
    score_field_job(spec, tmp_path / "model.pt", tmp_path / "field.npz")
    with np.load(tmp_path / "field.npz") as z:
        f = {k: z[k] for k in z.files}
    expected_sigmas = [0.0] if schedule == "none" else [5.0, math.sqrt(5 * 0.5), 0.5]
    np.testing.assert_allclose(f["sigmas"], expected_sigmas, rtol=1e-12)
    assert f["points"].shape == (12 * 12, 2) and f["model_score"].shape == (len(expected_sigmas), 144, 2)
    # the grid is the 'ij' product of its axes and covers the training data
    gx, gy = np.meshgrid(f["axis_x"], f["axis_y"], indexing="ij")
    np.testing.assert_array_equal(f["points"], np.stack([gx.ravel(), gy.ravel()], 1))
    train = f["train_points"]
    assert f["axis_x"][0] < train[:, 0].min() and f["axis_x"][-1] > train[:, 0].max()
    for k, s in enumerate(expected_sigmas):
        truth = two_mode_score(f["points"].astype(np.float64), s)
        np.testing.assert_allclose(f["true_score"][k], truth, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(f["model_score"][k], truth, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f["log_prob"][0] if schedule == "none" else f["log_prob0"], f["log_prob0"])
    assert json.loads(str(f["meta"]))["schedule"] == schedule


def test_trained_score_field_is_the_model_at_each_level(tmp_path):
    study = tiny_config()
    spec = study.score_field_spec(Cell("mix", "geom", "ssm", 0))
    train_job(spec, tmp_path)
    score_field_job(spec, tmp_path / "model.pt", tmp_path / "field.npz")
    with np.load(tmp_path / "field.npz") as z:
        points, sigmas, est = z["points"], z["sigmas"], z["model_score"]
    model, _ = Components(spec).trained_model(tmp_path / "model.pt", "ema")
    x = torch.from_numpy(points)
    for k, s in enumerate(sigmas):
        with torch.no_grad():
            direct = model(x, torch.full((len(x),), float(s))).numpy()
        np.testing.assert_allclose(est[k], direct, rtol=1e-5, atol=1e-6)
    assert np.abs(est[0] - est[-1]).max() > 0  # the levels really differ


def test_relative_error_map_averages_to_the_table_definition(gen):
    model = torch.randn(50, 2, generator=gen, dtype=torch.float64).numpy()
    truth = torch.randn(50, 2, generator=gen, dtype=torch.float64).numpy()
    rel = relative_error_map(model, truth)
    expected = ((model - truth) ** 2).sum(1).mean() / (truth**2).sum(1).mean()  # E err / E ‖∇log p‖²
    assert rel.mean() == pytest.approx(expected, rel=1e-12)
    assert levels_to_show([0.0]) == [0] and levels_to_show(list(range(10))) == [0, 5, 9]


# ---------------------------------------------------------------------- summary numbers


def synthetic_table(seed=0):
    """A study table shaped like the real one: grid score-error rows of a noiseless and a 4-level cell at
    their own σ, their lowest-density grid bin at the common σ 0.1 (noiseless 5, 4-level 0.5, ± 1 %),
    and mode-weight rows of two samplers × two objectives, three seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    base = {"study": "s", "dataset": "mix", "git_commit": "abc123def4567"}
    for seed_ in range(3):
        for schedule, kind, sigmas in [("none", "none", [0.0]), ("geom", "geometric", [8.0, 4.0, 2.0, 1.0])]:
            for sigma in sigmas:
                cell = {**base, "schedule": schedule, "schedule_kind": kind, "objective": "ssm", "seed": seed_,
                        "sampler": "", "sigma": sigma, "sigma_set": "own"}  # fmt: skip
                for metric in ("score_error", "score_error_norm"):
                    rows.append({**cell, "region": "grid", "bin": -1, "metric": metric, "value": rng.uniform(0.1, 1)})
                    for b in range(4):
                        rows.append({**cell, "region": "grid_bin", "bin": b, "bin_low": -40 + 10 * b,
                                     "bin_high": -30 + 10 * b, "metric": metric, "value": rng.uniform(0.001, 1)})  # fmt: skip
            common = {**base, "schedule": schedule, "schedule_kind": kind, "objective": "ssm", "seed": seed_,
                      "sampler": "", "sigma": 0.1, "sigma_set": "common", "region": "grid_bin", "bin": 0,
                      "bin_low": -40, "bin_high": -30, "metric": "score_error_norm"}  # fmt: skip
            rows.append({**common, "value": (5.0 if kind == "none" else 0.5) * rng.uniform(0.99, 1.01)})
        for objective in ("oracle", "dsm"):
            for sampler, kind in (("annealed", "annealed_langevin"), ("plain", "langevin")):
                w0 = rng.uniform(0.1, 0.5)
                cell = {**base, "schedule": "geom", "schedule_kind": "geometric", "objective": objective, "seed": seed_,
                        "sampler": sampler, "sampler_kind": kind, "sigma": math.nan, "region": "", "bin": -1}  # fmt: skip
                for metric, value in (("mode_weight_0", w0), ("mode_weight_1", 0.95 - w0), ("mode_off_fraction", 0.05),
                                      ("mode_weight_error", abs(w0 - 0.2) + 0.05)):  # fmt: skip
                    rows.append({**cell, "metric": metric, "value": value})
    return pd.DataFrame(rows)


def markdown_cells(line: str) -> list[str]:
    """The cells of a Markdown table line, stripped of the padding that aligns the columns."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_rows(text: str, *first_headers: str) -> list[dict]:
    """The rows of the first Markdown table whose header starts with `first_headers`, as dicts."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("|") and markdown_cells(line)[: len(first_headers)] == list(first_headers))  # fmt: skip
    header = markdown_cells(lines[start])
    out = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        out.append(dict(zip(header, markdown_cells(line))))
    return out


def assert_shows(cell: str, values) -> None:
    """A summary cell is the mean [95 % t-interval] (n = 3) of exactly these values (3 significant digits)."""
    from scorebench.report.stats import describe

    v = pd.Series(values, dtype=float)
    assert len(v) == 3, "every number of the synthetic table comes from 3 seeds"
    s = describe(v)
    assert cell == f"{s.mean:.3g} [{s.lo:.3g}, {s.hi:.3g}] (n = 3)"


def test_summary_numbers_are_the_tables(gen):
    df = synthetic_table()
    text = study_summary(df, MIXTURES, score_fields=True, mode_weights=True)
    grid = df[(df["metric"] == "score_error_norm") & (df["region"] == "grid_bin") & (df["sigma_set"] == "own")]
    rows = markdown_rows(text, "dataset")
    shown = {("none", 0.0), ("geom", 8.0), ("geom", 2.0), ("geom", 1.0)}  # levels_to_show of 4 levels: 0, 2, 3
    assert {(r["schedule"], float(r["own σ"])) for r in rows} == shown
    for r in rows:
        sel = grid[(grid["schedule"] == r["schedule"]) & (grid["sigma"] == float(r["own σ"]))]
        assert_shows(r["lowest-density bin"], sel[sel["bin"] == 0]["value"])
        assert_shows(r["highest-density bin"], sel[sel["bin"] == 3]["value"])
    mode_rows = markdown_rows(text, "schedule")
    assert len(mode_rows) == 4
    for r in mode_rows:
        sel = df[(df["objective"] == r["objective"]) & (df["sampler"] == r["sampler"])]
        mode_cols = [c for c in r if c.startswith("mode ")]
        assert mode_cols == ["mode 0 (-5, -5), true 0.2", "mode 1 (5, 5), true 0.8"]
        for k, col in enumerate(mode_cols):
            assert_shows(r[col], sel[sel["metric"] == f"mode_weight_{k}"]["value"])
        assert_shows(r["TV error"], sel[sel["metric"] == "mode_weight_error"]["value"])
    heavy = df[(df["metric"] == "mode_weight_1") & (df["sampler"] == "annealed") & (df["objective"] == "dsm")]
    assert f"{heavy['value'].mean():.3g}" in next(line for line in text.splitlines() if "annealed Langevin (`annealed`)" in line)
    assert "abc123def456" in text


def test_score_field_claims_follow_the_numbers_and_compare_schedules_at_the_common_sigma():
    df = synthetic_table()
    naive = (df["schedule"] == "none") & (df["region"] == "grid_bin") & (df["metric"] == "score_error_norm") \
        & (df["sigma_set"] == "own")  # fmt: skip
    paper = df.copy()  # the paper's picture: the naive model is far worse where data is scarce
    paper.loc[naive & (paper["bin"] == 0), "value"] = 10.0 * (1 + 0.01 * paper["seed"])
    paper.loc[naive & (paper["bin"] == 3), "value"] = 0.1 * (1 + 0.02 * paper["seed"])
    text = study_summary(paper, MIXTURES, score_fields=True)
    assert "score error at σ = 0: the highest-density bin better than the lowest-density bin (paired t, n = 3" in text
    # noisy vs noiseless: at the common σ 0.1 only (0.5 vs 5), never at their own σ (8 vs 0)
    assert "mix, lowest-density score error at σ = 0.1 (common): `geom` better than no noise (`none`) (paired t" in text
    contra = df.copy()
    contra.loc[naive & (contra["bin"] == 0), "value"] = 1e-4  # the naive model is best where data is scarce
    text = study_summary(contra, MIXTURES, score_fields=True)
    assert "the highest-density bin better than the lowest-density bin" not in text


# ---------------------------------------------------------------------- animation


def fake_samples(root: Path, objective: str, n_snapshots: int, rng) -> Path:
    path = root / "results" / "s" / "mix" / "geom" / objective / "seed0" / "samples" / "annealed.npz"
    path.parent.mkdir(parents=True)
    snaps = rng.normal(size=(n_snapshots, 40, 2)) * np.linspace(5, 1, n_snapshots)[:, None, None]
    np.savez(path, samples=snaps[-1], snapshots=snaps, snapshot_level=np.minimum(np.arange(n_snapshots) // 3, 3),
             snapshot_step=np.arange(n_snapshots) * 5)  # fmt: skip
    return path


def test_gif_has_one_frame_per_snapshot(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    files = [fake_samples(tmp_path, "oracle", 7, rng), fake_samples(tmp_path, "dsm", 11, rng)]
    out = tmp_path / "a.gif"
    n = annealed_animation(files, out, samplers=["annealed"], sigmas={("mix", "geom"): [8.0, 4.0, 2.0, 1.0]},
                           mixtures=MIXTURES, fps=5)  # fmt: skip
    with Image.open(out) as im:
        assert im.n_frames == n == 12  # the longest sequence (the shorter panel holds its last snapshot) + final
        assert im.info["duration"] == 200
    with pytest.raises(ScorebenchError, match="snapshots"):
        annealed_animation(files, tmp_path / "b.gif", samplers=["langevin"], sigmas={})


def test_gif_frames_draw_p_sigma_of_their_level_and_end_after_denoising(tmp_path, monkeypatch):
    import matplotlib.axes

    from scorebench.report import animation
    from scorebench.report.plotting import mixture_log_density

    one = {"means": [[1.0, -2.0]], "stds": [0.5], "weights": [1.0]}  # p_σ = N(μ, (0.25 + σ²) I)
    at_mean = mixture_log_density(one, [1.0], [-2.0], sigma=2.0)[0, 0]
    assert at_mean == pytest.approx(-math.log(2 * math.pi * (0.25 + 4.0)))
    drawn_sigmas, titles, points = [], [], []
    monkeypatch.setattr(animation, "mixture_log_density",
                        lambda mix, xs, ys, sigma=0.0: drawn_sigmas.append(sigma) or mixture_log_density(mix, xs, ys, sigma))
    original_title, original_scatter = matplotlib.axes.Axes.set_title, matplotlib.axes.Axes.scatter
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda ax, t, **kw: titles.append(t) or original_title(ax, t, **kw))
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter",
                        lambda ax, x, y, **kw: points.append(np.asarray(x)) or original_scatter(ax, x, y, **kw))
    rng = np.random.default_rng(0)
    path = fake_samples(tmp_path, "dsm", 8, rng)  # snapshot levels 0, 0, 0, 1, 1, 1, 2, 2
    sig = [8.0, 4.0, 2.0, 1.0]
    n = annealed_animation([path], tmp_path / "a.gif", samplers=["annealed"], sigmas={("mix", "geom"): sig},
                           mixtures=MIXTURES, denoising=["annealed"])  # fmt: skip
    assert n == 9
    assert sorted(set(drawn_sigmas)) == [0.0, 2.0, 4.0, 8.0]  # each frame's own level; p_0 behind the final samples
    assert "level 1/4, σ = 8" in titles[0] and "after denoising" in titles[-1]
    with np.load(path) as z:
        assert np.array_equal(points[-1], z["samples"][:, 0])  # the final frame shows the final samples
    titles.clear()
    annealed_animation([path], tmp_path / "b.gif", samplers=["annealed"], sigmas={("mix", "geom"): sig}, mixtures=MIXTURES)
    assert "final samples" in titles[-1] and "after denoising" not in titles[-1]


@pytest.mark.slow
def test_study_figures_job_writes_what_the_workflow_expects(tmp_path):
    """The figure job on a synthetic table and files: every output the rule declares exists."""
    rng = np.random.default_rng(1)
    study = tiny_config(
        figures={"score_fields": True, "mode_weights": True, "animation": True, "grid_size": 12},
        sampling={"snapshots": 4},
    )
    fields = []
    for schedule in ("none", "geom"):
        spec = study.score_field_spec(Cell("mix", schedule, "oracle", 0))
        d = tmp_path / schedule
        train_job(spec, d)
        score_field_job(spec, d / "model.pt", d / "score_field.npz")
        fields.append(d / "score_field.npz")
    table = tmp_path / "metrics.parquet"
    synthetic_table().assign(dataset="mix").to_parquet(table)
    samples = [fake_samples(tmp_path, "oracle", 5, rng)]
    out = tmp_path / "figures"
    study_figures_job(study.study_figures_spec(), table, out, fields=fields, samples=samples,
                           summary=tmp_path / "summary.md")  # fmt: skip
    assert {f.name for f in study.paper_figures} == {"score_fields", "score_error_vs_log_density", "sampler_samples",
                                                     "mode_weights", "annealed_langevin"}  # fmt: skip
    for f in study.paper_figures:
        assert (out / f.shown).stat().st_size > 5000, f.shown
        assert all((out / name).exists() for name in f.other_files), f.name
    assert "## Score fields" in (tmp_path / "summary.md").read_text()


# ---------------------------------------------------------------------- samplers at equal NFE


def nfe_table(seed=0):
    """Sample rows of 3 annealed presets (one step ratio) and 3 PC presets × 2 objectives × 3 seeds.
    PC's TV error is 0.1 below annealed's at NFE ≈ 10 and 0.1 above it at NFE ≈ 100 and 300, so at
    matched NFE PC wins one budget of three; names are listed out of NFE order on purpose."""
    rng = np.random.default_rng(seed)
    presets = [("ald_c", "annealed_langevin", 301, 0.10), ("ald_a", "annealed_langevin", 11, 0.40),
               ("ald_b", "annealed_langevin", 101, 0.20), ("pc_z", "pc", 10, 0.30),
               ("pc_y", "pc", 110, 0.30), ("pc_x", "pc", 310, 0.20)]  # fmt: skip
    rows = []
    for seed_ in range(3):
        for objective in ("dsm", "oracle"):
            for sampler, kind, nfe, tv in presets:
                cell = {"study": "s", "dataset": "mix", "schedule": "geom", "objective": objective, "seed": seed_,
                        "sampler": sampler, "sampler_kind": kind, "sampler_step_size": math.nan,
                        "sampler_step_ratio": 0.3, "sampler_snr": 0.16, "git_commit": "abc"}  # fmt: skip
                rows.append({**cell, "metric": "nfe", "value": float(nfe)})
                rows.append({**cell, "metric": "mode_weight_error", "value": tv + rng.uniform(-0.002, 0.002)})
                rows.append({**cell, "metric": "mmd_rbf", "value": tv**2 + rng.uniform(-0.001, 0.001)})
    return pd.DataFrame(rows)


def test_sampler_nfe_summary_compares_at_matched_nfe_with_the_tables_numbers():
    from scorebench.report.sampler_nfe import sampler_nfe_numbers

    df = nfe_table()
    nums = sampler_nfe_numbers(df)
    for r in nums.to_dict("records"):  # each preset's numbers are its own rows (not another preset's)
        sel = df[(df["sampler"] == r["sampler"]) & (df["objective"] == r["objective"])]
        assert r["nfe"] == sel[sel["metric"] == "nfe"]["value"].iloc[0]
        assert r["mode_weight_error"] == pytest.approx(sel[sel["metric"] == "mode_weight_error"]["value"].mean())
    assert set(nums["family"]) == {"annealed Langevin, step ratio 0.3", "predictor–corrector, snr 0.16"}
    text = study_summary(df, sampler_nfe=True)
    matched = [r for r in markdown_rows(text, "dataset") if "PC preset (NFE)" in r]
    assert matched == [], "the first table lists presets"
    pairs = markdown_rows(text, "dataset", "objective", "PC preset (NFE)")
    assert [(p["objective"], p["PC preset (NFE)"], p["best annealed (NFE)"]) for p in pairs] == [
        (obj, pc, ald) for obj in ("dsm", "oracle")
        for pc, ald in (("pc_z (10)", "ald_a (11)"), ("pc_y (110)", "ald_b (101)"), ("pc_x (310)", "ald_c (301)"))
    ]  # fmt: skip
    tv = df[df["metric"] == "mode_weight_error"]
    for p in pairs:
        sampler = p["PC preset (NFE)"].split()[0]
        mine = tv[(tv["sampler"] == sampler) & (tv["objective"] == p["objective"])]
        assert_shows(p["PC mode-weight TV error"], mine["value"])
    assert [p["better"] for p in pairs[:3]] == ["predictor–corrector", "annealed Langevin", "annealed Langevin"]
    verdict = ("- mode-weight TV error, `oracle`: no single verdict across budgets: predictor–corrector better at 1, "
               "annealed Langevin better at 2, not resolved at 0 of 3 matched budgets")  # fmt: skip
    assert verdict in text
    assert "mode-weight TV error, mix `dsm`: `pc_z` (NFE 10) better than `ald_a` (NFE 11) (paired t, n = 3" in text
    close = df.copy()  # PC within noise of annealed at every budget: no winner
    tv_rows = close["metric"] == "mode_weight_error"
    spread = close["seed"].map({0: 0.0, 1: 0.05, 2: -0.05}) + 0.01 * (close["sampler_kind"] == "pc")  # sd 0.05 ≫ 0.01
    close.loc[tv_rows, "value"] = 0.3 + spread[tv_rows]
    text = study_summary(close, sampler_nfe=True)
    assert ("mode-weight TV error, `dsm`: no single verdict across budgets: predictor–corrector better at 0, annealed "
            "Langevin better at 0, not resolved at 3 of 3 matched budgets") in text


def test_sampler_nfe_figure_is_written(tmp_path):
    written = make_paper_figures(ReportInputs(nfe_table(), settings={"sampler_nfe": True}, figures_dir=tmp_path))
    assert [p.name for p in written] == ["sampler_nfe.png", "sampler_nfe.pdf"]
    assert (tmp_path / "sampler_nfe.png").stat().st_size > 20000  # drawn, not the one-line empty note
