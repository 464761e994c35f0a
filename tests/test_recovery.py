"""Failures a user can act on, through real local `snakemake` runs with the workflow profile
(profiles/default, which Snakemake applies by itself).

- A failed job's one-line error (`scorebench VERB: error: ...`, in its log file) is printed at the
  end of the run, once per failed job however often it was retried.
- After a hard kill of a run (SIGKILL of Snakemake and its jobs) the same command finishes it,
  once the stale lock is removed as the README says (`--unlock`): training resumes from its
  checkpoint. Without the workflow profile Snakemake refuses to touch the incomplete outputs.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
pytestmark = pytest.mark.slow


def snakemake(work: Path, *args, **kw):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(work), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


def write_study(work: Path, cfg: dict) -> Path:
    (work / "config").mkdir(parents=True)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(cfg))
    return work


def test_each_failed_jobs_error_line_ends_the_output(tmp_path):
    empty = tmp_path / "no_data"
    empty.mkdir()
    work = write_study(tmp_path / "work", {
        "study": "fails", "data_dir": str(empty), "datasets": {"mnist": {"kind": "mnist"}},
        "schedules": {"one": {"kind": "single", "sigma": 0.5}}, "objectives": {"dsm": {"kind": "dsm"}},
        "training": {"steps": 5, "device": "cpu"},
    })  # fmt: skip
    out = snakemake(work, "--cores", "2")
    assert out.returncode != 0
    console = out.stdout + out.stderr
    assert console.count("Error in rule train:") == 3  # the workflow profile's retries: 2
    tail = console[console.rindex("Failed jobs (log: last error line):") :].splitlines()[1:]
    listed = [line.strip() for line in tail if line.startswith("  ")]
    assert len(listed) == 2, tail  # train and reference_stats, each once
    for rule, verb in (("train", "train"), ("reference_stats", "reference-stats")):
        (line,) = [ln for ln in listed if f"/logs/{rule}/" in ln]
        assert f": scorebench {verb}: error: dataset 'mnist': files missing or corrupt in {empty}" in line, line


def test_the_same_command_finishes_a_hard_killed_run(tmp_path):
    cfg = yaml.safe_load((ROOT / ".test" / "config" / "config.yaml").read_text())
    cfg["study"] = "killed"
    cfg["datasets"] = {"mix": cfg["datasets"]["mix"]}
    cfg["schedules"] = {"geom": cfg["schedules"]["geom"]}
    cfg["objectives"] = {"dsm": cfg["objectives"]["dsm"]}
    cfg["exclude"] = []
    cfg["training"].update(steps=3000, checkpoint_every=200, log_every=100, pack=False)
    work = write_study(tmp_path / "work", cfg)
    cell = work / "results" / "killed" / "mix" / "geom" / "dsm" / "seed0"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(work), "--cores", "2"]
    run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (cell / "checkpoint.pt").exists():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and its jobs, as a lost session or a node reboot would
    run.wait()

    again = snakemake(work, "--cores", "2")
    assert again.returncode != 0 and "--unlock" in again.stdout + again.stderr  # the stale lock, as the README says
    assert snakemake(work, "--unlock").returncode == 0
    bare = snakemake(work, "--cores", "2", "-n", "--workflow-profile", "none")
    assert bare.returncode != 0 and "incomplete" in (bare.stdout + bare.stderr).lower()  # what the profile fixes
    done = snakemake(work, "--cores", "2")  # the same command as the first
    assert done.returncode == 0, done.stderr[-3000:]
    train_log = work / "results" / "killed" / "logs" / "train" / "mix" / "geom" / "dsm" / "seed0.log"
    assert "resumed from step" in train_log.read_text()
    assert (work / "results" / "killed" / "metrics.parquet").exists()
    assert not (cell / "checkpoint.pt").exists()
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(work, "--cores", "2", "-n"))
