"""The shipped SLURM profile (slurm/config.yaml), for real: `snakemake --profile slurm` from the
repository root against a single-node SLURM brought up on localhost (tests/slurm_cluster.py).

- Dry run (no SLURM needed): `--profile slurm` resolves the shipped profile from the repository root
  and every training, sampling and evaluation job asks for one GPU; the summary jobs ask for none.
- A tiny study goes through sbatch (job ids in Snakemake's log match the controller's records, each
  per-cell SLURM job asked for a GPU) and its table equals a local run's value for value: same
  seeds, CPU, one thread, so only wall times and the host may differ.
- A training job cancelled mid-run (scancel: SIGTERM) writes its checkpoint, Snakemake's retry
  resumes it from that step, the study completes, and a rerun has nothing to do.

The cluster needs root and Debian's slurm-wlm; without them the SLURM tests skip with the reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from slurm_cluster import SlurmCluster, SlurmUnavailable, ensure_installed

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "slurm" / "config.yaml"
GPU_RULES = {"train", "sample", "evaluate", "score_error", "reference_stats", "evaluate_pack", "train_pack"}
CPU_RULES = {"aggregate", "figures"}
# provenance that legitimately differs between two runs of the same study
RUN_COLUMNS = re.compile(r"wall|host|git_commit|^time")


def snakemake_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def local_env() -> dict:
    """The caller's environment minus a profile chosen through the environment."""
    return {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}


def tiny_study(name: str, objectives=("ssm", "dsm"), **training) -> dict:
    """The CI study (.test/config) cut to its 2-D toy with 3 σ levels: one cell per objective."""
    cfg = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    cfg["study"] = name
    cfg["datasets"] = {k: v for k, v in cfg["datasets"].items() if v["kind"] != "digits"}
    cfg["schedules"] = {k: v for k, v in cfg["schedules"].items() if v["kind"] != "none"}
    cfg["objectives"] = {k: v for k, v in cfg["objectives"].items() if k in objectives}
    cfg["exclude"] = []
    cfg["evaluation"].pop("fid", None)
    cfg["training"].update(training)
    return cfg


