"""The command line: each verb runs a real job, and bad input ends in one line on stderr, exit 2."""

import json
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from scorebench.specs import spec_json
from scorebench.study import Study, validate_config

CONFIG = {
    "study": "cli",
    "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 500, "n_test": 200}}},
    "schedules": {"geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3}},
    "objectives": {"dsm": {"kind": "dsm"}},
    "training": {"steps": 20, "batch_size": 32, "checkpoint_every": 10, "log_every": 5},
    "sampling": {"n_samples": 50, "samplers": {"annealed": {"kind": "annealed_langevin", "n_steps": 3}}},
    "evaluation": {"score_error": {"n_points": 50, "n_bins": 2, "grid_size": 8}},
}


def run(*args):
    return subprocess.run([sys.executable, "-m", "scorebench", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def specs():
    study = Study(validate_config(json.loads(json.dumps(CONFIG))))
    cell = study.cells[0]
    return study.train_spec(cell), study.sample_spec(cell, "annealed"), study.eval_spec(cell)


def test_train_sample_score_error_chain(tmp_path, specs):
    train, sample, score = specs
    out = tmp_path / "cell"
    r = run("train", "--spec", spec_json(train), "--out-dir", str(out))
    assert r.returncode == 0, r.stderr
    assert "train finished in" in r.stderr.splitlines()[-1]  # the last log line reaches stderr
    r = run("sample", "--spec", spec_json(sample), "--model", str(out / "model.pt"), "--out", str(out / "s.npz"))
    assert r.returncode == 0, r.stderr
    r = run("score-error", "--spec", spec_json(score), "--model", str(out / "model.pt"), "--out", str(out / "e.parquet"))
    assert r.returncode == 0, r.stderr
    import numpy as np
    import pandas as pd

    assert np.load(out / "s.npz")["samples"].shape == (50, 2)
    table = pd.read_parquet(out / "e.parquet")
    assert set(table[table.sigma_set == "own"]["sigma"].round(6)) == {5.0, round(5 * 0.1**0.5, 6), 0.5}
    assert set(table[table.sigma_set == "common"]["sigma"]) == {0.0, 0.1, 1.0}  # the schema default common_sigmas


def _one_line_error(r, needle):
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_corrupt_checkpoint_is_named_and_kept(tmp_path, specs):
    train, sample, _ = specs
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run("sample", "--spec", spec_json(sample), "--model", str(bad), "--out", str(tmp_path / "s.npz"))
    _one_line_error(r, str(bad))
    assert bad.read_bytes() == b"not a checkpoint"
    assert not (tmp_path / "s.npz").exists()


def test_bad_spec_and_config_errors(tmp_path, specs):
    train = dict(specs[0], dataset={"name": "x", "kind": "imagenet", "options": {}})
    _one_line_error(run("train", "--spec", spec_json(train), "--out-dir", str(tmp_path)), "imagenet")
    _one_line_error(run("train", "--spec", "{not json", "--out-dir", str(tmp_path)), "--spec")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("study: x\ndatasets: {d: {kind: moons}}\nschedules: {s: {kind: geometric, sigma_max: 1, sigma_min: 2, levels: 3}}\nobjectives: {o: {kind: dsm}}\n")
    _one_line_error(run("check", "--config", str(cfg)), "sigma_max")


def test_changed_spec_discards_the_old_checkpoint_but_a_kill_resumes(tmp_path, specs):
    """A checkpoint resumes only under the spec that made it (a preset edit retrains from step 0).
    Checkpoints are what stopped jobs leave (a finished job removes its own): each run here is
    stopped by SIGTERM once its first periodic checkpoint is written."""
    train = dict(specs[0], training={**specs[0]["training"], "steps": 10**7})
    out = tmp_path / "cell"
    assert "checkpointed at step" in stopped(train, out)
    # an edited preset: the old checkpoint belongs to another experiment and is discarded
    edited = dict(train, schedule={**train["schedule"], "sigma_min": 0.4})
    err = stopped(edited, out)
    assert "discarding" in err and "resumed" not in err, err
    step = int(re.search(r"checkpointed at step (\d+)", err).group(1))
    # an unchanged spec resumes from the checkpoint it left
    err = stopped(edited, out)
    assert f"resumed from step {step}" in err and "discarding" not in err, err


def stopped(spec, out) -> str:
    """Run `scorebench train` until it writes a new checkpoint, then SIGTERM it (as scancel does); its stderr."""
    ckpt = out / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    proc = subprocess.Popen([sys.executable, "-m", "scorebench", "train", "--spec", spec_json(spec), "--out-dir", str(out)],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not ckpt.exists() or ckpt.stat().st_mtime_ns == before:
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 2
    reader.join(timeout=30)
    return "".join(lines)
