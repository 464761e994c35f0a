"""End to end: the tiny test study (.test/config/config.yaml) through real `snakemake` runs.

One module-scoped run in a temporary folder feeds every test: the table's shape and provenance,
a no-op rerun, a one-preset edit that reruns only its cells, and config errors that stop the
workflow before any job starts.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in (workdir / "results").rglob("*.log"))
        raise AssertionError(f"snakemake failed:\n{proc.stderr[-4000:]}\n{logs[-6000:]}")
    return proc


def job_counts(dry_run_output: str) -> dict:
    """Rule -> job count from Snakemake's 'Job stats' table."""
    table = dry_run_output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("study")
    (work / "config").mkdir()
    shutil.copy(ROOT / ".test" / "config" / "config.yaml", work / "config" / "config.yaml")
    snakemake(work, "--cores", "2")
    return work


def test_table_is_tidy_with_provenance(study):
    import pandas as pd

    config = yaml.safe_load((study / "config" / "config.yaml").read_text())
    df = pd.read_parquet(study / "results" / "test" / "metrics.parquet")
    for col in ["study", "dataset", "schedule", "objective", "seed", "sampler", "metric", "value", "sigma",
                "schedule_kind", "schedule_weighting", "objective_kind", "model_arch", "training_steps",
                "git_commit", "version_torch", "device_type", "train_wall_s", "train_gpu_hours",
                "sample_wall_s", "sample_gpu_hours"]:  # fmt: skip
        assert col in df.columns, col
    assert df["train_wall_s"].notna().all() and (df["train_gpu_hours"] == 0).all()  # CPU run: no GPU hours
    assert df.loc[df["sampler"] != "", "sample_wall_s"].gt(0).all()
    for col in ["study", "cell", "seed", "metric"]:
        assert df[col].notna().all(), col
    cells = df["cell"].unique()
    assert len(cells) == 2 * 2 * 2 - 2  # 2 datasets × 2 schedules × 2 objectives, minus dsm without noise
    # one score-error row per cell × own σ × metric for region "all" (the common σ list: rows of their own)
    se = df[(df["metric"] == "score_error") & (df["region"] == "all") & (df["sigma_set"] == "own")]
    noiseless = config["evaluation"]["score_error"]["noiseless_sigmas"]
    for cell, rows in se.groupby("cell"):
        dataset, schedule = cell.split("/")[:2]
        if schedule == "geom":
            expected = 3
        else:  # the empirical image score exists only for σ > 0
            expected = len(noiseless) if dataset == "mix" else len([s for s in noiseless if s > 0])
        assert len(rows) == expected, cell
    # sample-quality rows: one per cell × sampler × metric
    sq = df[df["sampler"] == "annealed"]
    assert set(sq[sq["dataset"] == "mix"]["metric"]) >= {"mmd_rbf", "sliced_wasserstein", "mode_weight_error"}
    assert set(sq[sq["dataset"] == "digits"]["metric"]) >= {"fid", "kid_mean", "precision", "recall"}
    assert not sq.duplicated(["cell", "sampler", "metric"]).any()
    assert (study / "results" / "test" / "tables" / "summary.md").read_text().count("|") > 10
    for name in ["score_error_vs_sigma", "samples", "training_curves"]:
        assert (study / "results" / "test" / "figures" / f"{name}.png").stat().st_size > 5000


def test_rerun_is_a_no_op(study):
    out = snakemake(study, "-n", "--cores", "2")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_one_preset_edit_reruns_only_its_cells(study, tmp_path):
    work = tmp_path / "edit"
    shutil.copytree(study, work, symlinks=True)
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["schedules"]["geom"]["levels"] = 4
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = snakemake(work, "-n", "--cores", "2")
    counts = job_counts(out.stdout)
    assert counts.get("train") == 4  # {mix, digits} × geom × {ssm, dsm}; the `none` cells stay
    assert counts.get("reference_stats", 0) == 0


# Snakemake's first line whenever it applies the workflow profile (profiles/default) by itself
PROFILE_NOTICE = re.compile(r"\AUsing workflow specific profile \S*profiles/default for setting default command line arguments\.\n")


def one_line_refusal(out, needle):
    """A config error: exit != 0, one line on stderr naming the problem (after Snakemake's notice
    that it applies the workflow profile), at most 3 lines in all."""
    assert out.returncode != 0
    lines = (out.stdout + out.stderr).strip().splitlines()
    stderr = PROFILE_NOTICE.sub("", out.stderr).strip()
    assert len(lines) <= 3 and len(stderr.splitlines()) == 1, out.stdout + out.stderr
    assert stderr.startswith("scorebench: error: config") and needle in stderr, out.stderr


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda c: c.update(datsets=c.pop("datasets")), "config datsets: unknown key; allowed keys here: data_dir, datasets"),
        (lambda c: c["schedules"]["geom"].update(levls=c["schedules"]["geom"].pop("levels")), "schedules/geom/levls: unknown key"),
        (lambda c: c["datasets"].update(bad={"kind": "imagenet"}), "datasets/bad/kind: 'imagenet' is not one of ['gmm_2mode'"),
        (lambda c: c["schedules"].update(bad={"kind": "explicit", "sigmas": [0.1, 0.5]}), "strictly decreasing"),
    ],
)
def test_bad_config_is_one_line_before_any_job(tmp_path, edit, needle):
    """Before: 1,067 (top-level typo), 53 (nested typo) and 23 (bad value) lines of schema dump."""
    cfg = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    edit(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    one_line_refusal(snakemake(tmp_path, "-n", "--configfile", str(bad), check=False), needle)
    out = snakemake(tmp_path, "--cores", "1", "--configfile", str(bad), check=False)
    one_line_refusal(out, needle)
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("  geom: {kind: geometric, sigma_max: 3.0, sigma_min: 0.1, levels: 3}\n  geom: {kind: none}\n", "config/config.yaml:16: duplicate key 'geom' (first at line 15)"),
        ("  geom: {kind: geometric, sigma_max: 3.0, sigma_min: 0.1, levels: 3\n", "config/config.yaml:16:11: YAML syntax error"),
    ],
)
def test_yaml_mistakes_name_file_and_line(tmp_path, text, needle):
    """A duplicate key (YAML keeps the last silently) is refused in any config file; a syntax error
    in the default config names its line (in a --configfile, Snakemake reports it before any
    workflow code runs: `scorebench check --config FILE` names the line)."""
    lines = (ROOT / ".test" / "config" / "config.yaml").read_text().splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if line.startswith("  geom:"))
    assert i == 14  # the needles' line numbers
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("".join(lines[:i]) + text + "".join(lines[i + 1 :]))
    one_line_refusal(snakemake(tmp_path, "-n", check=False), needle)
    if "duplicate" in needle:
        path = tmp_path / "config" / "config.yaml"
        out = snakemake(tmp_path, "-n", "--configfile", str(path), check=False)
        one_line_refusal(out, needle.replace("config/config.yaml", str(path)))


