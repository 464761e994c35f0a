"""SLURM as a cluster user meets it: the site profile template (profiles/slurm) filled in and passed
by path, the workflow profile (profiles/default) added by Snakemake itself.

Without SLURM (dry runs):
- The template as shipped is refused once, in one line naming the key to set; a filled copy in the
  user's config folder is what `--profile slurm` finds from the repository root.
- For the default and every `_cluster` study, no SLURM job (group jobs included, computed as for a
  cluster run) asks more CPUs than this machine has, and no group asks more than 3 hours.

On a real single-node SLURM (tests/slurm_cluster.py), twice: without accounting, and with slurmdbd
and MariaDB as most sites run it (then `sacct` works and reports a cancelled job as "CANCELLED by
<uid>", which the executor plugin's sacct path does not recognise; the profile's squeue path does):
- A tiny study goes through sbatch with the requests the rules make, and its table equals a local
  run's value for value.
- A training job cancelled mid-run (scancel) is resubmitted by Snakemake without user action and
  resumes from its checkpoint ("resumed from step N"); a rerun has nothing to do.
- A rule asking more CPUs than the node has is refused before any job, naming the rule.

The cluster needs root and Debian's slurm-wlm (and slurmdbd and mariadb-server); without them the
SLURM tests skip with the reason.
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
TEMPLATE = ROOT / "profiles" / "slurm" / "config.yaml"
WORKFLOW_PROFILE = ROOT / "profiles" / "default" / "config.yaml"
GPU_RULES = {"train", "sample", "evaluate", "score_error", "score_field", "reference_stats", "evaluate_pack",
             "train_pack"}  # fmt: skip
NODE_CPUS = os.cpu_count() or 1  # the test cluster's node is this machine
GROUP_LIMIT_MIN = 180  # the longest chain of a group: training (120) then score error (60)
# provenance that legitimately differs between two runs of the same study
RUN_COLUMNS = re.compile(r"wall|host|git_commit|^time")


def snakemake_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def local_env() -> dict:
    """The caller's environment minus a profile chosen through the environment."""
    return {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}


def site_profile(folder: Path, account: str = "scorebench", partition: str = "sbtest") -> Path:
    """A user's copy of the site profile template with account and partition filled in."""
    folder.mkdir(parents=True, exist_ok=True)
    text = TEMPLATE.read_text()
    text = text.replace("slurm_account: EDIT_ME", f"slurm_account: {account}")
    text = text.replace("slurm_partition: EDIT_ME", f"slurm_partition: {partition}")
    (folder / "config.yaml").write_text(text)
    return folder


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
# dry runs: no SLURM needed


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