def make_workdir(path: Path, cfg: dict) -> Path:
    (path / "config").mkdir(parents=True)
    (path / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------------------------
# dry run: no SLURM needed


def parse_dry_run(text: str) -> list[dict]:
    """One dict per job of `snakemake -n` output: rule, group (or None) and resources."""
    jobs, group = [], None
    for line in text.splitlines():
        if m := re.search(r"Group job (\w+)", line):
            group = m.group(1)
        elif m := re.match(r"(\s*)rule (\w+):", line):
            jobs.append({"rule": m.group(2), "group": group if m.group(1) else None, "resources": {}})
        elif m := re.match(r"\s+resources: (.*)", line):
            jobs[-1]["resources"] = dict(kv.split("=", 1) for kv in m.group(1).split(", "))
    return jobs


def test_profile_resolves_from_repo_root_and_lists_gpu_requests():
    """`snakemake --profile slurm -n` as a user types it, in the repository root."""
    env = local_env()
    out = subprocess.run(snakemake_cmd("--profile", "slurm", "-n", "--forceall", "--nolock"), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "Using profile slurm" in text
    jobs = parse_dry_run(text)
    rules = {j["rule"] for j in jobs}
    assert {"train", "sample", "evaluate", "score_error", "aggregate", "figures"} <= rules
    profile = yaml.safe_load(PROFILE.read_text())
    for job in jobs:
        res = job["resources"]
        if job["rule"] in GPU_RULES:
            assert res.get("gpu") == "1", job
            assert "gpu_model" in res, job
        elif job["rule"] in CPU_RULES:
            assert "gpu" not in res, job
        if job["rule"] != "all":
            assert res["slurm_partition"] == profile["default-resources"]["slurm_partition"], job
            assert res["slurm_account"] == profile["default-resources"]["slurm_account"], job
            assert int(res["runtime"]) > 0 and int(res["mem_mb"]) > 0, job
            assert "--signal=TERM@" in res["slurm_extra"], job
    # the per-cell jobs travel as one group; the two summary rules as another
    assert {j["group"] for j in jobs if j["rule"] in {"train", "sample", "evaluate", "score_error"}} == {"cell"}
    assert {j["group"] for j in jobs if j["rule"] in CPU_RULES} == {"summary"}


def test_every_profile_entry_is_commented():
    """Each entry of the profile and of its default resources has a comment line right above it."""
    lines = PROFILE.read_text().splitlines()
    entries = [i for i, line in enumerate(lines) if re.match(r"[a-z][\w-]*:", line)]
    block = entries.index(lines.index("default-resources:"))
    end = entries[block + 1]
    entries += [i for i in range(lines.index("default-resources:"), end) if re.match(r"  \w+:", lines[i])]
    assert len(entries) >= 15
    for i in entries:
        assert lines[i - 1].lstrip().startswith("#"), f"slurm/config.yaml line {i + 1} ({lines[i]!r}) has no comment"


# ---------------------------------------------------------------------------------------------
# a real cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        ensure_installed()
    except SlurmUnavailable as exc:
        pytest.skip(f"no single-node SLURM on this machine: {exc}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        cluster.stop()
        pytest.skip(f"no single-node SLURM on this machine: {exc}")
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


def slurm_run(cluster: SlurmCluster, workdir: Path, *extra, background=False):
    """`snakemake --profile slurm` from the repository root, aimed at the test cluster.

    The profile's default resources are passed on with partition and account replaced (a command-line
    option replaces the profile's whole entry). Without slurmdbd there is no sacct, so the executor
    polls squeue; short status intervals keep the test quick.
    """
    profile = yaml.safe_load(PROFILE.read_text())
    defaults = dict(profile["default-resources"], slurm_partition=cluster.partition, slurm_account="scorebench")
    cmd = snakemake_cmd(
        "--profile", "slurm", "--directory", str(workdir),
        "--default-resources", *[f"{k}={v}" for k, v in defaults.items()],
        "--slurm-status-command", "squeue",
        "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
        *extra,
    )  # fmt: skip
    kw = dict(cwd=ROOT, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if background:
        return subprocess.Popen(cmd, **kw)
    return subprocess.run(cmd, timeout=900, **kw)


def explain(out: str, workdir: Path, cluster: SlurmCluster) -> str:
    logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-1500:]}" for p in workdir.rglob("*.log"))
    return f"{out[-5000:]}\n{logs[-6000:]}\n{cluster.daemon_logs(1500)}"


def submitted_ids(out: str) -> list[str]:
    return re.findall(r"has been submitted with SLURM jobid (\d+)", out)


def read_table(workdir: Path, study: str):
    import pandas as pd

    df = pd.read_parquet(workdir / "results" / study / "metrics.parquet")
    df = df[~df["metric"].str.contains("wall")]  # e.g. sample_wall_s
    df = df[[c for c in df.columns if not RUN_COLUMNS.search(c)]]
    keys = ["cell", "sampler", "metric", "region", "bin", "sigma_index", "bin_by"]
    return df.sort_values([k for k in keys if k in df.columns]).reset_index(drop=True)


@pytest.fixture(scope="module")
def study_runs(cluster, tmp_path_factory):
    """The same tiny study run through SLURM and, meanwhile, locally without a profile."""
    cfg = tiny_study("slurm")
    on_slurm = make_workdir(tmp_path_factory.mktemp("on_slurm"), cfg)
    local = make_workdir(tmp_path_factory.mktemp("local"), cfg)
    # niced: it fills the executor's polling pauses instead of slowing the SLURM jobs down
    local_cmd = snakemake_cmd("-s", str(ROOT / "Snakefile"), "--directory", str(local), "--cores", "2")
    local_proc = subprocess.Popen(["nice", "-n", "19", *local_cmd], cwd=ROOT, env=local_env(), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    run = slurm_run(cluster, on_slurm)
    local_out, _ = local_proc.communicate(timeout=600)
    assert run.returncode == 0, explain(run.stdout, on_slurm, cluster)
    assert local_proc.returncode == 0, local_out[-4000:]
    return {"slurm": on_slurm, "local": local, "out": run.stdout}


@pytest.mark.slurm
@pytest.mark.slow
def test_jobs_go_through_sbatch_with_gpu_requests(cluster, study_runs):
    ids = submitted_ids(study_runs["out"])
    assert ids, "Snakemake's log names no SLURM job id"
    known = cluster.jobs()
    assert set(ids) <= set(known), (ids, sorted(known))
    for job_id in ids:
        job = known[job_id]
        assert job["JobState"] == "COMPLETED", job
        assert job["Partition"] == cluster.partition, job
        # the per-cell group (training, and sampling and evaluation of image cells), and the toy
        # cells' evaluation groups
        if job["Comment"].startswith(("rule_cell", "rule_evaluate_pack")):
            assert "gpu:1" in job.get("TresPerJob", ""), job
            assert job["TimeLimit"] != "UNLIMITED", job
        else:
            assert job["Comment"].startswith("rule_summary"), job
            assert "gpu" not in job.get("TresPerJob", "") + job.get("TRES", ""), job
    assert any(known[i]["Comment"].startswith("rule_summary") for i in ids)
    assert any(known[i]["Comment"].startswith("rule_evaluate_pack") for i in ids)
    assert (study_runs["slurm"] / "results" / "slurm" / "metrics.parquet").exists()


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_table_equals_local_table(study_runs):
    import pandas as pd

    on_slurm, local = read_table(study_runs["slurm"], "slurm"), read_table(study_runs["local"], "slurm")
    assert len(on_slurm) > 50
    assert set(on_slurm["device_type"]) == {"cpu"}  # placeholder GPUs: the jobs really ran on the CPU
    pd.testing.assert_frame_equal(on_slurm, local, check_exact=True)


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_training_resumes_from_its_checkpoint(cluster, tmp_path):
    steps = 6000  # a few seconds of training; the only periodic checkpoint is the last step
    cfg = tiny_study("resume", objectives=("dsm",), steps=steps, checkpoint_every=steps, log_every=50)
    work = make_workdir(tmp_path / "resume", cfg)
    cell = work / "results" / "resume" / "mix" / "geom" / "dsm" / "seed0"
    train_log = work / "results" / "resume" / "logs" / "train" / "mix" / "geom" / "dsm" / "seed0.log"

    proc = slurm_run(cluster, work, background=True)
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    cancelled = None
    deadline = time.monotonic() + 300
    while cancelled is None and time.monotonic() < deadline and proc.poll() is None:
        lines = (cell / "train_log.jsonl").read_text().splitlines() if (cell / "train_log.jsonl").exists() else []
        if len(lines) >= 4:  # training is under way: stop it the way a user or the scheduler would
            running = [i for i, j in cluster.jobs().items() if j["JobState"] == "RUNNING"]
            assert len(running) == 1, cluster.jobs()
            cancelled = running[0]
            cluster.scancel(cancelled)
        time.sleep(0.2)
    assert cancelled is not None, "training never got under way:\n" + "".join(output)
    proc.wait(timeout=600)
    reader.join(timeout=10)
    out = "".join(output)
    assert proc.returncode == 0, explain(out, work, cluster)

    jobs = cluster.jobs()
    assert jobs[cancelled]["JobState"] == "CANCELLED", jobs[cancelled]
    later = [i for i in submitted_ids(out) if int(i) > int(cancelled) and jobs[i]["Comment"].startswith("rule_cell")]
    assert later and jobs[later[0]]["JobState"] == "COMPLETED", jobs  # Snakemake's retry, no user action

    resumed = set(re.findall(r"resumed from step (\d+)", train_log.read_text(errors="replace")))
    assert len(resumed) == 1, train_log.read_text(errors="replace")[:2000]
    assert 0 < int(resumed.pop()) < steps  # only the signal handler writes a checkpoint before the last step
    records = [json.loads(line) for line in (cell / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(50, steps + 1, 50))  # the log carries on seamlessly
    assert (work / "results" / "resume" / "metrics.parquet").exists()

    again = slurm_run(cluster, work)  # a rerun redoes nothing
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Nothing to be done" in again.stdout
    assert not submitted_ids(again.stdout)
