"""One writer per training folder (scorebench.lock), through the real command line.

- A second `scorebench train` for a cell whose training is running stops at once (exit 2) with one
  line naming the running job (its SLURM job id when it has one) and what to do; it writes nothing.
- The same for `train-pack` against a pack whose lock is held.
- A SIGKILLed job leaves no stale lock: the next job takes the folder and resumes its checkpoint.
- A finished job leaves only its outputs (no checkpoint, stamp or lock), and restores a log that
  was deleted while it ran from its final checkpoint.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.slow

from scorebench.lock import LOCK_NAME, exclusive
from scorebench.specs import spec_json
from scorebench.study import Study, validate_config

CONFIG = {
    "study": "lock",
    "datasets": {"mix": {"kind": "gmm_2mode", "options": {"n_train": 500, "n_test": 200}}},
    "schedules": {
        "geom": {"kind": "geometric", "sigma_max": 5, "sigma_min": 0.5, "levels": 3},
        "one": {"kind": "single", "sigma": 0.5},
    },
    "objectives": {"dsm": {"kind": "dsm"}},
    "training": {"steps": 20, "batch_size": 32, "checkpoint_every": 10, "log_every": 5, "device": "cpu"},
}
LONG = {"steps": 10**7, "checkpoint_every": 50, "log_every": 50}  # runs until stopped


def study(**training):
    config = json.loads(json.dumps(CONFIG))
    config["training"].update(training)
    return Study(validate_config(config))


def scorebench(*args, **kw):
    return subprocess.run([sys.executable, "-m", "scorebench", *args], capture_output=True, text=True, timeout=300, **kw)


def start_training(spec, out, env=None):
    """`scorebench train` in the background, returned once its training loop is under way; its
    stderr lines gather in `proc.lines`."""
    ckpt = out / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    proc = subprocess.Popen([sys.executable, "-m", "scorebench", "train", "--spec", spec_json(spec), "--out-dir", str(out)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})  # fmt: skip
    proc.lines = []
    proc.reader = threading.Thread(target=lambda: proc.lines.extend(proc.stderr), daemon=True)
    proc.reader.start()
    deadline = time.monotonic() + 120
    while not ckpt.exists() or ckpt.stat().st_mtime_ns == before:  # a new periodic checkpoint: the loop runs
        assert proc.poll() is None and time.monotonic() < deadline, "".join(proc.lines)
        time.sleep(0.1)
    return proc


def stop(proc, sig=signal.SIGTERM):
    """Signal the job, wait for it, return its stderr."""
    proc.send_signal(sig)
    proc.wait(timeout=120)
    proc.reader.join(timeout=30)
    return "".join(proc.lines)


def test_a_duplicate_training_job_is_refused_at_once(tmp_path):
    s = study(**LONG)
    spec = s.train_spec(s.cells[0])
    out = tmp_path / "cell"
    first = start_training(spec, out, env={"SLURM_JOB_ID": "4242"})
    try:
        stamp = (out / "checkpoint.spec").stat().st_mtime_ns
        t0 = time.monotonic()
        second = scorebench("train", "--spec", spec_json(spec), "--out-dir", str(out))
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2, second.stderr
        assert len(lines) == 1, second.stderr  # the refusal is the only line: nothing was loaded or logged
        assert f"{out} is being written by another job, SLURM job 4242 (pid {first.pid} on " in lines[0]
        assert "scancel 4242" in lines[0]
        assert time.monotonic() - t0 < 60
        assert (out / "checkpoint.spec").stat().st_mtime_ns == stamp  # the duplicate touched nothing
        assert first.poll() is None  # and the first goes on
    finally:
        err = stop(first)
    assert "checkpointed at step" in err
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps  # one writer: strictly increasing
    assert not (out / LOCK_NAME).exists()  # released on the way out


def test_a_duplicate_pack_job_is_refused(tmp_path):
    s = study(pack=True)
    (name,) = s.packs
    resume = tmp_path / "resume"
    with exclusive(resume, what="test"):  # a running pack job's lock (this process holds it)
        r = scorebench("train-pack", "--spec", spec_json(s.pack_spec(name)), "--out-dir", str(tmp_path / "members"),
                       "--resume-dir", str(resume))  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"train-pack {name}: {resume} is being written by another job, pid {os.getpid()} on " in lines[0]
    assert f"kill {os.getpid()}" in lines[0]
    assert not (tmp_path / "members").exists() and not (resume / "checkpoint.pt").exists()


def test_a_killed_job_leaves_no_stale_lock(tmp_path):
    s = study(**LONG)
    spec = s.train_spec(s.cells[0])
    out = tmp_path / "cell"
    stop(start_training(spec, out), signal.SIGKILL)  # no handler runs: only the kernel releases the lock
    assert (out / LOCK_NAME).exists()
    again = start_training(spec, out)
    err = stop(again)
    assert "resumed from step" in err and "being written" not in err, err


def test_a_finished_job_leaves_only_its_outputs(tmp_path):
    s = study()
    cell = tmp_path / "cell"
    r = scorebench("train", "--spec", spec_json(s.train_spec(s.cells[0])), "--out-dir", str(cell))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in cell.iterdir()) == ["model.pt", "train_log.jsonl"]
    packed = study(pack=True)
    (name,) = packed.packs
    r = scorebench("train-pack", "--spec", spec_json(packed.pack_spec(name)), "--out-dir", str(tmp_path / "members"),
                   "--resume-dir", str(tmp_path / "resume"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "resume").exists()
    assert sorted(p.name for p in (tmp_path / "members").rglob("*") if p.is_file()) == ["model.pt", "model.pt",
                                                                                          "train_log.jsonl", "train_log.jsonl"]  # fmt: skip


def test_a_log_deleted_while_training_is_restored(tmp_path, monkeypatch):
    """A rerun that submits a running cell again deletes its outputs before its job is refused; the
    running job then writes its log from the final checkpoint's history."""
    import scorebench.train
    from scorebench.jobs.train import train_job

    real = scorebench.train.train

    def train_then_lose_log(model, loss, data, schedule, settings, out_dir):
        result = real(model, loss, data, schedule, settings, out_dir)
        (out_dir / "train_log.jsonl").unlink()
        return result

    monkeypatch.setattr(scorebench.train, "train", train_then_lose_log)
    s = study()
    train_job(s.train_spec(s.cells[0]), tmp_path)
    steps = [json.loads(line)["step"] for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]


@pytest.mark.parametrize("holder", [{}, {"host": "n1", "pid": 7, "since": "t", "slurm_job": "9"}])
def test_the_message_says_what_is_known(tmp_path, holder):
    from scorebench.lock import describe

    text = describe(holder)
    assert ("SLURM job 9 (pid 7 on n1" in text) if holder else ("not recorded" in text)