def test_the_template_is_refused_once_until_filled_in():
    out = subprocess.run(snakemake_cmd("--profile", "profiles/slurm", "-n", "--forceall", "--nolock"), cwd=ROOT,
                         env=local_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode != 0
    errors = [line for line in (out.stdout + out.stderr).splitlines() if "error" in line.lower()]
    assert len(errors) == 1, errors
    assert "default-resources: slurm_account is still the site profile template's placeholder EDIT_ME" in errors[0]
    assert "Job stats" not in out.stdout + out.stderr  # stopped before any job was planned


def test_profile_slurm_finds_the_users_copy_from_the_repository_root(tmp_path):
    """`--profile slurm` from the repository root: nothing in the repository shadows the user's
    site profile (~/.config/snakemake/slurm, here under XDG_CONFIG_HOME), and the workflow profile
    joins it by itself."""
    site_profile(tmp_path / "config" / "snakemake" / "slurm", account="acct_x", partition="part_y")
    env = dict(local_env(), XDG_CONFIG_HOME=str(tmp_path / "config"))
    out = subprocess.run(snakemake_cmd("--profile", "slurm", "-n", "--forceall", "--nolock"), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "Using profiles slurm and workflow specific profile profiles/default" in text
    jobs = [j for j in parse_dry_run(text) if j["rule"] != "all"]
    assert jobs
    for job in jobs:
        res = job["resources"]
        assert res["slurm_account"] == "acct_x" and res["slurm_partition"] == "part_y", job
        assert res["slurm_extra"] == "--signal=TERM@120", job
        assert (res.get("gpu") == "1" and "gpu_model" in res) == (job["rule"] in GPU_RULES), job
    assert {j["group"] for j in jobs if j["rule"] in {"train", "score_error"}} == {"cell"}
    assert {j["group"] for j in jobs if j["rule"] in {"sample", "evaluate"}} == {"draw"}
    assert {j["group"] for j in jobs if j["rule"] in {"aggregate", "figures"}} == {"summary"}


STUDIES = ["config/config.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "config" / "studies").glob("*_cluster.yaml"))]


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_every_request_fits_the_node_and_groups_stay_short(study, tmp_path):
    """What each SLURM job of a study asks for (groups computed as Snakemake does for a cluster run,
    tests/slurm_requests.py): at most this machine's CPUs, a group's time at most 3 hours."""
    profile = site_profile(tmp_path / "site")
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "slurm_requests.py"), "--json", "--profile", str(profile),
                          "--configfile", study], cwd=ROOT, env=local_env(), capture_output=True, text=True,
                         timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = json.loads(out.stdout.splitlines()[-1])
    assert jobs
    for job in jobs:
        assert 1 <= job["cpus"] <= NODE_CPUS, job
        assert job["mem_mb"] <= 16000 and job["runtime"] <= 240, job
        if job["name"].startswith("group "):
            assert job["runtime"] <= GROUP_LIMIT_MIN, job
            assert job["gpu"] <= 1, job  # the jobs of a group take turns on one GPU
        elif job["name"] in GPU_RULES:
            assert job["gpu"] == 1 and job["gpu_model"] == "", job


def test_every_profile_entry_is_commented():
    """Each top-level entry of both profiles, and each default resource, has a comment line above it."""
    for path in (TEMPLATE, WORKFLOW_PROFILE):
        lines = path.read_text().splitlines()
        entries = [i for i, line in enumerate(lines) if re.match(r"[a-z][\w-]*:", line)]
        if "default-resources:" in lines:
            start = lines.index("default-resources:")
            entries += [i for i in range(start + 1, len(lines)) if re.match(r"  \w+:", lines[i])][:2]
        assert len(entries) >= 5, path
        for i in entries:
            assert lines[i - 1].lstrip().startswith("#"), f"{path} line {i + 1} ({lines[i]!r}) has no comment"


def test_the_profiles_share_no_key():
    """For a key in both, Snakemake takes the workflow profile's value whole: the site's would be lost."""
    site, workflow = yaml.safe_load(TEMPLATE.read_text()), yaml.safe_load(WORKFLOW_PROFILE.read_text())
    assert not set(site) & set(workflow)


# ---------------------------------------------------------------------------------------------
# a real cluster, without and with accounting


@pytest.fixture(scope="module", params=[False, True], ids=["no_accounting", "accounting"])
def cluster(request, tmp_path_factory):
    accounting = request.param
    try:
        ensure_installed(accounting=accounting)
    except SlurmUnavailable as exc:
        pytest.skip(f"no single-node SLURM on this machine: {exc}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), accounting=accounting)
    try:
        cluster.start()
    except SlurmUnavailable as exc:
        cluster.stop()
        pytest.skip(f"no single-node SLURM on this machine: {exc}")
    except Exception:
        cluster.stop()
        raise
    cluster.profile = site_profile(tmp_path_factory.mktemp("site"), account=cluster.account, partition=cluster.partition)
    yield cluster
    cluster.stop()


def slurm_run(cluster: SlurmCluster, workdir: Path, *extra, background=False):
    """`snakemake --profile SITE_COPY` from the repository root, as a user runs it; short status
    intervals keep the test quick."""
    cmd = snakemake_cmd(
        "--profile", str(cluster.profile), "--directory", str(workdir),
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
def local_run(tmp_path_factory):
    """The tiny study run locally without a site profile, started in the background (niced: it
    fills the executor's polling pauses instead of slowing the SLURM jobs down)."""
    local = make_workdir(tmp_path_factory.mktemp("local"), tiny_study("slurm"))
    cmd = snakemake_cmd("-s", str(ROOT / "Snakefile"), "--directory", str(local), "--cores", "2")
    proc = subprocess.Popen(["nice", "-n", "19", *cmd], cwd=ROOT, env=local_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip

    def result() -> Path:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, (out or "")[-4000:]
        return local

    return result


@pytest.fixture(scope="module")
def study_runs(cluster, local_run, tmp_path_factory):
    """The tiny study through SLURM, and the local run to compare it with."""
    on_slurm = make_workdir(tmp_path_factory.mktemp("on_slurm"), tiny_study("slurm"))
    t0 = time.monotonic()
    run = slurm_run(cluster, on_slurm)
    wall = time.monotonic() - t0
    assert run.returncode == 0, explain(run.stdout, on_slurm, cluster)
    print(f"\n[{'accounting' if cluster.accounting else 'no accounting'}] tiny study through SLURM: {wall:.0f} s")
    return {"slurm": on_slurm, "local": local_run(), "out": run.stdout}


def minutes(limit: str) -> float:
    """SLURM's TimeLimit (D-HH:MM:SS, HH:MM:SS or MM:SS) in minutes."""
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + parts[2] / 60


@pytest.mark.slurm
@pytest.mark.slow
def test_jobs_go_through_sbatch_with_their_requests(cluster, study_runs):
    ids = submitted_ids(study_runs["out"])
    assert ids, "Snakemake's log names no SLURM job id"
    known = cluster.jobs()
    assert set(ids) <= set(known), (ids, sorted(known))
    kinds = set()
    for job_id in ids:
        job = known[job_id]
        # the plugin's comment: rule_{rule}_wildcards_... for a job, rule_{group}_{rules} for a group job
        kind = next(k for k in ("cell", "evaluate_pack", "summary", "") if job["Comment"].startswith(f"rule_{k}"))
        kinds.add(kind)
        assert job["JobState"] == "COMPLETED", job
        assert job["Partition"] == cluster.partition and job["Account"] == cluster.account, job
        assert 1 <= int(job["NumCPUs"]) <= NODE_CPUS, job
        assert "--signal" not in job.get("Command", "")  # (the signal is an sbatch option, not part of the script)
        if kind in ("cell", "evaluate_pack"):  # training, and the toy cells' evaluation groups
            assert "gpu:1" in job.get("TresPerJob", ""), job
            assert minutes(job["TimeLimit"]) <= (GROUP_LIMIT_MIN if kind == "cell" else 240), job
        else:
            assert kind == "summary", job
            assert "gpu" not in job.get("TresPerJob", "") + job.get("TRES", ""), job
            assert minutes(job["TimeLimit"]) <= 60, job
    assert kinds == {"cell", "evaluate_pack", "summary"}
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
def test_cancelled_training_is_resubmitted_and_resumes(cluster, tmp_path):
    steps = 6000  # a few seconds of training; the only periodic checkpoint is the last step
    cfg = tiny_study("resume", objectives=("dsm",), steps=steps, checkpoint_every=steps, log_every=50)
    work = make_workdir(tmp_path / "resume", cfg)
    cell = work / "results" / "resume" / "mix" / "geom" / "dsm" / "seed0"
    train_log = work / "results" / "resume" / "logs" / "train" / "mix" / "geom" / "dsm" / "seed0.log"

    proc = slurm_run(cluster, work, background=True)
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    cancelled, cancelled_at = None, None
    deadline = time.monotonic() + 300
    while cancelled is None and time.monotonic() < deadline and proc.poll() is None:
        lines = (cell / "train_log.jsonl").read_text().splitlines() if (cell / "train_log.jsonl").exists() else []
        if len(lines) >= 4:  # training is under way: stop it the way a user or the scheduler would
            running = [i for i, j in cluster.jobs().items() if j["JobState"] == "RUNNING"]
            assert len(running) == 1, cluster.jobs()
            cancelled, cancelled_at = running[0], time.monotonic()
            cluster.scancel(cancelled)
        time.sleep(0.2)
    assert cancelled is not None, "training never got under way:\n" + "".join(output)
    resubmitted_after = None
    while proc.poll() is None and resubmitted_after is None:
        if [i for i in submitted_ids("".join(output)) if int(i) > int(cancelled)]:
            resubmitted_after = time.monotonic() - cancelled_at
        time.sleep(0.5)
    proc.wait(timeout=600)
    reader.join(timeout=10)
    out = "".join(output)
    assert proc.returncode == 0, explain(out, work, cluster)

    jobs = cluster.jobs()
    assert jobs[cancelled]["JobState"] == "CANCELLED", jobs[cancelled]
    if cluster.accounting:  # what the plugin's default status command would have read, and never acted on
        assert cluster.sacct_state(cancelled).startswith("CANCELLED by "), cluster.sacct_state(cancelled)
    later = [i for i in submitted_ids(out) if int(i) > int(cancelled) and jobs[i]["Comment"].startswith("rule_cell")]
    assert later and jobs[later[0]]["JobState"] == "COMPLETED", jobs  # Snakemake's retry, no user action

    log_text = train_log.read_text(errors="replace")
    resumed = set(re.findall(r"resumed from step (\d+)", log_text))
    assert len(resumed) == 1, log_text[:2000]
    assert 0 < int(resumed.pop()) < steps  # only the signal handler writes a checkpoint before the last step
    records = [json.loads(line) for line in (cell / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(50, steps + 1, 50))  # the log carries on seamlessly
    assert (work / "results" / "resume" / "metrics.parquet").exists()
    mode = "accounting" if cluster.accounting else "no accounting"
    line = re.search(r"resumed from step \d+", log_text).group(0)
    print(f"\n[{mode}] scancel of job {cancelled}: resubmitted after {resubmitted_after:.0f} s; log: {line}")

    again = slurm_run(cluster, work)  # a rerun redoes nothing
    assert again.returncode == 0, again.stdout[-3000:]
    assert "Nothing to be done" in again.stdout
    assert not submitted_ids(again.stdout)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_rule_asking_more_cpus_than_the_node_has_is_refused(cluster, tmp_path):
    work = make_workdir(tmp_path / "big", tiny_study("big"))
    out = slurm_run(cluster, work, "-n", "--set-threads", f"train={NODE_CPUS + 1}")
    assert out.returncode != 0
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("scorebench: error:")]
    assert f"rule train asks {NODE_CPUS + 1} CPUs but the nodes of partition {cluster.partition} have {NODE_CPUS}" in line
    assert f"--set-threads train={NODE_CPUS}" in line