def _faces(kind):
    def edit(c, work):
        from PIL import Image

        np.savez(work / "faces.npz", x=np.zeros((6, 8, 8), np.uint8))
        (work / "faces").mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(work / "faces" / "0.png")
        c["datasets"]["faces"] = {"kind": kind, "options": {"path": "faces.npz" if kind == "npz" else "faces"}}

    return edit


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_faces("npz"), "config evaluation/fid/extractor: feature_net trains on class labels, but dataset faces (kind npz)"),
        (_faces("image_folder"), "but dataset faces (kind image_folder) has none"),
        (lambda c, w: c["sampling"]["samplers"]["annealed"].update(step_size=0), "annealed/step_size: must be > 0, got 0"),
        (lambda c, w: c["sampling"]["samplers"]["annealed"].update(step_size=-0.1), "must be > 0, got -0.1"),
        (lambda c, w: c.update(seeds=[0, 0]), "config seeds: [0, 0] repeats a value"),
        (lambda c, w: c["schedules"]["geom"].update(sigma_max=float("inf")), "geom/sigma_max: must be a finite number, got inf"),
        (lambda c, w: c["schedules"]["geom"].update(sigma_max=1e30), "geom/sigma_max: 1e+30 is outside float32's range"),
        (lambda c, w: c["schedules"]["geom"].update(levels=100000), "one chain takes 500,001 network evaluations"),
        ("duplicate", "duplicate key 'geom' (first at line 15)"),
    ],
)
def test_settings_that_cannot_finish_are_refused_before_any_job(tmp_path, edit, needle):
    """Issue 17's cases each failed after training (at reference-stats, evaluate-pack, in training
    or in metrics). Now `snakemake` refuses them in one line, and a study's finished files stay."""
    text = (ROOT / ".test" / "config" / "config.yaml").read_text()
    if edit == "duplicate":
        line = "  geom: {kind: geometric, sigma_max: 3.0, sigma_min: 0.1, levels: 3}\n"
        text = text.replace(line, line + line.replace("levels: 3", "levels: 4"))
    else:
        cfg = yaml.safe_load(text)
        edit(cfg, tmp_path)
        text = yaml.safe_dump(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    finished = {tmp_path / "results" / "test" / "mix" / "geom" / "dsm" / "seed0" / "model.pt": b"a finished model",
                tmp_path / "results" / "test" / "metrics.parquet": b"a finished table"}  # fmt: skip
    for path, content in finished.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (1_000_000_000, 1_000_000_000))
    before = sorted((tmp_path / "results").rglob("*"))
    one_line_refusal(snakemake(tmp_path, "--cores", "1", "--configfile", str(bad), check=False), needle)
    assert sorted((tmp_path / "results").rglob("*")) == before  # no job started, nothing was written
    for path, content in finished.items():
        assert path.read_bytes() == content and path.stat().st_mtime == 1_000_000_000


def test_lint_and_format_are_clean():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "-s", str(SNAKEFILE)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
    files = [str(SNAKEFILE), *map(str, (ROOT / "workflow" / "rules").glob("*.smk"))]
    fmt = subprocess.run(["snakefmt", "--check", *files], capture_output=True, text=True, timeout=300)
    assert fmt.returncode == 0, fmt.stderr[-3000:]


def test_default_study_dry_run_lists_every_job():
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "-s", str(SNAKEFILE)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    counts = job_counts(out.stdout)
    from scorebench.study import Study, load_config

    study = Study(load_config(ROOT / "config" / "config.yaml"))
    packed = sum(len(cells) for cells in study.packs.values())
    assert packed and counts.get("train_pack", 0) == len(study.packs)  # the default study packs its toy cells
    # toy cells are sampled and evaluated in groups, one evaluate_pack job per group
    grouped = sum(len(cells) for cells in study.eval_groups.values())
    groups = sum(len(study.eval_shards(name)) for name in study.eval_groups)
    assert counts.get("evaluate_pack", 0) == groups < grouped
    assert counts["train"] == len(study.cells) - packed
    assert counts["score_error"] == len(study.cells) - grouped > 0  # the image cells: one job per cell and rule
    assert counts["sample"] == counts["evaluate"] == len(study.samplers) * (len(study.cells) - grouped)


def test_report_bundles_the_figures(study):
    report = study / "results" / "test" / "report.html"
    snakemake(study, "--report", str(report))
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000 and "score_error_vs_sigma.png" in html
    assert "summary.md" in html  # the summary tables are in the report too
